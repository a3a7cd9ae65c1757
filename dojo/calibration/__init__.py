"""Station calibration: camera intrinsics, hand-eye (camera poses), the workspace box and the latencies between
command, motion and image, written to one calibration file per station with a content-hash id.

Each calibration is a plain function of the station's devices (`Arm`, `Camera`, `Clock`, `Teleop`) and
options, returning a result that `file.update_calibration(path, result)` stores:

- `intrinsics.calibrate_intrinsics(camera, clock, board, arm=..., mount=...)` -> IntrinsicsResult
- `handeye.calibrate_handeye(arm, clock, camera, board, mount="ee" | "fixed", ...)` -> HandEyeResult
- `workspace.workspace_from_teleop(arm, clock, teleop, ...)`, `workspace.workspace_from_table(...)` -> WorkspaceResult
- `latency.measure_command_latency(arm, clock, ...)` -> CommandLatency,
  `latency.measure_capture_to_arrival(camera, clock)` -> CameraLatency,
  `latency.measure_motion_to_image(arm, clock, camera, board, K, ...)` -> MotionToImage
- `dojo.robot.pairing.pair_frames_with_states(frame_times_s, motion_to_image_s, history)`: the arm state each
  frame shows (in robot/, since the env uses it).

OpenCV (the `calib` extra) is imported only when a board is generated or detected, so the robot machine can
read a calibration file and pair frames without it. The twin checks every one of these against its ground
truth (dojo/sim/calibration_scene.py, tests/test_calibration.py, benchmarks/calibration.py).
"""
