"""Rotation helpers against hand-computed rotations."""

import numpy as np

from dojo.robot import geometry as g


def test_rotvec_quat_round_trip_and_matrix():
    rotvec = np.array([0.0, 0.0, np.pi / 2])
    q = g.rotvec_to_quat(rotvec)
    np.testing.assert_allclose(q, [np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)], atol=1e-12)
    np.testing.assert_allclose(g.quat_to_rotvec(q), rotvec, atol=1e-12)
    # 90 degrees about z takes x to y.
    np.testing.assert_allclose(g.quat_to_mat(q) @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_quat_mul_composes_rotations():
    qz = g.rotvec_to_quat([0, 0, np.pi / 2])
    qx = g.rotvec_to_quat([np.pi / 2, 0, 0])
    composed = g.quat_to_mat(g.quat_mul(qz, qx))
    np.testing.assert_allclose(composed, g.quat_to_mat(qz) @ g.quat_to_mat(qx), atol=1e-12)


def test_quat_limit_step_caps_the_angle():
    start = np.array([1.0, 0, 0, 0])
    goal = g.rotvec_to_quat([0, 1.0, 0])
    limited = g.quat_limit_step(start, goal, 0.25)
    np.testing.assert_allclose(g.quat_to_rotvec(limited), [0, 0.25, 0], atol=1e-12)
    np.testing.assert_allclose(g.quat_limit_step(start, goal, 2.0), goal, atol=1e-12)
