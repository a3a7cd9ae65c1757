"""Camera intrinsics from many views of a ChArUco board: `cv2.calibrateCamera`, with per-view errors, the worst
views dropped and named, a coverage map of where in the image corners were seen, and the difference from
the driver's factory intrinsics (a RealSense reports them), with a warning above a threshold.

Views come from the arm (it moves the camera over a fixed board, or the board past a fixed camera, see
`calibrate_intrinsics`) or from a person who holds the board in front of the camera (`hand_held_views`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from dojo.calibration.board import BoardSpec, BoardView, CalibrationError, cv2_module, detect_board
from dojo.calibration.handeye import Confirm, survey
from dojo.calibration.motion import MotionLimits
from dojo.calibration.planning import INTRINSICS_PLAN, ViewPlan
from dojo.robot.interfaces import Arm, Camera, Clock

# Which lens parameters are estimated; the rest are held at zero.
DISTORTION_MODELS = ("none", "radial", "standard", "full")  # -, k1 k2, k1 k2 p1 p2, k1 k2 p1 p2 k3
MIN_VIEWS = 8
COVERAGE_CELLS = (6, 8)  # rows, columns of the coverage map


@dataclasses.dataclass(frozen=True)
class ViewError:
    label: str
    corners: int
    rms_px: float


@dataclasses.dataclass(frozen=True)
class IntrinsicsResult:
    camera: str
    image_size: tuple[int, int]  # (height, width)
    K: np.ndarray
    dist: np.ndarray  # k1, k2, p1, p2, k3
    rms_px: float  # over every corner of the kept views
    views: tuple[ViewError, ...]  # kept views
    dropped: tuple[ViewError, ...]  # dropped as the worst (their error in the first solve)
    coverage: np.ndarray  # COVERAGE_CELLS counts of corners seen per image cell (kept views)
    factory_K: np.ndarray | None = None
    warnings: tuple[str, ...] = ()

    @property
    def focal_diff_pct(self) -> float | None:
        """Largest relative difference of fx, fy from the factory values, in percent."""
        if self.factory_K is None:
            return None
        return float(100 * max(abs(self.K[i, i] / self.factory_K[i, i] - 1) for i in (0, 1)))

    @property
    def principal_diff_px(self) -> float | None:
        if self.factory_K is None:
            return None
        return float(np.hypot(self.K[0, 2] - self.factory_K[0, 2], self.K[1, 2] - self.factory_K[1, 2]))

    @property
    def coverage_fraction(self) -> float:
        return float(np.mean(self.coverage > 0))

    def to_dict(self) -> dict:
        """The calibration file's `intrinsics` entry for this camera."""
        out = {"image_size": list(self.image_size), "K": [[float(v) for v in row] for row in self.K],
               "dist": [float(v) for v in self.dist], "rms_px": round(self.rms_px, 4),
               "views": len(self.views), "coverage": round(self.coverage_fraction, 3),
               "worst_views": [dataclasses.asdict(v) for v in sorted(self.views, key=lambda v: -v.rms_px)[:3]],
               "dropped_views": [dataclasses.asdict(v) for v in self.dropped]}
        if self.factory_K is not None:
            out["factory_K"] = [[float(v) for v in row] for row in self.factory_K]
            out["focal_diff_pct"] = round(self.focal_diff_pct, 4)
            out["principal_diff_px"] = round(self.principal_diff_px, 3)
        return out


def _flags(cv2, distortion: str) -> int:
    if distortion not in DISTORTION_MODELS:
        raise ValueError(f"distortion must be one of {DISTORTION_MODELS}, got {distortion!r}")
    fixed = {"none": cv2.CALIB_FIX_K1 | cv2.CALIB_FIX_K2 | cv2.CALIB_FIX_K3 | cv2.CALIB_ZERO_TANGENT_DIST,
             "radial": cv2.CALIB_FIX_K3 | cv2.CALIB_ZERO_TANGENT_DIST,
             "standard": cv2.CALIB_FIX_K3, "full": 0}
    return fixed[distortion]


def coverage_map(views: list[BoardView], image_size: tuple[int, int], cells: tuple[int, int] = COVERAGE_CELLS):
    """Corners seen per image cell, summed over views: where the calibration has evidence."""
    height, width = image_size
    grid = np.zeros(cells, dtype=int)
    for view in views:
        rows = np.clip((view.corners_px[:, 1] / height * cells[0]).astype(int), 0, cells[0] - 1)
        cols = np.clip((view.corners_px[:, 0] / width * cells[1]).astype(int), 0, cells[1] - 1)
        np.add.at(grid, (rows, cols), 1)
    return grid


