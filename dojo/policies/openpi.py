"""The openpi policy-server protocol (websocket + msgpack): a client, a server any policy can sit behind, and the
policies dojo serves with it (a dojo snapshot; dojo's generalist; a LeRobot checkpoint).

The wire format is openpi's (packages/openpi-client: websocket_client_policy.py, msgpack_numpy.py;
src/openpi/serving/websocket_policy_server.py), spoken here with `websockets` + `msgpack` because the PyPI
`openpi-client` pins numpy < 2. On connect the server sends its metadata (one msgpack message); then each binary
message from the client is one observation dict and the server answers with one dict holding "actions" (H, d)
and "server_timing" ({"infer_ms", "prev_total_ms"}). A server that fails sends its traceback as a text message
and closes with code 1011. Arrays travel as {b"__ndarray__": True, b"data", b"dtype", b"shape"} maps, numpy
scalars as {b"__npgeneric__": True, b"data", b"dtype"}: never pickle.

Only numpy, msgpack and websockets are imported at the top, so that a LeRobot environment (Python >= 3.12, its own
torch; see DESIGN.md) runs the LeRobot server with dojo on its path and nothing else of dojo's:

    PYTHONPATH=DOJO_ROOT LEROBOT_PYTHON -m dojo.policies.openpi --lerobot CKPT [--host H] [--port P] [--device D]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http
import json
import sys
import threading
import time
import traceback
from typing import Any, Callable

import msgpack
import numpy as np
import websockets
import websockets.sync.client
import websockets.sync.server

from dojo.errors import DojoError

DEFAULT_PORT = 8000  # openpi's serve_policy default


# --- wire format: openpi_client.msgpack_numpy, byte for byte ---


def pack_array(obj):
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in ("V", "O", "c"):
        raise ValueError(f"cannot send a numpy array of dtype {obj.dtype} (object, void or complex); expected "
                         "numbers, booleans or strings")
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    return obj


def unpack_array(obj):
    if b"__ndarray__" in obj:
        return np.ndarray(buffer=obj[b"data"], dtype=np.dtype(obj[b"dtype"]), shape=obj[b"shape"])
    if b"__npgeneric__" in obj:
        return np.dtype(obj[b"dtype"]).type(obj[b"data"])
    return obj


packb = functools.partial(msgpack.packb, default=pack_array)
# Arrays come back read-only: they are views of the received bytes (as openpi's are).
unpackb = functools.partial(msgpack.unpackb, object_hook=unpack_array)


class PolicyServerError(DojoError):
    """A policy server that cannot be reached, stops answering, drops the connection or fails."""


def _uri(url: str) -> str:
    """"host:port" or "ws://host:port[/path]" -> a websocket URI."""
    url = str(url).strip()
    if not url:
        raise ValueError("policy server address must be HOST:PORT or ws://HOST:PORT, got ''")
    return url if url.startswith(("ws://", "wss://")) else f"ws://{url}"


class PolicyClient:
    """Talks to an openpi-protocol policy server: `metadata` from the connect, `infer(obs) -> {"actions": ...}`.

    `timeout_s` bounds the connect and each answer; a server that is not there, stops answering or drops the
    connection raises PolicyServerError naming its address, and a timed-out client is closed (a late answer
    would otherwise be taken for the next one). `wait_s`: keep retrying a refused connection this long (a
    server still loading its model), as openpi's client does forever.
    """

    def __init__(self, url: str, timeout_s: float = 30.0, wait_s: float = 0.0, api_key: str | None = None) -> None:
        if not (np.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        if not (np.isfinite(wait_s) and wait_s >= 0):
            raise ValueError(f"wait_s must be >= 0 seconds, got {wait_s!r}")
        self.url, self.timeout_s = _uri(url), float(timeout_s)
        headers = {"Authorization": f"Api-Key {api_key}"} if api_key else None
        self._exit_stack = contextlib.ExitStack()
        deadline = time.monotonic() + wait_s
        while True:
            try:
                # proxy=None: a policy server is on the robot's own network; never route it through $HTTP_PROXY
                connection = websockets.sync.client.connect(
                    self.url, compression=None, max_size=None, additional_headers=headers, proxy=None,
                    open_timeout=self.timeout_s, close_timeout=1.0)
                # Held open as a context manager (websockets 17 deprecates holding connect()'s result bare).
                self._ws = self._exit_stack.enter_context(connection)
                break
            except ConnectionRefusedError as err:
                if time.monotonic() >= deadline:
                    raise self._error(f"refused the connection ({err.strerror or err}); is the server running?")
                time.sleep(min(0.2, max(deadline - time.monotonic(), 0.0)))
            except (OSError, TimeoutError, websockets.InvalidURI, websockets.InvalidHandshake) as err:
                raise self._error(f"could not be reached: {type(err).__name__}: {err}") from None
        try:
            self.metadata: dict = self._receive("sending its metadata")
        except PolicyServerError:
            self.close()
            raise

    def _error(self, what: str) -> PolicyServerError:
        return PolicyServerError(f"policy server at {self.url} {what}")

    def _receive(self, doing: str):
        try:
            message = self._ws.recv(timeout=self.timeout_s)
        except TimeoutError:
            self.close()
            raise self._error(f"did not answer within {self.timeout_s:g} s while {doing}; the connection is "
                              "closed") from None
        except websockets.ConnectionClosed as err:
            raise self._closed(err) from None
        if isinstance(message, str):  # openpi servers send their traceback as text, then close
            lines = [line for line in message.strip().splitlines() if line.strip()]
            raise self._error(f"failed while {doing}: {lines[-1] if lines else 'no message'}")
        try:
            return unpackb(message)
        except Exception as err:  # msgpack raises several types for damaged bytes
            raise self._error(f"sent a message that is not openpi msgpack while {doing}: {err}") from None

    def _closed(self, err: websockets.ConnectionClosed) -> PolicyServerError:
        close = err.rcvd or err.sent
        why = f" (code {close.code}{': ' + close.reason if close.reason else ''})" if close else ""
        return self._error(f"closed the connection{why}")

    def infer(self, obs: dict) -> dict:
        """Send one observation dict (numpy arrays, numbers, strings); the server's answer, with "actions"."""
        try:
            self._ws.send(packb(obs))
        except websockets.ConnectionClosed as err:
            raise self._closed(err) from None
        result = self._receive("inferring")
        actions = result.get("actions") if isinstance(result, dict) else None
        if not isinstance(actions, np.ndarray) or actions.ndim < 2:
            got = sorted(result) if isinstance(result, dict) else type(result).__name__
            raise self._error(f"answered without 'actions' as an (H, action_dim) array; got {got}")
        return result

    def close(self) -> None:
        self._exit_stack.close()

    def __enter__(self) -> "PolicyClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- the server ---


