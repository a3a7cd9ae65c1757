"""Calibration on the twin against its ground truth (intrinsics from fovy, camera poses, injected latencies,
the workspace's true corners), the errors a person gets when the board is not in view or too few views
were taken, the calibration file's round trip and id, and the pairing of frames with arm states.

Tolerances are looser than benchmarks/calibration.py's targets, so that these checks do not flake.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("cv2")

from dojo.calibration.board import CalibrationError, detect_board  # noqa: E402
from dojo.calibration.file import (CalibrationFileError, StationCalibration, load_calibration,  # noqa: E402
                                  update_calibration)
from dojo.calibration.frames import T_base_ee, invert, pose_difference  # noqa: E402
from dojo.calibration.handeye import calibrate_handeye, solve_handeye  # noqa: E402
from dojo.calibration.intrinsics import calibrate_intrinsics, solve_intrinsics  # noqa: E402
from dojo.calibration.latency import (align_motion, fit_step_delay, measure_capture_to_arrival,  # noqa: E402
                                      measure_command_latency, measure_motion_to_image, _response)
from dojo.calibration.motion import Capture, move_to  # noqa: E402
from dojo.robot.pairing import pair_frames_with_states, state_at  # noqa: E402
from dojo.calibration.workspace import workspace_from_table, workspace_from_teleop  # noqa: E402
from dojo.robot.interfaces import ArmState  # noqa: E402
from dojo.sim.calibration_scene import make_calibration_twin  # noqa: E402
from dojo.sim.waypoint_operator import WaypointOperator  # noqa: E402
from dojo.sim.world import WORKSPACE_MAX_M, WORKSPACE_MIN_M  # noqa: E402

BOX = dict(box_min_m=WORKSPACE_MIN_M, box_max_m=WORKSPACE_MAX_M)


def _front_camera_twin(**kwargs):
    """The board on the gripper, lowered into the front camera's view."""
    twin = make_calibration_twin("gripper", cameras=("front",), **kwargs)
    T = T_base_ee(twin.arm.state())
    T[:3, 3] += [0.05, 0.0, -0.15]
    move_to(twin.arm, twin.clock, T)
    return twin


def test_intrinsics_wrist_camera_with_injected_distortion_matches_fovy_and_names_factory_difference():
    dist = np.array([-0.12, 0.05, 0.0, 0.0, 0.0])
    twin = make_calibration_twin("table", cameras=("wrist",), dist=dist)
    camera, K_true = twin.cameras["wrist"], twin.true_K("wrist")
    camera.intrinsics = K_true @ np.diag([1.04, 1.04, 1.0])  # a factory K 4 % off: must be warned about
    result = calibrate_intrinsics(camera, twin.clock, twin.board, arm=twin.arm, mount="ee", **BOX)
    assert np.allclose(np.diag(result.K)[:2] / K_true[0, 0], 1.0, atol=0.01)
    assert np.hypot(*(result.K[:2, 2] - K_true[:2, 2])) < 2.0
    assert abs(result.dist[0] - dist[0]) < 0.02 and abs(result.dist[1] - dist[1]) < 0.03
    assert result.rms_px < 0.3 and len(result.views) >= 20
    assert result.focal_diff_pct == pytest.approx(100 * (1 - 1 / 1.04), abs=1.0)
    assert any("focal length differs from the factory" in w for w in result.warnings)
    twin.close()


def test_handeye_eye_in_hand_finds_the_wrist_camera():
    twin = make_calibration_twin("table", cameras=("wrist",))
    result = calibrate_handeye(twin.arm, twin.clock, twin.cameras["wrist"], twin.board, mount="ee", **BOX)
    mm, deg = pose_difference(invert(result.T_cam_ref), invert(twin.true_T_cam_ee("wrist")))
    assert mm < 4.0 and deg < 0.6
    assert {"tsai", "park", "shah", "reprojection"} <= {m.name for m in result.methods}
    assert len(result.residuals) >= 15 and max(r.reprojection_px for r in result.residuals) < 1.0
    entry = result.to_dict()
    assert "T_cam_ee" in entry and entry["mount"] == "ee" and len(entry["residuals"]) == len(result.residuals)
    twin.close()


