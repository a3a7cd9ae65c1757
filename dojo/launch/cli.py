"""The `dojo` command: one subcommand per module `dojo/launch/cmd_*.py`, each with `add_parser`."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

# Each module registers its subcommands with `add_parser(subparsers)` and sets `func` on them.
COMMAND_MODULES = ("cmd_sim", "cmd_teleop", "cmd_record", "cmd_replay", "cmd_learn", "cmd_train", "cmd_practice",
                   "cmd_robot", "cmd_calibrate", "cmd_reward", "cmd_serve", "cmd_generalist", "cmd_steer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dojo", description="Real-robot learning with a MuJoCo twin.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"dojo.launch.{name}").add_parser(subparsers)
    return parser


# Bad input (a value, a path, a store, a busy run): the message says what and what was expected.
BAD_INPUT = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line. A command's KEY=VALUE overrides may come in more than one group (`dojo train a=1 --run R
    b=2`): argparse fills the positional from the first group only, so the later ones join it here, in order."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    late = [a for a in extra if "=" in a and not a.startswith("-")]
    if extra and (late != extra or not isinstance(getattr(args, "overrides", None), list)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if late:
        args.overrides = [*args.overrides, *late]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # Ctrl-C stops every dojo command (a person at a teleop device or watching a run must be able to),
    # also where a shell or supervisor started us with SIGINT ignored: Python then installs no handler.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("dojo: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # one line, not a traceback (unless --debug)
        if args.debug:
            raise
        from dojo.errors import DojoError
        from dojo.replay.store import StoreError

        expected = isinstance(err, (*BAD_INPUT, DojoError, StoreError))
        text = str(err).strip().splitlines()[0] if str(err).strip() else ""
        line = text if expected else f"{type(err).__name__}: {text} (run with --debug for the traceback)"
        print(f"dojo {args.command}: error: {line}", file=sys.stderr)
        return 2 if isinstance(err, (*BAD_INPUT, StoreError)) else 1


if __name__ == "__main__":
    sys.exit(main())