def _health_check(connection, request):
    """GET /healthz answers OK without opening a websocket (openpi's server does the same)."""
    if request.path == "/healthz":
        return connection.respond(http.HTTPStatus.OK, "OK\n")
    return None


class PolicyServer:
    """An openpi-protocol server around `infer_fn(obs) -> {"actions": (H, d), ...}`, one thread per client.

    Calls to `infer_fn` are serialised (a policy on one accelerator runs one request at a time). `on_connect`
    (optional) runs when a client connects, before the metadata goes out: a policy that keeps an observation
    history resets it there. Binds to loopback unless told otherwise; port 0 picks a free port (see `url`).
    """

    def __init__(self, infer_fn: Callable[[dict], dict], metadata: dict | None = None, host: str = "127.0.0.1",
                 port: int = DEFAULT_PORT, on_connect: Callable[[], None] | None = None, log=sys.stderr) -> None:
        if not (isinstance(port, int) and 0 <= port < 65536):
            raise ValueError(f"port must be an integer in [0, 65535], got {port!r}")
        self.infer_fn, self.on_connect, self.log = infer_fn, on_connect, log
        self.metadata = dict(metadata or {})
        packb(self.metadata)  # refuse metadata that cannot be sent before any client connects
        self._lock = threading.Lock()
        self.requests = 0
        try:
            self._server = websockets.sync.server.serve(self._handle, host, port, compression=None, max_size=None,
                                                        process_request=_health_check)
        except OSError as err:
            raise ValueError(f"cannot serve a policy on {host}:{port}: {err.strerror or err}") from None
        bound_host, bound_port = self._server.socket.getsockname()[:2]
        self.url = f"ws://{bound_host}:{bound_port}"

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def shutdown(self) -> None:
        self._server.shutdown()

    def __enter__(self) -> "PolicyServer":
        threading.Thread(target=self.serve_forever, name="policy-server", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def _handle(self, ws) -> None:
        if self.on_connect is not None:
            with self._lock:
                self.on_connect()
        ws.send(packb(self.metadata))
        prev_total_s = None
        while True:
            try:
                message = ws.recv()
            except websockets.ConnectionClosed:
                return
            start = time.monotonic()
            try:
                if isinstance(message, str):
                    raise ValueError("expected a binary msgpack observation, got a text message")
                obs = unpackb(message)
                if not isinstance(obs, dict):
                    raise ValueError(f"an observation must be a dict, got {type(obs).__name__}")
                with self._lock:
                    infer_start = time.monotonic()
                    result = self.infer_fn(obs)
                    infer_s = time.monotonic() - infer_start
                    self.requests += 1
                actions = result.get("actions") if isinstance(result, dict) else None
                if not isinstance(actions, np.ndarray) or actions.ndim < 2:
                    raise ValueError(f"the policy must return a dict with 'actions' as an (H, action_dim) array, "
                                     f"got {type(result).__name__}")
                timing = {"infer_ms": infer_s * 1000}
                if prev_total_s is not None:  # this request's total includes the send, so report the last one
                    timing["prev_total_ms"] = prev_total_s * 1000
                ws.send(packb({**result, "server_timing": timing}))
                prev_total_s = time.monotonic() - start
            except websockets.ConnectionClosed:
                return
            except Exception as err:
                # As openpi's server: the traceback as text, then close with 1011; other clients are served on.
                print(f"policy server: request from {ws.remote_address} failed: {type(err).__name__}: {err}",
                      file=self.log, flush=True)
                try:
                    ws.send(traceback.format_exc())
                    ws.close(code=1011, reason="Internal server error. Traceback included in previous frame.")
                except websockets.ConnectionClosed:
                    pass
                return


def serve_policy(infer_fn: Callable[[dict], dict], metadata: dict | None = None, host: str = "127.0.0.1",
                 port: int = DEFAULT_PORT, *, on_connect: Callable[[], None] | None = None,
                 ready: Callable[[str], None] | None = None) -> None:
    """Serve `infer_fn` over the openpi protocol until interrupted (Ctrl-C raises KeyboardInterrupt here).
    `ready(url)` runs once the socket is bound (with port 0, `url` says which port)."""
    server = PolicyServer(infer_fn, metadata, host, port, on_connect=on_connect)
    if ready is not None:
        ready(server.url)
    try:
        server.serve_forever()
    finally:
        server.shutdown()


# --- the policies dojo serves ---


class SnapshotPolicy:
    """A dojo inference snapshot (RUN/policy.msgpack) behind the protocol: obs dict in, a 1-step chunk out.

    The obs holds dojo's canonical keys ("state", camera names); others (openpi's "prompt") are ignored.
    """

    def __init__(self, path: str, deterministic: bool = True, seed: int = 0) -> None:
        from dojo.policies.snapshot import Policy, load_snapshot

        snapshot = load_snapshot(path)
        self.policy, self.deterministic = Policy(snapshot, seed=seed), bool(deterministic)
        spec = snapshot.obs_spec
        self.metadata = {
            "policy": "dojo-snapshot", "snapshot": str(path), "step": snapshot.step, "kind": snapshot.kind,
            "state_dim": spec.state_dim, "cameras": {k: list(s) for k, s in spec.cameras},
            "action_dim": len(snapshot.action_scale.low), "action_horizon": 1, "deterministic": self.deterministic}

    def infer(self, obs: dict) -> dict:
        if np.ndim(obs.get("state")) != 1:
            raise ValueError(f"send one observation per request: obs['state'] must be 1-D, got shape "
                             f"{np.shape(obs.get('state'))}")
        action = self.policy(obs, deterministic=self.deterministic)
        return {"actions": np.asarray(action, np.float32)[None]}


class GeneralistPolicy:
    """dojo's own generalist (`dojo generalist train --out FILE`) behind the protocol: an observation with
    "prompt" (the instruction) in, one sampled chunk (H, d) in the env's [-1, 1]^d out. A request may ask for
    "num_samples": n (at most the metadata's "max_samples_per_call") and gets (n, H, d) from one batched pass:
    how dojo.policies.generalist.OpenpiGeneralist draws V-GPS's K candidates in one round trip.
    `encoder`: the language encoder's folder, for instructions outside the generalist's training set."""

    max_samples_per_call = 256

    def __init__(self, path: str, encoder: str | None = None, seed: int = 0) -> None:
        from dojo.policies.generalist import load_generalist

        self.generalist = load_generalist(path, encoder=encoder, seed=seed)
        g = self.generalist
        self.metadata = {
            "policy": "dojo-generalist", "generalist": str(path), "encoder_id": g.model.encoder_id,
            "instructions": list(g.instructions), "state_dim": g.obs_spec.state_dim,
            "cameras": {k: list(s) for k, s in g.obs_spec.cameras}, "action_dim": g.action_dim,
            "action_horizon": g.chunk_len, "max_samples_per_call": self.max_samples_per_call}

    def infer(self, obs: dict) -> dict:
        prompt = obs.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise ValueError("a dojo generalist needs the instruction as obs['prompt'] (a non-empty string)")
        n = obs.get("num_samples")
        if n is not None and not (isinstance(n, int) and 1 <= n <= self.max_samples_per_call):
            raise ValueError(f"num_samples must be an integer in [1, {self.max_samples_per_call}], got {n!r}")
        chunks = self.generalist.unnormalize(self.generalist.sample(obs, prompt, 1 if n is None else n))
        return {"actions": chunks[0] if n is None else chunks}


class LeRobotPolicy:
    """A LeRobot policy checkpoint (ACT, Diffusion, SmolVLA, ...: a folder written by save_pretrained, with its
    pre/post-processors) behind the protocol: obs dict in, its action chunk (H, d) out. Runs only inside a
    LeRobot environment; nothing is downloaded (HF_HUB_OFFLINE is set).

    Observation keys may be LeRobot's ("observation.state", "observation.images.<camera>", "task") or dojo's,
    mapped as `dojo replay export` maps them: "state" -> "observation.state", a uint8 (H, W, 3) "<camera>" ->
    "observation.images.<camera>" (as float (3, H, W) in [0, 1]), and openpi's "prompt" -> "task".
    """

    def __init__(self, checkpoint: str, device: str = "cpu") -> None:
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        if not os.path.isdir(checkpoint):
            raise FileNotFoundError(f"LeRobot checkpoint {checkpoint!r} is not a folder; expected one written by "
                                    "policy.save_pretrained (config.json, model.safetensors, policy_*processor.json)")
        try:
            import torch
            from lerobot.configs.policies import PreTrainedConfig
            from lerobot.policies import get_policy_class, make_pre_post_processors
        except ImportError as err:
            raise DojoError(f"LeRobot does not import in this Python ({sys.executable}: {err}); it needs its own "
                            "environment (Python >= 3.12, torch < 2.12): run this there, or give dojo serve-policy "
                            "--python LEROBOT_PYTHON") from None
        self._torch = torch
        missing = [f for f in ("config.json", "policy_preprocessor.json", "policy_postprocessor.json")
                   if not os.path.isfile(os.path.join(checkpoint, f))]
        if "config.json" in missing:
            raise DojoError(f"LeRobot checkpoint {checkpoint!r} has no config.json; expected a folder written by "
                            "policy.save_pretrained")
        if missing:  # LeRobot would raise ProcessorMigrationError, several lines long
            raise DojoError(f"LeRobot checkpoint {checkpoint!r} has no {' or '.join(missing)}: save the processors "
                            "from make_pre_post_processors with save_pretrained beside the policy (a checkpoint from "
                            "LeRobot < 0.4 needs lerobot's migrate_policy_normalization.py first)")
        config = PreTrainedConfig.from_pretrained(checkpoint)
        config.device = device
        self.policy = get_policy_class(config.type).from_pretrained(checkpoint, config=config)
        self.policy.to(device).eval()
        on_device = {"device_processor": {"device": device}}
        self.preprocess, self.postprocess = make_pre_post_processors(
            self.policy.config, pretrained_path=checkpoint, preprocessor_overrides=on_device,
            postprocessor_overrides={"device_processor": {"device": "cpu"}})
        features = self.policy.config.input_features
        self.metadata = {
            "policy": f"lerobot:{config.type}", "checkpoint": str(checkpoint), "device": device,
            "input_features": {k: list(v.shape) for k, v in features.items()},
            "action_dim": int(self.policy.config.output_features["action"].shape[0]),
            "action_horizon": int(getattr(self.policy.config, "n_action_steps", 1))}

    def reset(self) -> None:
        self.policy.reset()

    def _to_lerobot(self, obs: dict) -> dict:
        torch, batch = self._torch, {}
        for key, value in obs.items():
            if key in ("prompt", "task", "instruction"):
                batch["task"] = str(value)
                continue
            value = np.asarray(value)
            if key == "state":
                key = "observation.state"
            elif value.dtype == np.uint8 and value.ndim == 3 and value.shape[-1] == 3:
                key = key if key.startswith("observation.images.") else f"observation.images.{key}"
                value = value.transpose(2, 0, 1).astype(np.float32) / 255.0
            elif value.dtype.kind in "fiub" and not key.startswith("observation."):
                key = f"observation.{key}"
            batch[key] = torch.as_tensor(np.array(value, np.float32))
        missing = sorted(set(self.policy.config.input_features) - set(batch))
        if missing:
            raise ValueError(f"observation lacks {missing} (dojo keys map as 'state' -> observation.state, "
                             f"camera 'front' -> observation.images.front); got keys {sorted(obs)}")
        return batch

    def _predict_chunk(self, batch: dict):
        policy, queues = self.policy, getattr(self.policy, "_queues", None)
        if getattr(policy.config, "n_obs_steps", 1) > 1 and isinstance(queues, dict) and "action" in queues:
            # Diffusion, VQ-BeT, ...: predict_action_chunk wants (1, n_obs_steps, ...) inputs, which select_action
            # stacks from its history of this connection's observations (reset() runs on connect) before it
            # computes a chunk into its action queue: take that whole chunk.
            queues["action"].clear()
            first = policy.select_action(batch)
            chunk = self._torch.stack([first, *queues["action"]], dim=1)
            queues["action"].clear()
            return chunk
        # ACT predicts chunk_size steps and runs the first n_action_steps of them (the metadata's horizon)
        return policy.predict_action_chunk(batch)[:, :int(getattr(policy.config, "n_action_steps", 1))]

    def infer(self, obs: dict) -> dict:
        with self._torch.inference_mode():
            batch = self.preprocess(self._to_lerobot(obs))
            chunk = self._predict_chunk(batch)  # (1, H, d), in the policy's normalised units
            # The post-processor unnormalises per row: the H steps of the chunk go through as a batch of H.
            actions = self.postprocess(chunk[0])
        return {"actions": actions.float().cpu().numpy()}


def serve_until_stopped(policy, host: str, port: int, prog: str) -> int:
    """Serve `policy` (infer, metadata, optional reset) until Ctrl-C or SIGTERM (a supervisor, `kill`, the
    dojo command that started this server); then print one JSON line."""
    import signal

    server = PolicyServer(policy.infer, policy.metadata, host, port, on_connect=getattr(policy, "reset", None))
    print(f"{prog}: serving {policy.metadata['policy']} at {server.url} (Ctrl-C stops)", file=sys.stderr,
          flush=True)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    print(json.dumps({"url": server.url, "policy": policy.metadata["policy"], "requests": server.requests}),
          flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m dojo.policies.openpi --lerobot CKPT`: serve a LeRobot checkpoint (inside a LeRobot env)."""
    p = argparse.ArgumentParser(prog="python -m dojo.policies.openpi",
                                description="Serve a LeRobot policy checkpoint over the openpi websocket protocol.")
    p.add_argument("--lerobot", required=True, metavar="CKPT", help="folder written by policy.save_pretrained")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, mps")
    args = p.parse_args(argv)
    try:
        policy = LeRobotPolicy(args.lerobot, args.device)
        return serve_until_stopped(policy, args.host, args.port, "serve-policy")
    except (DojoError, ValueError, FileNotFoundError, OSError) as err:
        print(f"serve-policy: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
