"""Hand-eye calibration: where a camera is, from still views of a ChArUco board at several arm poses.

Two mounts:
- "ee" (eye-in-hand): the camera rides on the hand (the wrist camera), the board lies fixed on the table.
  It finds T_cam_ee, and the board's pose T_base_board on the way.
- "fixed" (eye-to-hand): the camera is fixed (the front camera), the gripper holds the board. It finds
  T_cam_base, and the board's pose on the hand T_ee_board on the way.

Every OpenCV solver is run (`calibrateHandEye`: Tsai, Park, Horaud, Andreff, Daniilidis;
`calibrateRobotWorldHandEye`: Shah, Li), then the best is refined by minimising the board corners'
reprojection error over all poses. Each is reported with its per-pose residuals, so a disagreement between
methods, or one bad pose, shows.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from dojo.calibration.board import BoardSpec, CalibrationError, board_pose, cv2_module, project
from dojo.calibration.frames import (as_list, invert, mat_to_rotvec, mean_transform, pose_difference,
                                     rotvec_to_mat, transform)
from dojo.calibration.jog import JogSettings, jog_and_take
from dojo.calibration.motion import Capture, MotionLimits, capture_still, check_in_box, move_to
from dojo.calibration.planning import HANDEYE_PLAN, ViewPlan, nudge_poses, plan_views
from dojo.robot.interfaces import Arm, Camera, Clock, Teleop

MOUNTS = ("ee", "fixed")
HAND_EYE_METHODS = ("tsai", "park", "horaud", "andreff", "daniilidis")
ROBOT_WORLD_METHODS = ("shah", "li")
REFINED = "reprojection"
MIN_POSES = 5


@dataclasses.dataclass(frozen=True)
class PoseResidual:
    """How well one pose agrees with a solution: reprojection of the board's corners, and the predicted
    board pose against the one seen by PnP."""

    label: str
    corners: int
    reprojection_px: float
    translation_mm: float
    rotation_deg: float


@dataclasses.dataclass(frozen=True)
class MethodResult:
    name: str
    T_cam_ref: np.ndarray  # T_cam_ee ("ee" mount) or T_cam_base ("fixed")
    T_other: np.ndarray  # T_base_board ("ee") or T_ee_board ("fixed")
    residuals: tuple[PoseResidual, ...]

    @property
    def rms_reprojection_px(self) -> float:
        """RMS over all corners of all poses."""
        sq = sum(r.reprojection_px ** 2 * r.corners for r in self.residuals)
        return float(np.sqrt(sq / max(1, sum(r.corners for r in self.residuals))))


@dataclasses.dataclass(frozen=True)
class HandEyeResult:
    camera: str
    mount: str
    method: str  # the one chosen: lowest reprojection error
    T_cam_ref: np.ndarray
    T_other: np.ndarray
    methods: tuple[MethodResult, ...]
    residuals: tuple[PoseResidual, ...]  # of the chosen method, per pose
    skipped: tuple[str, ...] = ()  # poses without a usable board view

    @property
    def reference(self) -> str:
        return "ee" if self.mount == "ee" else "base"

    @property
    def rms_reprojection_px(self) -> float:
        return self.chosen.rms_reprojection_px

    @property
    def chosen(self) -> MethodResult:
        return next(m for m in self.methods if m.name == self.method)

    def method_spread(self) -> dict[str, dict[str, float]]:
        """Each method's camera position and rotation difference from the chosen one (mm, degrees)."""
        chosen = invert(self.T_cam_ref)
        out = {}
        for m in self.methods:
            mm, deg = pose_difference(invert(m.T_cam_ref), chosen)
            out[m.name] = {"translation_mm": round(mm, 3), "rotation_deg": round(deg, 4),
                           "rms_reprojection_px": round(m.rms_reprojection_px, 4)}
        return out

    def to_dict(self) -> dict:
        """The calibration file's `extrinsics` entry for this camera."""
        return {
            "mount": self.mount, f"T_cam_{self.reference}": as_list(self.T_cam_ref),
            ("T_base_board" if self.mount == "ee" else "T_ee_board"): as_list(self.T_other),
            "method": self.method, "rms_reprojection_px": round(self.rms_reprojection_px, 4),
            "poses": len(self.residuals), "skipped_poses": list(self.skipped),
            "residuals": [{k: round(v, 4) if isinstance(v, float) else v for k, v in dataclasses.asdict(r).items()}
                          for r in self.residuals],
            "methods": self.method_spread(),
        }


