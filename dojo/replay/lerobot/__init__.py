"""LeRobotDataset v3 export and import: a dojo store to and from LeRobot's parquet + mp4 folder layout, so that
LeRobot can train on dojo's recordings and dojo's learners can pre-train on LeRobot's. MAPPING.md says where
every field goes. Needs the `lerobot` extra (pyarrow, av), not LeRobot itself."""

import importlib.util

from dojo.errors import DojoError

# Checked before any module here imports them, so that a missing extra fails with one line, not a traceback.
_MISSING = [m for m in ("pyarrow", "av") if importlib.util.find_spec(m) is None]
if _MISSING:  # pragma: no cover - depends on the installed extras
    raise DojoError(f"LeRobot export and import need pyarrow and av ({', '.join(_MISSING)} missing): "
                    "pip install -e '.[lerobot]'")