def test_handeye_eye_to_hand_finds_the_front_camera():
    twin = _front_camera_twin()
    result = calibrate_handeye(twin.arm, twin.clock, twin.cameras["front"], twin.board, mount="fixed", **BOX)
    mm, deg = pose_difference(invert(result.T_cam_ref), invert(twin.true_T_cam_base("front")))
    assert mm < 4.0 and deg < 0.6
    assert "T_cam_base" in result.to_dict()
    twin.close()


def test_handeye_from_poses_the_operator_drives_to():
    twin = make_calibration_twin("table", cameras=("wrist",))
    start = twin.arm.state()
    R0 = start.ee_quat_wxyz
    from dojo.robot import geometry

    poses = []
    for i, rotvec in enumerate([(0.2, 0, 0), (-0.2, 0, 0), (0, 0.2, 0), (0, -0.2, 0), (0, 0, 0.3), (0.15, 0.15, -0.2)]):
        quat = geometry.quat_mul(geometry.rotvec_to_quat(np.array(rotvec)), R0)
        poses.append((start.ee_pos_m + np.array([0.01 * (i % 3 - 1), 0.015 * (i % 2), 0.0]), quat))
    operator = WaypointOperator(twin.arm, poses)
    result = calibrate_handeye(twin.arm, twin.clock, twin.cameras["wrist"], twin.board, mount="ee",
                               teleop=operator, **BOX)
    assert operator.presses == ["success"] * len(poses) + ["fail"]
    mm, deg = pose_difference(invert(result.T_cam_ref), invert(twin.true_T_cam_ee("wrist")))
    assert mm < 4.0 and deg < 0.6 and len(result.residuals) == len(poses)
    twin.close()


def test_board_out_of_view_says_what_to_do():
    twin = make_calibration_twin("gripper", cameras=("front",))  # at home the board is above the front view
    with pytest.raises(CalibrationError, match="does not see the board at the start pose: move the arm"):
        calibrate_handeye(twin.arm, twin.clock, twin.cameras["front"], twin.board, mount="fixed", **BOX)
    twin.close()


def test_too_few_views_and_poses_say_how_many_are_needed():
    twin = make_calibration_twin("table", cameras=("wrist",))
    view = detect_board(twin.cameras["wrist"].read().rgb, twin.board)
    assert view is not None
    with pytest.raises(CalibrationError, match="intrinsics need the board in >= 8 views, camera 'wrist' has 3"):
        solve_intrinsics([view] * 3, view.image_size, camera="wrist")
    captures = [Capture(T_base_ee(twin.arm.state()), view, f"pose {i}") for i in range(3)]
    with pytest.raises(CalibrationError, match="needs the board in view at >= 5 poses"):
        solve_handeye(captures, twin.true_K("wrist"), None, "ee", camera="wrist")
    # Enough poses, but all the same: rotations are what hand-eye needs.
    with pytest.raises(CalibrationError, match="do not rotate enough"):
        solve_handeye(captures * 2, twin.true_K("wrist"), None, "ee", camera="wrist")
    twin.close()


@pytest.mark.parametrize("command_s, arrival_s, offset_s", [(0.04, 0.08, 0.05)])
def test_latencies_match_the_injected_ones(command_s, arrival_s, offset_s):
    twin = make_calibration_twin("table", cameras=("wrist",), command_latency_s=command_s, camera_latency_s=arrival_s,
                                 timestamp_offset_s=offset_s)
    camera = twin.cameras["wrist"]
    command = measure_command_latency(twin.arm, twin.clock, axes="xz", **BOX)
    assert command.delay_s == pytest.approx(command_s, abs=0.008)
    capture = measure_capture_to_arrival(camera, twin.clock, frames=20)
    assert capture.capture_to_arrival_s == pytest.approx(arrival_s - offset_s, abs=0.005)
    motion = measure_motion_to_image(twin.arm, twin.clock, camera, twin.board, twin.true_K("wrist"),
                                     duration_s=3.0, **BOX)
    assert motion.latency_s == pytest.approx(offset_s, abs=0.008)
    twin.close()