def _robot_pose(mount: str, T_base_ee: np.ndarray) -> np.ndarray:
    """The known motion B_i in T_cam_board_i = X B_i Y: T_ee_base for "ee", T_base_ee for "fixed"."""
    return invert(T_base_ee) if mount == "ee" else T_base_ee


def predict(mount: str, X: np.ndarray, Y: np.ndarray, T_base_ee: np.ndarray) -> np.ndarray:
    """T_cam_board the solution (X, Y) predicts at an arm pose."""
    return X @ _robot_pose(mount, T_base_ee) @ Y


def _solve_hand_eye(cv2, method: str, mount: str, T_base_ee: list, T_cam_board: list) -> tuple[np.ndarray, np.ndarray]:
    """AX = XB through cv2.calibrateHandEye. Eye-to-hand is the same problem with the arm poses inverted."""
    flag = getattr(cv2, f"CALIB_HAND_EYE_{method.upper()}")
    gripper2base = T_base_ee if mount == "ee" else [invert(T) for T in T_base_ee]
    R, t = cv2.calibrateHandEye([T[:3, :3] for T in gripper2base], [T[:3, 3] for T in gripper2base],
                                [T[:3, :3] for T in T_cam_board], [T[:3, 3] for T in T_cam_board], method=flag)
    X = invert(transform(R, t))  # OpenCV gives cam2gripper: T_ee_cam ("ee") or T_base_cam ("fixed")
    # The other unknown, averaged over poses: Y = (X B_i)^-1 T_cam_board_i.
    Y = mean_transform([invert(X @ _robot_pose(mount, Tb)) @ Tc for Tb, Tc in zip(T_base_ee, T_cam_board)])
    return X, Y


def _solve_robot_world(cv2, method: str, mount: str, T_base_ee: list,
                       T_cam_board: list) -> tuple[np.ndarray, np.ndarray]:
    """T_cam_board_i Y^-1 = X B_i through cv2.calibrateRobotWorldHandEye (world = board, gripper = the camera's
    carrier: the hand for "ee"; for "fixed" the roles of base and hand swap)."""
    flag = getattr(cv2, f"CALIB_ROBOT_WORLD_HAND_EYE_{method.upper()}")
    B = [_robot_pose(mount, T) for T in T_base_ee]
    R_b2w, t_b2w, R_g2c, t_g2c = cv2.calibrateRobotWorldHandEye(
        [T[:3, :3] for T in T_cam_board], [T[:3, 3] for T in T_cam_board], [T[:3, :3] for T in B],
        [T[:3, 3] for T in B], method=flag)
    return transform(R_g2c, t_g2c), invert(transform(R_b2w, t_b2w))


def _residuals(mount, X, Y, usable: list[Capture], T_cam_board: list, K, dist) -> tuple[PoseResidual, ...]:
    out = []
    for capture, T_seen in zip(usable, T_cam_board):
        T_pred = predict(mount, X, Y, capture.T_base_ee)
        err = project(capture.view.points_m, T_pred, K, dist) - capture.view.corners_px
        mm, deg = pose_difference(T_pred, T_seen)
        out.append(PoseResidual(label=capture.label, corners=capture.view.num_corners,
                                reprojection_px=float(np.sqrt(np.mean(np.sum(err ** 2, axis=1)))),
                                translation_mm=mm, rotation_deg=deg))
    return tuple(out)


