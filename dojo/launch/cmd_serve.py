"""`dojo serve-policy`: serve a dojo policy snapshot, dojo's generalist or a LeRobot checkpoint over the openpi
websocket protocol."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "serve-policy", help="serve a policy over the openpi websocket protocol",
        description="Serve a policy over openpi's websocket protocol (msgpack numpy; the metadata on connect, then "
                    "one {'actions': (H, d)} answer per observation) until Ctrl-C. A dojo snapshot answers with a "
                    "1-step chunk; dojo's generalist one sampled (H, d) chunk for the instruction in obs['prompt']. "
                    "A LeRobot checkpoint needs LeRobot's own Python (>= 3.12, torch < 2.12): give it "
                    "with --python, or run this command in an environment that has both.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", metavar="RUN", help="a run folder: serves RUN/policy.msgpack")
    what.add_argument("--snapshot", metavar="FILE", help="a policy snapshot file (policy.msgpack)")
    what.add_argument("--generalist", metavar="FILE", help="dojo's generalist (dojo generalist train --out FILE)")
    what.add_argument("--lerobot", metavar="CKPT", help="a LeRobot policy folder written by save_pretrained "
                                                        "(ACT, Diffusion, SmolVLA, ...)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port (the address is printed)")
    p.add_argument("--stochastic", action="store_true", help="dojo snapshot: sample actions instead of the mode")
    p.add_argument("--seed", type=int, default=0, help="dojo snapshot or generalist: the sampling seed")
    p.add_argument("--encoder", metavar="FOLDER", default=None,
                   help="generalist: its language encoder's folder, for instructions outside its training set "
                        "(default: the folder it was trained with, if it is here)")
    p.add_argument("--device", default="cpu", help="LeRobot: torch device (cpu, cuda, mps)")
    p.add_argument("--python", metavar="PY", default=None,
                   help="LeRobot: the Python of a LeRobot environment; the server runs there as "
                        "`PY -m dojo.policies.openpi` with this dojo on its path")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.python is not None and not args.lerobot:
        raise ValueError("--python is for --lerobot (a LeRobot environment's Python); a dojo snapshot is served here")
    if args.lerobot and args.python is not None:
        return _serve_in(args.python, args)
    if args.encoder is not None and not args.generalist:
        raise ValueError("--encoder is for --generalist (its language encoder's folder)")
    from dojo.policies.openpi import GeneralistPolicy, LeRobotPolicy, SnapshotPolicy, serve_until_stopped

    if args.lerobot:
        policy = LeRobotPolicy(args.lerobot, args.device)
    elif args.generalist:
        policy = GeneralistPolicy(args.generalist, encoder=args.encoder, seed=args.seed)
    else:
        path = args.snapshot or os.path.join(args.run, "policy.msgpack")
        policy = SnapshotPolicy(path, deterministic=not args.stochastic, seed=args.seed)
    return serve_until_stopped(policy, args.host, args.port, "dojo serve-policy")


def _serve_in(python: str, args: argparse.Namespace) -> int:
    """Run the LeRobot server under another Python (LeRobot's), with this dojo's source folder on its path: the
    server module needs only numpy, msgpack and websockets besides LeRobot."""
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        raise FileNotFoundError(f"--python {python!r} is not an executable file; expected a LeRobot environment's "
                                "python, e.g. /path/to/lerobot-venv/bin/python")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    cmd = [python, "-m", "dojo.policies.openpi", "--lerobot", os.path.abspath(args.lerobot), "--host", args.host,
           "--port", str(args.port), "--device", args.device]
    child = subprocess.Popen(cmd, env=env)

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        return child.wait()
    except KeyboardInterrupt:
        # A terminal's Ctrl-C reaches the child too; a SIGTERM sent to this process does not.
        child.send_signal(signal.SIGTERM)
        return child.wait()
