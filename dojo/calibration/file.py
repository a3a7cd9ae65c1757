"""A station's calibration file: intrinsics and pose of each camera, the workspace box and the latencies,
each with its date and residuals, under an id that is a hash of the content. Episodes record the id, so
a store says which calibration its data was taken with.

JSON, written atomically, readable by hand:

    {"format": "dojo-calibration/1", "id": "3f2a9b1c0d4e", "date": "2026-07-10T12:00:00+00:00",
     "cameras": {"front": {"intrinsics": {"K": [[...]], "dist": [k1, k2, p1, p2, k3], "image_size": [h, w],
                                          "rms_px": ..., "date": ...},
                           "extrinsics": {"mount": "fixed", "T_cam_base": [[4x4]], "method": ..., "date": ...},
                           "latency": {"capture_to_arrival_s": ..., "motion_to_image_s": ..., "date": ...}},
                 "wrist": {"extrinsics": {"mount": "ee", "T_cam_ee": [[4x4]], ...}, ...}},
     "arm": {"latency": {"command_to_motion_s": ..., "date": ...}},
     "workspace": {"min_m": [x, y, z], "max_m": [x, y, z], "source": "teleop" | "table", "date": ...}}

`id` is the first 12 hex digits of the SHA-256 of the canonical JSON of everything but `id` and `date`
(the date of the last change). Each command updates its own section and leaves the others.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from dojo.fileio import atomic_write

FORMAT = "dojo-calibration/1"


class CalibrationFileError(ValueError):
    """A calibration file that cannot be used; the message names the file and the bad entry."""


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def content_id(content: dict) -> str:
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


@dataclasses.dataclass(frozen=True)
class StationCalibration:
    """The file's content (`content`: cameras, arm, workspace) with its date; `id` follows the content."""

    content: dict = dataclasses.field(default_factory=dict)
    date: str = ""

    @property
    def id(self) -> str:
        return content_id(self.content)

    # --- updates: each returns a new calibration with one section replaced -----------------------
    def _with(self, keys: tuple[str, ...], section: dict, date: str | None) -> StationCalibration:
        content = copy.deepcopy(self.content)
        node = content
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        date = date or _now()
        node[keys[-1]] = _jsonable({**section, "date": date})
        return StationCalibration(content=content, date=date)

    def with_intrinsics(self, result, date: str | None = None) -> StationCalibration:
        """From an `intrinsics.IntrinsicsResult`."""
        return self._with(("cameras", result.camera, "intrinsics"), result.to_dict(), date)

    def with_extrinsics(self, result, date: str | None = None) -> StationCalibration:
        """From a `handeye.HandEyeResult`."""
        return self._with(("cameras", result.camera, "extrinsics"), result.to_dict(), date)

    def with_workspace(self, result, date: str | None = None) -> StationCalibration:
        """From a `workspace.WorkspaceResult`."""
        return self._with(("workspace",), result.to_dict(), date)

    def with_arm_latency(self, result, date: str | None = None) -> StationCalibration:
        """From a `latency.CommandLatency`."""
        return self._with(("arm", "latency"), result.to_dict(), date)

    def with_camera_latency(self, camera: str, capture=None, motion=None, date: str | None = None):
        """From a `latency.CameraLatency` and/or a `latency.MotionToImage`; what is not given is kept."""
        old = {k: v for k, v in self.content.get("cameras", {}).get(camera, {}).get("latency", {}).items()
               if k != "date"}
        new = {**old, **(capture.to_dict() if capture is not None else {}),
               **(motion.to_dict() if motion is not None else {})}
        return self._with(("cameras", camera, "latency"), new, date)

    # --- what RobotEnv and the robot check read ------------------------------------------------
    def cameras(self) -> list[str]:
        return sorted(self.content.get("cameras", {}))

    def _section(self, *keys: str) -> dict | None:
        node = self.content
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node

    def K(self, camera: str) -> np.ndarray | None:
        s = self._section("cameras", camera, "intrinsics")
        return None if s is None else np.array(s["K"], dtype=np.float64)

    def dist(self, camera: str) -> np.ndarray | None:
        s = self._section("cameras", camera, "intrinsics")
        return None if s is None else np.array(s["dist"], dtype=np.float64)

    def T_cam_base(self, camera: str) -> np.ndarray | None:
        """A fixed camera's pose (maps base-frame points into the camera frame); None if not calibrated so."""
        s = self._section("cameras", camera, "extrinsics")
        return None if s is None or "T_cam_base" not in s else np.array(s["T_cam_base"], dtype=np.float64)

    def T_cam_ee(self, camera: str) -> np.ndarray | None:
        """A hand-mounted camera's pose (maps end-effector-frame points into the camera frame)."""
        s = self._section("cameras", camera, "extrinsics")
        return None if s is None or "T_cam_ee" not in s else np.array(s["T_cam_ee"], dtype=np.float64)

    def workspace_box(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        s = self._section("workspace")
        return None if s is None else (tuple(s["min_m"]), tuple(s["max_m"]))

    def command_to_motion_s(self) -> float | None:
        s = self._section("arm", "latency")
        return None if s is None else float(s["command_to_motion_s"])

    def motion_to_image_s(self, camera: str) -> float | None:
        s = self._section("cameras", camera, "latency")
        return None if s is None or "motion_to_image_s" not in s else float(s["motion_to_image_s"])

    def capture_to_arrival_s(self, camera: str) -> float | None:
        s = self._section("cameras", camera, "latency")
        return None if s is None or "capture_to_arrival_s" not in s else float(s["capture_to_arrival_s"])

    def section_dates(self) -> dict[str, str]:
        """Each calibrated section's date, keyed by its path ("cameras/front/intrinsics", "workspace", ...)."""
        out = {}

        def walk(node, path):
            if isinstance(node, dict):
                if "date" in node and path:
                    out["/".join(path)] = node["date"]
                for key, value in node.items():
                    if isinstance(value, dict):
                        walk(value, path + [key])
        walk(self.content, [])
        return out

    def age_days(self, now: dt.datetime | None = None) -> float | None:
        """Days since the oldest section was calibrated (what goes stale first); None for an empty file."""
        dates = [dt.datetime.fromisoformat(d) for d in self.section_dates().values()]
        if not dates:
            return None
        now = now or dt.datetime.now(dt.timezone.utc)
        return (now - min(dates)).total_seconds() / 86400.0

    # --- file ------------------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "id": self.id, "date": self.date, **self.content}, indent=1,
                          allow_nan=False) + "\n"

    def save(self, path: str | os.PathLike) -> str:
        """Write atomically; returns the id."""
        atomic_write(path, self.to_json().encode())
        return self.id


