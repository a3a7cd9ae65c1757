"""Rigid transforms as 4x4 matrices, named `T_a_b`: it maps points in frame b to frame a (the pose of b in a).

Calibration works in matrices because OpenCV's solvers do; the robot's interfaces speak positions and
wxyz quaternions, and `T_base_ee(state)` converts between the two.
"""

from __future__ import annotations

import numpy as np

from dojo.robot import geometry
from dojo.robot.interfaces import ArmState


def transform(rotation: np.ndarray, translation_m: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
    T[:3, 3] = np.asarray(translation_m, dtype=np.float64).reshape(3)
    return T


def from_pos_quat(pos_m: np.ndarray, quat_wxyz: np.ndarray) -> np.ndarray:
    return transform(geometry.quat_to_mat(np.asarray(quat_wxyz, dtype=np.float64)), pos_m)


def to_pos_quat(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position and a unit wxyz quaternion (w >= 0) of a 4x4 transform."""
    return T[:3, 3].copy(), mat_to_quat(T[:3, :3])


def T_base_ee(state: ArmState) -> np.ndarray:
    """The end-effector pose an arm reports, as a matrix."""
    return from_pos_quat(state.ee_pos_m, state.ee_quat_wxyz)


def invert(T: np.ndarray) -> np.ndarray:
    R, t = T[:3, :3], T[:3, 3]
    return transform(R.T, -R.T @ t)


def mat_to_quat(R: np.ndarray) -> np.ndarray:
    """wxyz quaternion of a rotation matrix (Shepperd's method: stable for every angle)."""
    R = np.asarray(R, dtype=np.float64)
    trace = np.trace(R)
    diag = np.diag(R)
    i = int(np.argmax([trace, *diag]))
    if i == 0:
        s = 2.0 * np.sqrt(1.0 + trace)
        q = [0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif i == 1:
        s = 2.0 * np.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2])
        q = [(R[2, 1] - R[1, 2]) / s, 0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif i == 2:
        s = 2.0 * np.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2])
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1])
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s]
    return geometry.quat_normalize(np.array(q))


def rotvec_to_mat(rotvec_rad: np.ndarray) -> np.ndarray:
    return geometry.quat_to_mat(geometry.rotvec_to_quat(np.asarray(rotvec_rad, dtype=np.float64)))


def mat_to_rotvec(R: np.ndarray) -> np.ndarray:
    return geometry.quat_to_rotvec(mat_to_quat(R))


def rotation_angle_deg(R_a: np.ndarray, R_b: np.ndarray) -> float:
    """The angle of the rotation that takes R_b to R_a, in degrees."""
    cos = (np.trace(np.asarray(R_a)[:3, :3].T @ np.asarray(R_b)[:3, :3]) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def pose_difference(T_a: np.ndarray, T_b: np.ndarray) -> tuple[float, float]:
    """(translation difference in mm, rotation difference in degrees) between two poses of one frame."""
    return float(np.linalg.norm(T_a[:3, 3] - T_b[:3, 3]) * 1e3), rotation_angle_deg(T_a, T_b)


def project_rotation(M: np.ndarray) -> np.ndarray:
    """The rotation matrix nearest (Frobenius) to M."""
    U, _, Vt = np.linalg.svd(M)
    return U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt


def mean_transform(Ts: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """The chordal mean of poses: mean translation, rotation nearest to the mean rotation matrix."""
    Ts = np.asarray(Ts, dtype=np.float64)
    return transform(project_rotation(Ts[:, :3, :3].mean(axis=0)), Ts[:, :3, 3].mean(axis=0))


def as_list(T: np.ndarray) -> list[list[float]]:
    """A 4x4 matrix as nested lists of floats, for a JSON file."""
    return [[float(v) for v in row] for row in np.asarray(T)]
