"""Arm poses for calibration views, generated inside the workspace box.

Two stages, because where the arm must go to show the board to the camera depends on the answer:
1. `nudge_poses`: small turns and shifts around the start pose (where the operator made the board visible).
   They keep the board in view whatever the camera's mount, and give a coarse hand-eye solution.
2. `plan_views`: with that coarse solution, poses that put the board where it should be seen: its centre
   spread over the image, at varied distances, tilted and rolled against the line of sight. The same
   planner serves intrinsics (coverage of the image, strong tilts) and hand-eye (rotation diversity).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dojo.calibration.board import BoardSpec
from dojo.calibration.frames import invert, rotation_angle_deg, rotvec_to_mat, transform


@dataclasses.dataclass(frozen=True)
class ViewPlan:
    """Options of `plan_views`. Angles in degrees; depth relative to the board's distance at the start."""

    n_views: int = 16
    tilt_deg: tuple[float, float] = (10.0, 35.0)  # board normal against the line of sight
    roll_deg: float = 30.0  # turn about the line of sight, either way
    depth_scale: tuple[float, float] = (0.85, 1.25)
    image_margin: float = 0.2  # the board's centre stays this fraction of the image away from its edges
    min_visible: float = 0.9  # fraction of the board's corners that must project inside the image
    max_rotation_deg: float = 50.0  # hand rotation from the start pose, to keep the wrist off its limits
    box_margin_m: float = 0.01  # inside the workspace box by this much
    min_height_m: float = 0.05  # and at least this far above its floor
    seed: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.n_views, int) and self.n_views >= 1):
            raise ValueError(f"n_views must be a positive integer, got {self.n_views!r}")
        if not 0 <= self.tilt_deg[0] <= self.tilt_deg[1] < 80:
            raise ValueError(f"tilt_deg must be (lo, hi) with 0 <= lo <= hi < 80, got {self.tilt_deg!r}")
        if not 0 < self.depth_scale[0] <= self.depth_scale[1]:
            raise ValueError(f"depth_scale must be (lo, hi) with 0 < lo <= hi, got {self.depth_scale!r}")
        if not 0 <= self.image_margin < 0.5:
            raise ValueError(f"image_margin must be a fraction in [0, 0.5), got {self.image_margin!r}")


# Presets: hand-eye wants rotations about many axes; intrinsics wants the board all over the image, tilted.
HANDEYE_PLAN = ViewPlan()
INTRINSICS_PLAN = ViewPlan(n_views=30, tilt_deg=(10.0, 45.0), image_margin=0.08, min_visible=0.5,
                           depth_scale=(0.7, 1.4), max_rotation_deg=60.0)


def nudge_poses(T_start: np.ndarray, turn_deg: float = 8.0, shift_m: float = 0.02) -> list[tuple[np.ndarray, str]]:
    """Six poses around the start: turned +-turn_deg about each hand axis (about the hand's own point),
    each with a small shift, so the board stays in view whichever way the camera looks."""
    poses = []
    for axis in range(3):
        for sign in (1.0, -1.0):
            rotvec = np.zeros(3)
            rotvec[axis] = sign * np.deg2rad(turn_deg)
            shift = np.zeros(3)
            shift[(axis + 1) % 3] = sign * shift_m
            R = T_start[:3, :3] @ rotvec_to_mat(rotvec)
            poses.append((transform(R, T_start[:3, 3] + shift), f"nudge {'xyz'[axis]}{'+' if sign > 0 else '-'}"))
    return poses