def test_step_delay_fit_and_motion_alignment_recover_known_delays():
    t = np.arange(0, 0.6, 0.002)
    y = 0.02 * _response(t - 0.037, 25.0)
    delay, rate, _ = fit_step_delay(t, y)
    assert delay == pytest.approx(0.037, abs=0.0005) and rate == pytest.approx(25.0, rel=0.05)
    # The board's seen position is an affine map of where the arm was 70 ms before the frame's stamp.
    state_t = np.arange(0, 4, 0.004)
    ee = np.stack([np.sin(2.8 * state_t), np.sin(4.4 * state_t + 1), np.sin(6.0 * state_t)], axis=1) * 0.03
    ee_pose = np.hstack([ee, np.zeros_like(ee)])
    frame_t = np.arange(0.4, 3.8, 1 / 30)
    seen = np.stack([np.interp(frame_t - 0.07, state_t, ee[:, k]) for k in range(3)], axis=1) @ np.diag([1, -2, 0.5])
    delay, misfit, _ = align_motion(frame_t, seen + 0.3, state_t, ee_pose)
    assert delay == pytest.approx(0.07, abs=0.001) and misfit < 1e-4


def test_workspace_from_the_corners_the_operator_drives_to():
    twin = make_calibration_twin("table", cameras=())
    lo, hi = np.array([0.40, -0.15, 0.08]), np.array([0.55, 0.12, 0.30])
    operator = WaypointOperator(twin.arm, [lo, hi, (lo + hi) / 2])
    result = workspace_from_teleop(twin.arm, twin.clock, operator, reach_min_m=WORKSPACE_MIN_M,
                                   reach_max_m=WORKSPACE_MAX_M)
    assert np.allclose(result.min_m, lo, atol=0.005) and np.allclose(result.max_m, hi, atol=0.005)
    assert len(result.points_m) == 3 and result.source == "teleop"
    # Two corners at one height make no box: the error says which axis is thin.
    operator = WaypointOperator(twin.arm, [lo, np.array([hi[0], hi[1], lo[2]])])
    with pytest.raises(CalibrationError, match="span less than 20 mm along z"):
        workspace_from_teleop(twin.arm, twin.clock, operator, reach_min_m=WORKSPACE_MIN_M, reach_max_m=WORKSPACE_MAX_M)


def test_workspace_above_the_table_plane():
    twin = make_calibration_twin("table", cameras=("front",))
    result = workspace_from_table(twin.cameras["front"], twin.clock, twin.board, twin.true_K("front"), None,
                                  invert(twin.true_T_cam_base("front")), xy_min_m=(0.35, -0.25),
                                  xy_max_m=(0.65, 0.25), margin_m=0.02, height_m=0.3, board_thickness_m=0.002)
    assert result.table_z_m == pytest.approx(0.0, abs=0.005) and result.table_tilt_deg < 0.5
    assert result.min_m[2] == pytest.approx(0.02, abs=0.005) and result.max_m[2] == pytest.approx(0.32, abs=0.005)
    assert result.min_m[:2] == (0.35, -0.25) and result.max_m[:2] == (0.65, 0.25)
    twin.close()


def _intrinsics_result(camera="front"):
    from dojo.calibration.intrinsics import IntrinsicsResult, ViewError

    K = np.array([[600.123456789, 0, 319.5], [0, 600.2, 239.5], [0, 0, 1]])
    return IntrinsicsResult(camera=camera, image_size=(480, 640), K=K, dist=np.array([-0.1, 0.05, 0, 0, 0]),
                            rms_px=0.12, views=(ViewError("view 0", 40, 0.1),), dropped=(), coverage=np.ones((6, 8)),
                            factory_K=K * 1.01)