def format_coverage(grid: np.ndarray) -> str:
    """The coverage map as text, one character per cell: '.' none, then '-', '+', '#' as corners add up."""
    def mark(n: int) -> str:
        return "." if n == 0 else "-" if n < 10 else "+" if n < 40 else "#"
    lines = ["+" + "-" * grid.shape[1] + "+"]
    lines += ["|" + "".join(mark(n) for n in row) + "|" for row in grid]
    return "\n".join(lines + [lines[0]])


def _calibrate(cv2, views: list[BoardView], image_size, flags: int, K_guess: np.ndarray | None):
    obj = [v.points_m.astype(np.float32) for v in views]
    img = [v.corners_px.astype(np.float32).reshape(-1, 1, 2) for v in views]
    height, width = image_size
    if K_guess is not None:
        flags |= cv2.CALIB_USE_INTRINSIC_GUESS
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    rms, K, dist, _, _, _, _, per_view = cv2.calibrateCameraExtended(
        obj, img, (width, height), None if K_guess is None else K_guess.copy(), np.zeros(5), flags=flags,
        criteria=criteria)
    return float(rms), K, dist.reshape(-1)[:5], per_view.reshape(-1)


def solve_intrinsics(views: list[BoardView], image_size: tuple[int, int], *, camera: str = "",
                     labels: list[str] | None = None, distortion: str = "radial", factory_K: np.ndarray | None = None,
                     drop_factor: float = 3.0, drop_floor_px: float = 0.5, max_drop_fraction: float = 0.2,
                     min_views: int = MIN_VIEWS,
                     warn_focal_pct: float = 2.0, warn_principal_px: float = 10.0) -> IntrinsicsResult:
    """calibrateCamera over `views`; views whose error exceeds both `drop_factor` x the median and `drop_floor_px`
    (a blurred or misdetected view) are dropped, at most `max_drop_fraction` of them, worst first, and the
    camera solved again without them.

    `distortion` "radial" (k1, k2) is the default: the tangential terms trade off against the principal point
    unless views reach the image's edges (an arm-held board often cannot), and few lenses need them."""
    cv2 = cv2_module()
    labels = labels or [f"view {i}" for i in range(len(views))]
    if len(views) < min_views:
        raise CalibrationError(f"intrinsics need the board in >= {min_views} views, camera {camera!r} has "
                               f"{len(views)}: show the board in more places and at more angles")
    flags = _flags(cv2, distortion)
    _, _, _, per_view = _calibrate(cv2, views, image_size, flags, factory_K)
    median = float(np.median(per_view))
    order = np.argsort(-per_view)
    n_drop = 0
    while (n_drop < int(max_drop_fraction * len(views)) and len(views) - n_drop - 1 >= min_views
           and per_view[order[n_drop]] > max(drop_factor * median, drop_floor_px)):
        n_drop += 1
    dropped_idx = set(order[:n_drop].tolist())
    kept = [i for i in range(len(views)) if i not in dropped_idx]
    rms, K, dist, per_view_kept = _calibrate(cv2, [views[i] for i in kept], image_size, flags, factory_K)
    dropped = tuple(ViewError(labels[i], views[i].num_corners, round(float(per_view[i]), 4)) for i in order[:n_drop])
    kept_errors = tuple(ViewError(labels[i], views[i].num_corners, round(float(e), 4))
                        for i, e in zip(kept, per_view_kept))
    result = IntrinsicsResult(camera=camera, image_size=tuple(image_size), K=K, dist=dist, rms_px=rms,
                              views=kept_errors, dropped=dropped,
                              coverage=coverage_map([views[i] for i in kept], image_size),
                              factory_K=None if factory_K is None else np.asarray(factory_K, dtype=np.float64))
    warnings = []
    if result.factory_K is not None and result.focal_diff_pct > warn_focal_pct:
        warnings.append(f"focal length differs from the factory intrinsics by {result.focal_diff_pct:.2f} % "
                        f"(> {warn_focal_pct} %): check the board's printed square size, or the lens")
    if result.factory_K is not None and result.principal_diff_px > warn_principal_px:
        warnings.append(f"principal point differs from the factory intrinsics by {result.principal_diff_px:.1f} px "
                        f"(> {warn_principal_px} px)")
    if result.coverage_fraction < 0.5:
        warnings.append(f"the board's corners were seen in only {100 * result.coverage_fraction:.0f} % of the image: "
                        "the lens distortion near the edges is extrapolated; add views near the image's edges")
    return dataclasses.replace(result, warnings=tuple(warnings))


