"""A learner and its actors as processes of one command (`dojo train`, or `dojo learner` with a Ray fleet):
start the learner, wait until it listens, then start the actors, each as a local process or as a Ray actor;
watch them; report a process that dies with the last line of its log; stop them all when done, also when
the command itself is killed.

Ray actors are restarted when their process dies and resume from their journals, so a fleet loses no step.
A local Ray instance keeps its auth token in the run folder (RUN/ray_auth_token): Ray 2.60 enables token
authentication and, left alone, writes a token into the home folder. With RAY_ADDRESS set, the fleet joins
that cluster with the cluster's token (RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH, as Ray documents).
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from dojo import runs
from dojo.errors import DojoError

CLI = [sys.executable, "-m", "dojo.launch.cli"]
BACKENDS = ("local", "ray")


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies (Linux), so a killed `dojo train` (or Ray
    worker) leaves no learner or actor behind; each then checkpoints or drains and exits."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Child:
    """A dojo command as a local process, its output in a log file."""

    def __init__(self, name: str, args: list[str], log_path: Path, restarts: int = 0, **popen) -> None:
        self.name, self.log_path, self.restarts_left = name, log_path, restarts
        self._start = lambda log: subprocess.Popen(CLI + args, stdout=log, stderr=subprocess.STDOUT,
                                                   preexec_fn=_die_with_parent, **popen)
        with open(log_path, "ab") as log:
            self.proc = self._start(log)

    def restart_if_killed(self) -> bool:
        """A process killed by a signal other than SIGTERM (SIGKILL, a crash) is started again while restarts
        are left; it resumes from its journal or checkpoint. True when it was."""
        code = self.proc.poll()
        if code is None or code >= 0 or code == -signal.SIGTERM or self.restarts_left <= 0:
            return False
        self.restarts_left -= 1
        with open(self.log_path, "ab") as log:
            log.write(f"dojo fleet: the {self.name} was killed by signal {-code}; starting it again\n".encode())
            log.flush()
            self.proc = self._start(log)
        return True

    def failure(self) -> DojoError | None:
        """The error to report if this process has exited badly: how, and its log's last line."""
        return exit_error(self.name, self.proc.poll(), self.log_path)

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def exit_error(name: str, code: int | None, log_path: Path) -> DojoError | None:
    if code in (None, 0):
        return None
    if code < 0:
        return DojoError(f"the {name} was killed by {signal.Signals(-code).name}; see {log_path}")
    lines = log_path.read_text(errors="replace").strip().splitlines() if log_path.exists() else []
    return DojoError(f"the {name} exited with code {code}: {lines[-1] if lines else '(empty log)'}; see {log_path}")


# --- Ray -------------------------------------------------------------------------------------------------
def init_ray(run: Path, num_cpus: int | None = None):
    """Ray, started locally (its token in the run folder) or joined at RAY_ADDRESS. Clear errors, no hang."""
    if "ray" not in sys.modules and not os.environ.get("RAY_ADDRESS"):
        token = Path(run) / "ray_auth_token"
        if not token.exists():
            old = os.umask(0o077)
            try:
                token.write_text(secrets.token_hex(32))
            finally:
                os.umask(old)
        # Read when ray is imported: set before, so the local instance and its workers share this token.
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        os.environ.setdefault("RAY_AUTH_TOKEN_PATH", str(token.resolve()))
    try:
        import ray
    except ImportError:
        raise DojoError("actors.backend=ray needs Ray: pip install 'dojo-robot[ray]'") from None
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        try:
            ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False,
                     log_to_driver=False, logging_level="WARNING")
        except Exception as err:  # AuthenticationError, ConnectionError, ...: one line
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            raise DojoError(f"could not start or join {where}: {type(err).__name__}: {str(err).splitlines()[0]} "
                            "(with RAY_ADDRESS, give the cluster's token as RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH)") \
                from None
    return ray