def test_calibration_file_round_trip_and_id(tmp_path):
    from dojo.calibration.latency import CommandLatency
    from dojo.calibration.workspace import WorkspaceResult

    path = tmp_path / "station.calib.json"
    cal = update_calibration(path, _intrinsics_result())
    first_id = cal.id
    cal = update_calibration(path, WorkspaceResult(min_m=(0.3, -0.2, 0.02), max_m=(0.6, 0.2, 0.4), source="teleop"))
    cal = update_calibration(path, CommandLatency(delay_s=0.0312, steps=()))
    loaded = load_calibration(path)
    assert loaded.id == cal.id != first_id and len(loaded.id) == 12
    assert np.array_equal(loaded.K("front"), _intrinsics_result().K)  # floats read back exactly
    assert loaded.workspace_box() == ((0.3, -0.2, 0.02), (0.6, 0.2, 0.4))
    assert loaded.command_to_motion_s() == 0.0312 and loaded.T_cam_base("front") is None
    assert set(loaded.section_dates()) == {"cameras/front/intrinsics", "workspace", "arm/latency"}
    assert 0 <= loaded.age_days() < 1
    # The same content gives the same id whatever the date of the last write.
    assert StationCalibration(loaded.content, date="2000-01-01T00:00:00+00:00").id == loaded.id
    # A hand edit is caught by the id.
    path.write_text(path.read_text().replace("0.0312", "0.05"))
    with pytest.raises(CalibrationFileError, match="changed after it was written"):
        load_calibration(path)
    with pytest.raises(CalibrationFileError, match="no calibration file at"):
        load_calibration(tmp_path / "missing.json")


def _state(t: float, x: float) -> ArmState:
    return ArmState(joint_q_rad=np.full(7, x), joint_dq_rad_s=np.zeros(7), ee_pos_m=np.array([x, 2 * x, 0.1]),
                    ee_quat_wxyz=np.array([1.0, 0, 0, 0]), ee_vel=np.zeros(6), gripper_width_m=0.04, timestamp_s=t)


def test_frames_pair_with_the_state_at_their_capture_time():
    history = [_state(t, 0.1 * t) for t in np.arange(0.0, 1.0, 0.01)]  # x moves 0.1 m/s
    frames_s = [0.5, 0.734]
    paired = pair_frames_with_states(frames_s, 0.05, history)
    assert [p.timestamp_s for p in paired] == pytest.approx([0.45, 0.684])
    assert paired[1].ee_pos_m == pytest.approx([0.0684, 0.1368, 0.1])  # between two recorded states
    assert paired[1].joint_q_rad == pytest.approx(np.full(7, 0.0684))
    with pytest.raises(ValueError, match="no arm state near time 1.2000 s"):
        state_at(history, 1.2)
    turned = dataclasses.replace(history[1], ee_quat_wxyz=-np.array([np.cos(0.1), np.sin(0.1), 0, 0]))
    half = state_at([history[0], turned], 0.005)  # -q is q: blended the short way
    assert half.ee_quat_wxyz == pytest.approx([np.cos(0.05), np.sin(0.05), 0, 0], abs=1e-3)


def test_intrinsics_from_a_board_a_person_holds_up():
    from dojo.sim.calibration_scene import BoardCarrier, person_board_poses

    twin = make_calibration_twin("person", cameras=("front",))
    carrier = BoardCarrier(twin, person_board_poses(twin, "front", n=12))
    shown = []
    result = calibrate_intrinsics(twin.cameras["front"], twin.clock, twin.board, hand_held_n_views=12,
                                  hand_held_timeout_s=carrier.duration_s, report=shown.append)
    K_true = twin.true_K("front")
    assert len(result.views) >= 8
    assert np.allclose(np.diag(result.K)[:2] / K_true[0, 0], 1.0, atol=0.02)
    assert np.hypot(*(result.K[:2, 2] - K_true[:2, 2])) < 5.0
    assert shown and "corners" in shown[0] and "|" in shown[0]  # the live coverage map
    twin.close()
