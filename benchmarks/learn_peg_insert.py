"""The serl preset on the twin's peg_insert (state obs, sparse reward, 20 scripted demos), as found on pick_cube
(results/README.md): success against env steps and wall-clock, then a final evaluation.

Run: .venv/bin/python benchmarks/learn_peg_insert.py [--steps 20000] [--set KEY=VALUE ...]
The same loop as learn_pick_cube.py (all its options apply); prints one JSON line last.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import learn_pick_cube  # noqa: E402


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Defaults for this task; anything given on the command line comes later and wins.
    defaults = ["--task", "peg_insert", "--steps", "20000", "--plot", "learn_peg_insert.png"]
    return learn_pick_cube.main(defaults + argv)


if __name__ == "__main__":
    main()
