"""`dojo replay info|verify STORE`: summarise a replay store, or check it end to end."""

from __future__ import annotations

import argparse
import json
import sys

from dojo.replay.store import StoreError, open_store, verify_store


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    replay = subparsers.add_parser("replay", help="inspect and check replay stores")
    commands = replay.add_subparsers(dest="replay_command", required=True, metavar="SUBCOMMAND")
    info = commands.add_parser("info", help="print one JSON line: episodes, steps, bytes, keys, sources, success")
    info.add_argument("store", help="path of the Zarr replay store")
    info.set_defaults(func=_info)
    verify = commands.add_parser("verify", help="decode every committed chunk and check the store's invariants")
    verify.add_argument("store", help="path of the Zarr replay store")
    verify.set_defaults(func=_verify)


def _info(args: argparse.Namespace) -> int:
    try:
        summary = open_store(args.store).summary()
    except StoreError as err:
        print(f"dojo replay info: {err}", file=sys.stderr)
        return 1
    print(json.dumps(summary, sort_keys=True))
    return 0


def _verify(args: argparse.Namespace) -> int:
    try:
        reader = verify_store(args.store)
    except StoreError as err:
        print(f"dojo replay verify: {err}", file=sys.stderr)
        return 1
    print(f"{args.store}: ok ({reader.num_episodes} episodes, {reader.num_steps} steps, {reader.num_rows} rows)")
    return 0