def check_resources(ray, resources: dict) -> None:
    """Refuse work that needs a custom resource (a robot) that no node of the Ray cluster offers: Ray would
    wait for such a node forever."""
    offered = ray.cluster_resources()
    for name, amount in resources.items():
        if offered.get(name, 0) < amount:
            custom = sorted(k for k in offered if k not in ("CPU", "GPU", "memory", "object_store_memory")
                            and not k.startswith("node:"))
            raise DojoError(f"actors.resources asks for {amount} of {name!r}, but no Ray node offers it (custom "
                            f"resources: {custom or 'none'}); start that robot's node with "
                            f"ray start --resources='{{\"{name}\": 1}}'")


def _ray_actor_class(ray):
    @ray.remote(max_restarts=-1, max_task_retries=-1)
    class ActorProcess:
        """A dojo actor process on whichever Ray node has the resources it asks for. A process that is killed is
        started again (up to `restarts` times); if this Ray worker itself dies, Ray restarts it and retries
        `run`. Either way the actor resumes from its journal."""

        def run(self, args: list[str], log_path: str, cwd: str, restarts: int = 10) -> int:
            for _ in range(restarts + 1):
                with open(log_path, "ab") as log:
                    code = subprocess.call(CLI + args, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                           preexec_fn=_die_with_parent)
                if code >= 0 or code == -signal.SIGTERM:  # finished, failed with a reason, or stopped
                    return code
                with open(log_path, "a") as log:  # killed: start it again; it resumes from its journal
                    log.write(f"dojo fleet: the actor process was killed by signal {-code}; starting it again\n")
            return code

        def pid(self) -> int:
            return os.getpid()
    return ActorProcess


class RayActor:
    """A dojo actor run by a Ray actor (see ActorProcess)."""

    def __init__(self, ray, cls, name: str, args: list[str], log_path: Path, resources: dict,
                 restarts: int = 10) -> None:
        self.ray, self.name, self.log_path = ray, name, log_path
        self.handle = cls.options(name=None, resources=dict(resources), num_cpus=1).remote()
        self.future = self.handle.run.remote(args, str(log_path), os.getcwd(), restarts)

    def failure(self) -> DojoError | None:
        ready, _ = self.ray.wait([self.future], timeout=0)
        if not ready:
            return None
        try:
            return exit_error(self.name, self.ray.get(self.future), self.log_path)
        except Exception as err:
            return DojoError(f"the {self.name} failed under Ray: {str(err).splitlines()[0]}; see {self.log_path}")

    def done(self) -> bool:
        return bool(self.ray.wait([self.future], timeout=0)[0])

    def stop(self, timeout_s: float = 30.0) -> None:
        self.ray.kill(self.handle, no_restart=True)


def start_actors(run: Path, commands: list[list[str]], actor_ids: list[str], backend: str, resources: dict,
                 restarts: int = 0) -> list:
    """One dojo actor per command: a local process (started again `restarts` times if killed), or a Ray actor
    needing one CPU and `resources` (a robot's custom resource pins its actor to that robot's node; Ray restarts
    it). Logs in RUN/<actor>.log."""
    if backend != "ray":
        return [Child(f"actor {a}", command, run / f"{a}.log", restarts) for a, command in zip(actor_ids, commands)]
    ray = init_ray(run)
    check_resources(ray, resources)
    cls = _ray_actor_class(ray)
    return [RayActor(ray, cls, f"actor {a}", command, run / f"{a}.log", resources)
            for a, command in zip(actor_ids, commands)]


