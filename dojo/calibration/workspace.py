"""The workspace box the safety layer clips every target into, measured two ways:

- `workspace_from_teleop`: the operator jogs the end-effector to corners of the allowed volume and presses
  success at each (discard drops the last, fail ends); the box is the bounding box of the points taken.
- `workspace_from_table`: a calibrated camera sees the board lying on the table; the box's floor is a
  margin above the table plane (its highest point over the box's footprint, should the table tilt) and
  its ceiling `height_m` above that, over a given footprint.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from dojo.calibration.board import BoardSpec, CalibrationError, board_pose, detect_board
from dojo.calibration.jog import JogSettings, jog_and_take
from dojo.calibration.motion import MotionLimits, fresh_frame, wait_still
from dojo.robot.interfaces import Arm, Camera, Clock, Teleop


@dataclasses.dataclass(frozen=True)
class WorkspaceResult:
    min_m: tuple[float, float, float]
    max_m: tuple[float, float, float]
    source: str  # "teleop" or "table"
    points_m: tuple[tuple[float, float, float], ...] = ()  # the corners taken (teleop)
    table_z_m: float | None = None  # the table plane's height at the footprint's centre (table)
    table_tilt_deg: float | None = None

    def to_dict(self) -> dict:
        out = {"min_m": [round(v, 5) for v in self.min_m], "max_m": [round(v, 5) for v in self.max_m],
               "source": self.source}
        if self.points_m:
            out["points_m"] = [[round(v, 5) for v in p] for p in self.points_m]
        if self.table_z_m is not None:
            out["table_z_m"], out["table_tilt_deg"] = round(self.table_z_m, 5), round(self.table_tilt_deg, 3)
        return out


def _noop(_: str) -> None:
    pass


def box_from_points(points_m, min_extent_m: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """The bounding box of the points; raises if it is thinner than `min_extent_m` along an axis."""
    points = np.asarray(points_m, dtype=np.float64).reshape(-1, 3)
    if len(points) < 2:
        raise CalibrationError(f"a workspace box needs at least 2 corners, {len(points)} were taken: drive to two "
                               "opposite corners of the allowed volume and press success at each")
    lo, hi = points.min(axis=0), points.max(axis=0)
    thin = [f"{'xyz'[i]} ({(hi - lo)[i] * 1e3:.1f} mm)" for i in range(3) if hi[i] - lo[i] < min_extent_m]
    if thin:
        raise CalibrationError(f"the corners taken span less than {min_extent_m * 1e3:.0f} mm along {', '.join(thin)}: "
                               "take corners that differ along every axis (e.g. a low near-left and a high far-right)")
    return lo, hi


def workspace_from_teleop(arm: Arm, clock: Clock, teleop: Teleop, *, reach_min_m, reach_max_m,
                          jog: JogSettings = JogSettings(), limits: MotionLimits = MotionLimits(),
                          min_extent_m: float = 0.02, report: Callable[[str], None] = _noop) -> WorkspaceResult:
    """The box spanned by the corners the operator drives to. The jog stays inside `reach_*` (a generous
    outer bound: the arm's safe reach); the corner recorded is where the arm settles after the press."""
    points: list[np.ndarray] = []

    def take(i: int) -> None:
        state = wait_still(arm, clock, limits)
        points.append(state.ee_pos_m.copy())
        report(f"corner {len(points)}: {np.round(state.ee_pos_m, 4).tolist()} m")

    def drop() -> None:
        dropped = points.pop()
        report(f"dropped corner {np.round(dropped, 4).tolist()} m")

    jog_and_take(arm, clock, teleop, take=take, drop=drop, box_min_m=reach_min_m, box_max_m=reach_max_m,
                 settings=jog)
    lo, hi = box_from_points(points, min_extent_m)
    return WorkspaceResult(min_m=tuple(lo.tolist()), max_m=tuple(hi.tolist()), source="teleop",
                           points_m=tuple(tuple(p.tolist()) for p in points))


def workspace_from_table(camera: Camera, clock: Clock, board: BoardSpec, K: np.ndarray, dist: np.ndarray | None,
                         T_base_cam: np.ndarray, *, xy_min_m, xy_max_m, margin_m: float = 0.015,
                         height_m: float = 0.4, board_thickness_m: float = 0.0, max_tilt_deg: float = 5.0,
                         limits: MotionLimits = MotionLimits()) -> WorkspaceResult:
    """The box over the footprint `xy_min_m`..`xy_max_m` (base x, y), from `margin_m` above the table to
    `height_m` above that. The table is where the board lies, `board_thickness_m` below its printed face,
    seen by a camera at `T_base_cam` (a fixed camera's inverse T_cam_base, or a wrist camera's pose now)."""
    frame = fresh_frame(camera, clock, clock.now_s(), limits)
    view = detect_board(frame.rgb, board)
    if view is None:
        raise CalibrationError(f"camera {camera.name!r} does not see the board: lay it flat on the table, printed "
                               "face up, where the camera sees all of it")
    T_base_board = T_base_cam @ board_pose(view, K, dist)[0]
    up = -T_base_board[:3, 2]  # the printed face looks along the board's -z
    tilt_deg = float(np.degrees(np.arccos(np.clip(up[2], -1.0, 1.0))))
    if tilt_deg > max_tilt_deg:
        raise CalibrationError(f"the board is tilted {tilt_deg:.1f} degrees from the base's horizontal (more than "
                               f"{max_tilt_deg}): lay it flat on the table, or check the camera's hand-eye calibration")
    point = T_base_board[:3, 3] - board_thickness_m * up  # a point of the table plane
    lo_xy, hi_xy = np.asarray(xy_min_m, float), np.asarray(xy_max_m, float)
    corners = np.array([[x, y] for x in (lo_xy[0], hi_xy[0]) for y in (lo_xy[1], hi_xy[1])])
    # The plane's height over each footprint corner: up . (p - point) = 0.
    z = point[2] - ((corners - point[:2]) @ up[:2]) / up[2]
    center_z = float(point[2] - ((lo_xy + hi_xy) / 2 - point[:2]) @ up[:2] / up[2])
    floor = float(z.max()) + margin_m
    return WorkspaceResult(min_m=(float(lo_xy[0]), float(lo_xy[1]), floor),
                           max_m=(float(hi_xy[0]), float(hi_xy[1]), floor + height_m), source="table",
                           table_z_m=center_z, table_tilt_deg=float(tilt_deg))

