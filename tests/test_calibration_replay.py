"""`dojo replay info` says which station calibrations (file ids) a store's episodes were recorded with."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np

from dojo.launch.cli import main
from dojo.replay.store import EpisodeWriter


def _episode(writer: EpisodeWriter, calibration_id: str) -> None:
    writer.begin_episode(source="demo", calibration_id=calibration_id)
    for t in range(3):
        writer.add_step({"state": np.zeros(4, np.float32)}, np.zeros(2, np.float32), 0.0, t == 2, False)
    writer.end_episode({"state": np.zeros(4, np.float32)}, success=True)


def test_replay_info_counts_episodes_per_calibration(tmp_path):
    with EpisodeWriter(tmp_path / "store") as writer:
        for calibration_id in ("3f2a9b1c0d4e", "3f2a9b1c0d4e", "", "0b1c2d3e4f5a"):
            _episode(writer, calibration_id)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["replay", "info", str(tmp_path / "store")]) == 0
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    assert summary["calibrations"] == {"3f2a9b1c0d4e": 2, "": 1, "0b1c2d3e4f5a": 1}