def run_commands(folder: Path, commands: list[list[str]], names: list[str], backend: str,
                 resources: dict | None = None) -> None:
    """Run dojo commands to completion side by side (local processes, or ActorProcess Ray actors needing one
    CPU and `resources` each), their logs in FOLDER/<name>.log; a local Ray keeps its token in `folder`. Raises
    DojoError naming the first that failed."""
    logs = [folder / f"{name}.log" for name in names]
    if backend != "ray":
        children = [Child(name, command, log) for name, command, log in zip(names, commands, logs)]
        try:
            for child in children:
                child.proc.wait()
        finally:
            for child in children:
                child.stop()
        codes = [child.proc.returncode for child in children]
    else:
        started_here = "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
        ray = init_ray(folder)
        try:
            check_resources(ray, resources or {})
            cls = _ray_actor_class(ray)  # restarts=0: a command that is killed is not run twice
            started = [RayActor(ray, cls, name, c, log, resources or {}, restarts=0)
                       for name, c, log in zip(names, commands, logs)]
            codes = ray.get([r.future for r in started])
        finally:
            if started_here:  # a local Ray this call started goes with it
                ray.shutdown()
    for name, code, log in zip(names, codes, logs):
        failed = exit_error(name, code, log)
        if failed:
            raise failed


# --- the fleet -------------------------------------------------------------------------------------------
def run_fleet(run: Path, learner_args: list[str], actor_args: Callable[[dict, str], list[str]], actor_ids: list[str],
              lock: runs.RunLock, backend: str = "local", resources: dict | None = None,
              on_progress: Callable[[dict], None] | None = None, start_timeout_s: float = 300.0,
              restarts: int = 0) -> None:
    """Run the learner (which takes over `lock`) and, once it listens, one actor per id
    (`actor_args(link_info, actor_id)`), until the learner finishes. Raises DojoError naming what failed.
    `restarts`: a local learner or actor killed by a signal is started again this many times (each), and
    resumes; otherwise that ends the fleet with the reason."""
    if backend not in BACKENDS:
        raise ValueError(f"actors.backend must be one of {list(BACKENDS)}, got {backend!r}")
    learner = Child("learner", learner_args, run / "learner.log", restarts, pass_fds=(lock.fd,),
                    env=lock.child_env())
    actors: list = []
    try:
        wait_until_listening(run, learner, start_timeout_s)
        link = runs.read_link_info(run)
        actors = start_actors(run, [actor_args(link, a) for a in actor_ids], actor_ids, backend, resources or {},
                              restarts)
        shown = None
        while learner.proc.poll() is None or learner.restart_if_killed():
            for actor in actors:
                failed = None if isinstance(actor, Child) and actor.restart_if_killed() else actor.failure()
                if failed:
                    raise failed
            rows = runs.read_progress(run) if on_progress is not None else []
            if rows and rows[-1] != shown:
                shown = rows[-1]
                on_progress(shown)
            time.sleep(1.0)
        failed = learner.failure()
        if failed:
            raise failed
        deadline = time.monotonic() + 60  # they heard "done" and drain their journals
        while not all(a.done() if isinstance(a, RayActor) else a.proc.poll() is not None for a in actors):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for actor in actors:
            failed = actor.failure()
            if failed:
                raise failed
    finally:
        for child in (*actors, learner):
            child.stop()


def wait_until_listening(run: Path, learner: Child, timeout_s: float) -> None:
    """Until this learner's pid is in RUN/link.json (a crashed run's file names the dead one). The learner listens
    after its offline updates, which take as long as they take: `timeout_s` counts from its last line of output
    (the progress rows it writes while it trains offline). A learner killed meanwhile is started again while it
    has restarts left (`Child.restart_if_killed`), and resumes."""
    deadline, logged = time.monotonic() + timeout_s, -1
    while runs.read_link_info(run).get("pid") != learner.proc.pid:
        if learner.proc.poll() is not None and not learner.restart_if_killed():
            raise learner.failure() or DojoError(f"the learner exited before it listened; see {learner.log_path}")
        size = learner.log_path.stat().st_size if learner.log_path.exists() else 0
        if size != logged:
            deadline, logged = time.monotonic() + timeout_s, size
        if time.monotonic() > deadline:
            raise DojoError(f"the learner neither listened nor wrote a line for {timeout_s:.0f} s; see "
                            f"{learner.log_path}")
        time.sleep(0.2)
