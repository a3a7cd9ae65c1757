"""The `dojo` command: one subcommand per module `dojo/launch/cmd_*.py`, each with `add_parser`."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

# Each module registers its subcommands with `add_parser(subparsers)` and sets `func` on them.
COMMAND_MODULES = ("cmd_sim", "cmd_teleop", "cmd_record", "cmd_replay", "cmd_learn", "cmd_train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dojo", description="Real-robot learning with a MuJoCo twin.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"dojo.launch.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Ctrl-C stops every dojo command (a person at a teleop device or watching a run must be able to),
    # also where a shell or supervisor started us with SIGINT ignored: Python then installs no handler.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("dojo: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        # Bad input: say what was wrong, without a traceback.
        print(f"dojo {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