def _min_rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking unit vector a to unit vector b."""
    axis = np.cross(a, b)
    s, c = np.linalg.norm(axis), float(np.dot(a, b))
    if s < 1e-12:
        return np.eye(3)  # parallel; opposite never happens here (the board faces the camera)
    return rotvec_to_mat(axis / s * np.arctan2(s, c))


def desired_board_poses(T_cam_board_start: np.ndarray, K: np.ndarray, image_size: tuple[int, int],
                        board: BoardSpec, plan: ViewPlan, rng: np.random.Generator):
    """An endless stream of (T_cam_board, label): board views spread over the image, tilted and rolled."""
    height, width = image_size
    center_cam = T_cam_board_start[:3, :3] @ board.center_m() + T_cam_board_start[:3, 3]
    depth0 = float(np.linalg.norm(center_cam))
    R0 = T_cam_board_start[:3, :3]
    m = plan.image_margin
    cells = [(fx, fy) for fy in (m, 0.5, 1 - m) for fx in (m, 0.5, 1 - m)]  # 3x3 over the image
    K_inv = np.linalg.inv(K)
    k = 0
    while True:
        fx, fy = cells[k % len(cells)]
        jitter = rng.uniform(-0.5, 0.5, 2) * (0.5 - m) / 2
        u, v = (np.clip(fx + jitter[0], m, 1 - m) * (width - 1), np.clip(fy + jitter[1], m, 1 - m) * (height - 1))
        ray = K_inv @ np.array([u, v, 1.0])
        ray /= np.linalg.norm(ray)
        # Face the camera (board z along the ray), then roll about the ray, then tilt about an axis across it.
        R_face = _min_rotation(R0[:, 2], ray) @ R0
        roll = rotvec_to_mat(ray * np.deg2rad(rng.uniform(-plan.roll_deg, plan.roll_deg)))
        across = np.cross(ray, rng.normal(size=3))
        across /= np.linalg.norm(across)
        tilt = rotvec_to_mat(across * np.deg2rad(rng.uniform(*plan.tilt_deg)))
        R = tilt @ roll @ R_face
        center = ray * depth0 * rng.uniform(*plan.depth_scale)
        yield transform(R, center - R @ board.center_m()), f"view {k} at ({u:.0f}, {v:.0f}) px"
        k += 1


def _visible_fraction(T_cam_board: np.ndarray, K: np.ndarray, image_size, board: BoardSpec) -> float:
    pts = board.corner_points_m() @ T_cam_board[:3, :3].T + T_cam_board[:3, 3]
    if np.any(pts[:, 2] <= 0.05):
        return 0.0
    uv = (pts @ K.T)[:, :2] / pts[:, 2:]
    height, width = image_size
    inside = (uv[:, 0] >= 0) & (uv[:, 0] <= width - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= height - 1)
    return float(inside.mean())


def arm_pose_for(mount: str, T_cam_board: np.ndarray, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """T_base_ee that shows the board at T_cam_board, given a hand-eye solution (X, Y) (see handeye.predict)."""
    if mount == "ee":  # T_cam_board = T_cam_ee T_ee_base T_base_board
        return invert(invert(X) @ T_cam_board @ invert(Y))
    return invert(X) @ T_cam_board @ invert(Y)  # T_cam_board = T_cam_base T_base_ee T_ee_board


def plan_views(mount: str, T_start: np.ndarray, T_cam_board_start: np.ndarray, X: np.ndarray, Y: np.ndarray,
               K: np.ndarray, image_size: tuple[int, int], board: BoardSpec, box_min_m, box_max_m,
               plan: ViewPlan = HANDEYE_PLAN, max_tries: int = 4000) -> list[tuple[np.ndarray, str]]:
    """Up to `plan.n_views` arm poses (T_base_ee, label) inside the box that show the board as planned."""
    rng = np.random.default_rng(plan.seed)
    lo = np.asarray(box_min_m, float) + plan.box_margin_m
    hi = np.asarray(box_max_m, float) - plan.box_margin_m
    lo[2] = max(lo[2], box_min_m[2] + plan.min_height_m)
    poses = []
    for tries, (T_cam_board, label) in enumerate(desired_board_poses(T_cam_board_start, K, image_size, board,
                                                                     plan, rng)):
        if len(poses) >= plan.n_views or tries >= max_tries:
            break
        if _visible_fraction(T_cam_board, K, image_size, board) < plan.min_visible:
            continue
        T = arm_pose_for(mount, T_cam_board, X, Y)
        if np.any(T[:3, 3] < lo) or np.any(T[:3, 3] > hi):
            continue
        if rotation_angle_deg(T[:3, :3], T_start[:3, :3]) > plan.max_rotation_deg:
            continue
        poses.append((T, label))
    return poses