def hand_held_views(camera: Camera, clock: Clock, board: BoardSpec, *, n_views: int = 25, timeout_s: float = 180.0,
                    still_px: float = 0.5, new_px: float = 25.0, poll_s: float = 0.03,
                    on_view: Callable[[int, BoardView, np.ndarray], None] | None = None) -> list[BoardView]:
    """Views taken while a person moves the board in front of the camera: a frame is kept when the board
    holds still (its corners move less than `still_px` since the previous frame) and it is somewhere new
    (its corners moved more than `new_px` on average from every kept view). `on_view` gets each kept
    view and the coverage map, for a live display."""
    kept: list[BoardView] = []
    previous: BoardView | None = None
    last_stamp = None
    start_s = clock.now_s()
    while len(kept) < n_views and clock.now_s() - start_s < timeout_s:
        frame = camera.read()
        if frame.timestamp_s != last_stamp:
            last_stamp = frame.timestamp_s
            view = detect_board(frame.rgb, board, timestamp_s=frame.timestamp_s)
            if view is not None and previous is not None and _mean_shift(view, previous) < still_px:
                if all(_mean_shift(view, k) > new_px for k in kept):
                    kept.append(view)
                    if on_view is not None:
                        on_view(len(kept), view, coverage_map(kept, view.image_size))
            previous = view
        clock.wait(poll_s)
    return kept


def _mean_shift(a: BoardView, b: BoardView) -> float:
    """Mean pixel motion of the corners two views share (infinite when they share fewer than 4)."""
    common, ia, ib = np.intersect1d(a.ids, b.ids, return_indices=True)
    if len(common) < 4:
        return float("inf")
    return float(np.mean(np.linalg.norm(a.corners_px[ia] - b.corners_px[ib], axis=1)))


def _noop(_: str) -> None:
    pass


def calibrate_intrinsics(camera: Camera, clock: Clock, board: BoardSpec, *, arm: Arm | None = None,
                         mount: str | None = None, box_min_m=None, box_max_m=None,
                         factory_K: np.ndarray | None = None, distortion: str = "radial",
                         plan: ViewPlan = INTRINSICS_PLAN, limits: MotionLimits = MotionLimits(),
                         hand_held_n_views: int = 25, hand_held_timeout_s: float = 180.0,
                         confirm: Confirm | None = None, report: Callable[[str], None] = _noop,
                         **solve_options) -> IntrinsicsResult:
    """Intrinsics of `camera` from board views.

    With `arm` (and `mount`: "ee" for a camera on the hand over a fixed board, "fixed" for a fixed camera
    and the board in the gripper, and the workspace box) the arm takes the views, planned from the
    factory intrinsics (see handeye.survey; the start pose must show the board). Without, a person moves
    the board and still views are kept as they come (`hand_held_views`), the coverage map shown through
    `report`. `factory_K` defaults to what the camera reports; `solve_options` go to `solve_intrinsics`.
    """
    frame = camera.read()
    image_size = tuple(frame.rgb.shape[:2])
    factory_K = frame.intrinsics if factory_K is None else np.asarray(factory_K, dtype=np.float64)
    if arm is not None:
        if mount is None or box_min_m is None or box_max_m is None:
            raise ValueError("intrinsics with the arm need mount ('ee' or 'fixed') and the workspace box")
        if factory_K is None:
            raise CalibrationError(f"camera {camera.name!r} reports no intrinsics to plan the arm's views with: pass "
                                   "factory_K (a rough K will do), or take the views by hand (no arm)")
        captures = survey(arm, clock, camera, board, mount=mount, box_min_m=box_min_m, box_max_m=box_max_m,
                          K=factory_K, plan=plan, limits=limits, confirm=confirm, report=report)
        views = [c.view for c in captures if c.view is not None]
        labels = [c.label for c in captures if c.view is not None]
    else:
        def show(i: int, view: BoardView, grid: np.ndarray) -> None:
            report(f"view {i}/{hand_held_n_views}: {view.num_corners} corners\n{format_coverage(grid)}")

        views = hand_held_views(camera, clock, board, n_views=hand_held_n_views, timeout_s=hand_held_timeout_s,
                                on_view=show)
        labels = [f"view {i} at {v.timestamp_s:.2f} s" for i, v in enumerate(views)]
    return solve_intrinsics(views, image_size, camera=camera.name, labels=labels, distortion=distortion,
                            factory_K=factory_K, **solve_options)