def _refine(mount, X, Y, usable: list[Capture], K, dist, iterations: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Levenberg-Marquardt on the reprojection error of every corner over (X, Y), 12 parameters."""
    def perturb(T, d):
        return transform(rotvec_to_mat(d[:3]) @ T[:3, :3], T[:3, 3] + d[3:])

    def residual(X_, Y_):
        return np.concatenate([(project(c.view.points_m, predict(mount, X_, Y_, c.T_base_ee), K, dist)
                                - c.view.corners_px).ravel() for c in usable])

    r = residual(X, Y)
    lam = 1e-3
    for _ in range(iterations):
        J = np.empty((r.size, 12))
        for k in range(12):
            d = np.zeros(12)
            d[k] = 1e-6
            J[:, k] = (residual(perturb(X, d[:6]), perturb(Y, d[6:])) - r) / 1e-6
        H, g = J.T @ J, J.T @ r
        improved = False
        while lam < 1e8:
            step = -np.linalg.solve(H + lam * np.diag(np.diag(H) + 1e-12), g)
            X_new, Y_new = perturb(X, step[:6]), perturb(Y, step[6:])
            r_new = residual(X_new, Y_new)
            if r_new @ r_new < r @ r:
                X, Y, r, lam, improved = X_new, Y_new, r_new, lam / 10, True
                break
            lam *= 10
        if not improved or np.linalg.norm(step) < 1e-10:
            break
    return X, Y


def check_rotation_spread(T_base_ee: list[np.ndarray], min_deg: float = 5.0) -> None:
    """Hand-eye needs rotations about at least two different axes; translations alone determine nothing."""
    rel = [mat_to_rotvec(T[:3, :3] @ T_base_ee[0][:3, :3].T) for T in T_base_ee[1:]]
    big = [r for r in rel if np.degrees(np.linalg.norm(r)) >= min_deg]
    axes = np.array([r / np.linalg.norm(r) for r in big]) if big else np.zeros((0, 3))
    if len(big) < 2 or np.linalg.matrix_rank(axes, tol=0.2) < 2:
        raise CalibrationError(f"the arm poses do not rotate enough about different axes (need at least two poses "
                               f"turned >= {min_deg} degrees about different axes from the first, got "
                               f"{len(big)}): tilt the hand in more directions")


def solve_handeye(captures: list[Capture], K: np.ndarray, dist: np.ndarray | None, mount: str,
                  camera: str = "", min_poses: int = MIN_POSES, refine: bool = True) -> HandEyeResult:
    """Solve from still captures (arm pose + board view) with the camera's intrinsics; every method is run."""
    if mount not in MOUNTS:
        raise ValueError(f"mount must be 'ee' (camera on the hand) or 'fixed' (camera fixed, board on the hand), "
                         f"got {mount!r}")
    cv2 = cv2_module()
    dist = np.zeros(5) if dist is None else np.asarray(dist, dtype=np.float64)
    usable = [c for c in captures if c.view is not None]
    skipped = tuple(c.label for c in captures if c.view is None)
    if len(usable) < min_poses:
        raise CalibrationError(f"hand-eye needs the board in view at >= {min_poses} poses, it was seen at "
                               f"{len(usable)} of {len(captures)} for camera {camera!r}: make sure the whole board "
                               "is in view at the start pose, or add poses")
    T_base_ee = [c.T_base_ee for c in usable]
    check_rotation_spread(T_base_ee)
    T_cam_board = [board_pose(c.view, K, dist)[0] for c in usable]
    methods = []
    # A solver that fails on a weak set logs an error to stderr as well as raising; the raise is enough here.
    log_level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        for name in HAND_EYE_METHODS + ROBOT_WORLD_METHODS:
            solver = _solve_hand_eye if name in HAND_EYE_METHODS else _solve_robot_world
            try:
                X, Y = solver(cv2, name, mount, T_base_ee, T_cam_board)
            except cv2.error:
                continue  # a degenerate set for this method; the others still report
            if np.all(np.isfinite(X)) and np.all(np.isfinite(Y)):
                methods.append(MethodResult(name, X, Y, _residuals(mount, X, Y, usable, T_cam_board, K, dist)))
    finally:
        cv2.utils.logging.setLogLevel(log_level)
    if not methods:
        raise CalibrationError(f"no hand-eye solver found a solution from {len(usable)} poses for camera {camera!r}")
    best = min(methods, key=lambda m: m.rms_reprojection_px)
    if refine:
        X, Y = _refine(mount, best.T_cam_ref, best.T_other, usable, K, dist)
        methods.append(MethodResult(REFINED, X, Y, _residuals(mount, X, Y, usable, T_cam_board, K, dist)))
    chosen = min(methods, key=lambda m: m.rms_reprojection_px)
    return HandEyeResult(camera=camera, mount=mount, method=chosen.name, T_cam_ref=chosen.T_cam_ref,
                         T_other=chosen.T_other, methods=tuple(methods), residuals=chosen.residuals, skipped=skipped)


Confirm = Callable[[list[tuple[np.ndarray, str]], str], bool]


def _noop(_: str) -> None:
    pass


def survey(arm: Arm, clock: Clock, camera: Camera, board: BoardSpec, *, mount: str, box_min_m, box_max_m,
           K: np.ndarray, dist: np.ndarray | None = None, plan: ViewPlan = HANDEYE_PLAN,
           limits: MotionLimits = MotionLimits(), confirm: Confirm | None = None,
           report: Callable[[str], None] = _noop) -> list[Capture]:
    """Still views of the board from automatically generated arm poses, starting where the arm is.

    The start pose must show the board. Small turns around it give a coarse hand-eye solution (with the
    intrinsics `K`, `dist` given, e.g. the factory ones), which then places `plan.n_views` views inside the
    workspace box. `confirm(poses, what)` is asked before each set of moves (False cancels); the arm
    returns to the start pose at the end.
    """
    if mount not in MOUNTS:
        raise ValueError(f"mount must be one of {MOUNTS}, got {mount!r}")
    start = capture_still(arm, clock, camera, board, limits, label="start")
    if start.view is None:
        where = "lying in the camera's view" if mount == "ee" else "held by the gripper, facing the camera"
        raise CalibrationError(f"camera {camera.name!r} does not see the board at the start pose: move the arm so "
                               f"that the whole board ({where}) is in view, then start again")
    check_in_box(start.T_base_ee, box_min_m, box_max_m, "the start pose")
    captures = [start]

    def visit(poses: list[tuple[np.ndarray, str]], what: str) -> None:
        for T, label in poses:
            check_in_box(T, box_min_m, box_max_m, label)
        if confirm is not None and not confirm(poses, what):
            raise CalibrationError(f"cancelled before {what}; the arm was not moved for it")
        for i, (T, label) in enumerate(poses):
            move_to(arm, clock, T, limits)
            capture = capture_still(arm, clock, camera, board, limits, label=label)
            captures.append(capture)
            seen = "board seen" if capture.view is not None else "board NOT seen"
            report(f"{what}: pose {i + 1}/{len(poses)} ({label}): {seen}")

    visit(nudge_poses(start.T_base_ee), "small turns around the start pose")
    coarse = solve_handeye(captures, K, dist, mount, camera=camera.name, min_poses=4)
    T_cam_board_start = board_pose(start.view, K, dist)[0]
    planned = plan_views(mount, start.T_base_ee, T_cam_board_start, coarse.T_cam_ref, coarse.T_other, K,
                         start.view.image_size, board, box_min_m, box_max_m, plan)
    if len(planned) < plan.n_views:
        report(f"only {len(planned)} of {plan.n_views} planned views fit in the workspace box and the rotation limit")
    visit(planned, "planned views")
    move_to(arm, clock, start.T_base_ee, limits)
    return captures


def calibrate_handeye(arm: Arm, clock: Clock, camera: Camera, board: BoardSpec, *, mount: str, box_min_m, box_max_m,
                      K: np.ndarray | None = None, dist: np.ndarray | None = None, teleop: Teleop | None = None,
                      plan: ViewPlan = HANDEYE_PLAN, limits: MotionLimits = MotionLimits(),
                      jog: JogSettings = JogSettings(), confirm: Confirm | None = None,
                      report: Callable[[str], None] = _noop) -> HandEyeResult:
    """Where `camera` is: T_cam_ee (mount "ee") or T_cam_base (mount "fixed").

    Arm poses are generated inside the box (see `survey`), or, with `teleop`, the operator drives the arm
    and presses success at each pose (discard drops the last one, fail ends). `K`, `dist`: the camera's
    calibrated intrinsics (default: the camera's own, from a frame, without distortion).
    """
    if K is None:
        K = camera.read().intrinsics
        if K is None:
            raise CalibrationError(f"camera {camera.name!r} reports no intrinsics: calibrate them first "
                                   "(dojo calibrate intrinsics) and pass them")
    if teleop is not None:
        captures: list[Capture] = []

        def take(i: int) -> None:
            capture = capture_still(arm, clock, camera, board, limits, label=f"pose {i}")
            captures.append(capture)
            report(f"pose {i}: {'board seen' if capture.view is not None else 'board NOT seen: pose not used'}")

        jog_and_take(arm, clock, teleop, take=take, drop=lambda: captures.pop() if captures else None,
                     box_min_m=box_min_m, box_max_m=box_max_m, settings=jog)
    else:
        captures = survey(arm, clock, camera, board, mount=mount, box_min_m=box_min_m, box_max_m=box_max_m,
                          K=K, dist=dist, plan=plan, limits=limits, confirm=confirm, report=report)
    return solve_handeye(captures, K, dist, mount, camera=camera.name)