def _jsonable(value):
    """Numbers and arrays as plain JSON numbers and lists (json writes floats so that they read back exactly)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        if not np.isfinite(value):
            raise ValueError(f"calibration values must be finite, got {value!r}")
        return float(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    return value


def load_calibration(path: str | os.PathLike) -> StationCalibration:
    """Read and check a calibration file: its format, that its id matches its content (it was not edited by
    hand after writing), and the shape of every matrix and box in it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CalibrationFileError(f"no calibration file at {path}: run `dojo calibrate ...` for this station "
                                   "first") from None
    except json.JSONDecodeError as err:
        raise CalibrationFileError(f"calibration file {path} is not valid JSON: {err}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise CalibrationFileError(f"calibration file {path} has format {found!r}, expected {FORMAT!r}")
    content = {k: v for k, v in data.items() if k not in ("format", "id", "date")}
    cal = StationCalibration(content=content, date=str(data.get("date", "")))
    if data.get("id") != cal.id:
        raise CalibrationFileError(f"calibration file {path} says id {data.get('id')!r} but its content hashes to "
                                   f"{cal.id!r}: it was changed after it was written; calibrate again rather than "
                                   "edit it")
    _check(cal, path)
    return cal


def _check(cal: StationCalibration, path) -> None:
    def fail(key: str, what: str, value) -> None:
        raise CalibrationFileError(f"calibration file {path}: {key} must be {what}, got {value!r}")

    for camera in cal.cameras():
        K = cal._section("cameras", camera, "intrinsics", "K")
        if K is not None and (np.shape(K) != (3, 3) or not np.all(np.isfinite(K)) or K[0][0] <= 0 or K[1][1] <= 0):
            fail(f"cameras.{camera}.intrinsics.K", "a 3x3 matrix with positive focal lengths", K)
        for name in ("T_cam_base", "T_cam_ee"):
            T = cal._section("cameras", camera, "extrinsics", name)
            if T is None:
                continue
            T = np.asarray(T, dtype=np.float64)
            if (T.shape != (4, 4) or not np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-6)
                    or not np.allclose(T[3], [0, 0, 0, 1])):
                fail(f"cameras.{camera}.extrinsics.{name}", "a 4x4 rigid transform", T.tolist())
    box = cal.workspace_box()
    if box is not None:
        lo, hi = np.asarray(box[0], float), np.asarray(box[1], float)
        if lo.shape != (3,) or hi.shape != (3,) or np.any(lo >= hi):
            fail("workspace", "min_m < max_m, 3 numbers each", {"min_m": box[0], "max_m": box[1]})


def update_calibration(path: str | os.PathLike, result) -> StationCalibration:
    """Load the station's file (or start one), put `result` in its section, save; returns the new calibration.

    `result` is an IntrinsicsResult, HandEyeResult, WorkspaceResult, CommandLatency, CameraLatency or
    MotionToImage (the last two under their result's camera).
    """
    from dojo.calibration.handeye import HandEyeResult
    from dojo.calibration.intrinsics import IntrinsicsResult
    from dojo.calibration.latency import CameraLatency, CommandLatency, MotionToImage
    from dojo.calibration.workspace import WorkspaceResult

    cal = load_calibration(path) if Path(path).exists() else StationCalibration()
    if isinstance(result, IntrinsicsResult):
        cal = cal.with_intrinsics(result)
    elif isinstance(result, HandEyeResult):
        cal = cal.with_extrinsics(result)
    elif isinstance(result, WorkspaceResult):
        cal = cal.with_workspace(result)
    elif isinstance(result, CommandLatency):
        cal = cal.with_arm_latency(result)
    elif isinstance(result, CameraLatency):
        cal = cal.with_camera_latency(result.camera, capture=result)
    elif isinstance(result, MotionToImage):
        cal = cal.with_camera_latency(result.camera, motion=result)
    else:
        raise TypeError(f"no calibration section for a {type(result).__name__}")
    cal.save(path)
    return cal
