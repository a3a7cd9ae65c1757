"""Station configs and the device factory, on the twin: the shipped files load, bad values are named, the twin
built by the factory is the twin, and each reward source, reset mode and device fault behaves as configured."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from dojo.launch.cli import main
from dojo.robot.factory import make_robot_env, station_spaces
from dojo.robot.interfaces import DeviceError
from dojo.robot.station import ROBOTS_DIR, load_station
from dojo.robot.teleop.keyboard import KeyboardTeleop
from dojo.sim import make_env


def twin(*overrides):
    return make_robot_env(load_station("twin", list(overrides))[0])


@pytest.mark.parametrize("name", sorted(p.stem for p in ROBOTS_DIR.glob("*.yaml")))
def test_the_shipped_station_files_load(name):
    station, data = load_station(name)
    assert station.name and station.cameras and data["arm"]["driver"] == station.arm.driver
    assert load_station(data)[0] == station  # a run's saved copy loads to the same station


@pytest.mark.parametrize("override, words", [
    ("arm.drvier=twin", "robot.arm has unknown key(s) ['drvier']"),
    ("control_hz=0", "robot.control_hz must be > 0, got 0.0"),
    ("task.reward.source=magic", "robot.task.reward.source must be one of"),
    ("task.reward.source=pose", "robot.task.reward.source=pose needs robot.task.reward.target_pos_m"),
    ("cameras.front.crop=[0,0,200,10]", "robot.cameras.front.crop [0, 0, 200, 10] (top, left, height, width) must"),
    ("safety.workspace_min_m=[1,1,1]", "workspace_box.min_m must be < max_m"),
    ("action.dim=5", "robot.action.dim must be 4 or 7, got 5"),
    ("task.max_episode_steps=ten", "robot.task.max_episode_steps must be a int, got 'ten'"),
    ("safety.max_step_m=[1]", "robot.safety.max_step_m must be a finite number"),
])
def test_bad_station_values_are_named(override, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        load_station("twin", [override])


def test_the_factorys_twin_is_the_twin():
    """The station route (factory + twin drivers) gives the same spaces, states and images as the twin's own
    builder, step for step."""
    station, _ = load_station("twin", ["task.obs_mode=both"])
    built, direct = make_robot_env(station), make_env("pick_cube", obs_mode="both")
    assert built.observation_space == direct.observation_space == station_spaces(station)[0]
    rng = np.random.default_rng(0)
    obs_a, _ = built.reset(seed=3)
    obs_b, _ = direct.reset(seed=3)
    for _ in range(15):
        action = rng.uniform(-1, 1, 4).astype(np.float32)
        for key in obs_a:
            np.testing.assert_array_equal(obs_a[key], obs_b[key], err_msg=key)
        obs_a, reward_a, *_ = built.step(action)
        obs_b, reward_b, *_ = direct.step(action)
        assert reward_a == reward_b
    built.close(), direct.close()


def test_pose_reward_succeeds_where_the_station_says():
    target = [0.5, 0.05, 0.2]
    env = twin("task.reward.source=pose", f"task.reward.target_pos_m={target}", "task.reward.tolerance_m=0.01")
    env.reset(seed=0)
    successes = []
    for _ in range(60):
        pos = env.arm.state().ee_pos_m
        action = np.append(np.clip((np.array(target) - pos) / 0.03, -1, 1), 1.0).astype(np.float32)
        _, reward, terminated, _, info = env.step(action)
        successes.append(info["success"])
        if terminated:
            break
    assert terminated and reward == 1.0 and successes.count(True) == 1
    assert np.linalg.norm(env.arm.state().ee_pos_m - target) < 0.01
    env.close()


def test_human_reward_comes_from_the_operators_keys(terminal):
    master, slave = terminal
    env = make_robot_env(load_station("twin", ["task.reward.source=human"])[0],
                         teleop=KeyboardTeleop(fd=slave, release_timeout_s=0.05))
    env.reset(seed=0)
    zero = np.array([0, 0, 0, 1], np.float32)
    for _ in range(3):  # nobody pressed anything: no success, however the cube lies
        _, reward, terminated, truncated, info = env.step(zero)
        assert not info["success"] and not terminated and not truncated and reward == 0.0
    os.write(master, b"y")  # the success key
    time.sleep(0.1)
    _, reward, terminated, _, info = env.step(zero)
    assert info["success"] and terminated and reward == 1.0
    env.reset(seed=1)
    _, _, terminated, truncated, info = env.step(zero)
    assert not info["success"]  # a new episode forgets the last one's key
    os.write(master, b"n")  # the fail key ends the episode without success
    time.sleep(0.1)
    _, reward, terminated, truncated, info = env.step(zero)
    assert truncated and not terminated and not info["success"] and reward == 0.0
    env.close()


def test_human_reset_waits_for_the_person_and_counts():
    env = twin("task.reset.mode=human", "task.reset.person_delay_s=0.3")
    person = env.reset_fn.person
    started = time.monotonic()
    obs, _ = env.reset(seed=0)
    env.step(np.array([1, 0, 0, 1], np.float32))
    obs_2, _ = env.reset(seed=1)
    assert time.monotonic() - started >= 0.6 and person.resets == 2
    assert not np.array_equal(obs["state"][14:], obs_2["state"][14:])  # the person moved the cube
    np.testing.assert_allclose(obs_2["state"][:3], obs["state"][:3], atol=1e-6)  # the arm is home again
    env.close()
    env = twin("task.reset.mode=human", "task.reset.person_delay_s=5", "task.reset.timeout_s=0.2")
    with pytest.raises(DeviceError, match="no one reset the scene within 0 s"):
        env.reset(seed=0)
    env.close()


def test_scripted_reset_randomises_the_start_inside_the_box():
    env = twin("task.reset.xy_noise_m=0.03", "task.reset.yaw_noise_rad=0.2")
    starts = np.array([env.reset(seed=s)[0]["state"][:3] for s in range(6)])
    home = np.array([0.45, 0.0, 0.3])
    assert np.all(np.abs(starts[:, :2] - home[:2]) <= 0.03 + 0.005) and np.ptp(starts[:, 0]) > 0.01
    assert np.all(starts >= env.safety.box_min_m) and np.all(starts <= env.safety.box_max_m)
    env.close()
    with pytest.raises(ValueError, match="reset.mode=policy practises reset-free: name the task that undoes this"):
        load_station("franka_fr3", ["task.reset.mode=policy"])


def test_a_frozen_camera_stops_the_episode_and_the_arm_holds():
    env = twin("task.obs_mode=pixels", "cameras.wrist.options.freeze_after_s=1.5", "cameras.wrist.stale_after_s=0.5")
    env.reset(seed=0)
    up = np.array([0, 0, 1, 1], np.float32)
    with pytest.raises(DeviceError, match="camera 'wrist' delivered no new frame for 0.5"):
        for _ in range(100):
            env.step(up)
    stopped_at = env.clock.now_s()  # the last new frame came within a control step of 1.5 s
    assert 1.5 - env.period_s + 0.5 <= stopped_at <= 1.5 + 0.5 + env.period_s
    held = env.arm.state().ee_pos_m
    env.clock.wait(1.0)  # the arm holds where it was, not where the last action was heading
    assert np.linalg.norm(env.arm.state().ee_pos_m - held) < 0.005
    env.close()


def test_record_teleop_check_and_eval_run_a_station(tmp_path, capsys):
    assert main(["record", "--robot", "twin", "--episodes", "2", "--out", str(tmp_path / "s.zarr")]) == 0
    assert json.loads(capsys.readouterr().out)["success_rate"] == 1.0
    from dojo.replay.store import open_store

    assert {e.robot for e in open_store(tmp_path / "s.zarr").episodes} == {"twin"}
    assert main(["teleop", "--robot", "twin", "--device", "sim-operator", "--steps", "20", "--fast"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 20
    assert main(["robot", "check", "--robot", "twin", "--seconds", "1", "--jog", "--yes"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["arm"]["inside_workspace"] and report["arm"]["state_rate_hz"] > 5
    assert set(report["cameras"]) == {"front", "wrist"} and report["cameras"]["front"]["timestamps_monotonic"]
    assert all(0 < v < 200 for v in report["jog_latency_ms"].values())
    assert report["calibration"]["warning"].startswith("no calibration file")
    run = tmp_path / "run"
    assert main(["learn", "--offline", "--data", str(tmp_path / "s.zarr"), "--agent", "bc", "--steps", "20",
                 "--eval-every", "0", "--no-progress", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--robot", "twin", "--episodes", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == 2


def test_a_robot_machine_imports_no_learner_torch_or_mujoco():
    """The actor with a station of real drivers gets as far as opening them (here: rclpy is missing) having
    imported neither the learners, optax, torch nor MuJoCo; and it says how to install what is missing."""
    code = """
import sys
from dojo.launch.cli import main
code = main(["actor", "--learner", "127.0.0.1:5", "--keys", sys.argv[1], "--robot", "franka_fr3"])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("optax", "torch", "mujoco")
               or m.startswith("dojo.learners") or m.startswith("dojo.sim"))
print(code, heavy)
"""
    from dojo.link import create_keys
    import tempfile

    keys = create_keys(tempfile.mkdtemp())
    out = subprocess.run([sys.executable, "-c", code, str(keys)], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "1 []", out.stdout + out.stderr[-2000:]
    assert "rclpy" in out.stderr and "ROS 2" in out.stderr


def test_the_factory_builds_a_realsense_camera_from_its_station_section(tmp_path):
    """A RealSense camera (here playing a recording through the real SDK) beside the twin's arm: the factory
    builds the driver from the station's section and the view crops and resizes what it delivers."""
    pytest.importorskip("pyrealsense2")
    pytest.importorskip("rosbags")
    from test_realsense import FPS, HEIGHT, WIDTH, record, synthetic

    bag = record(tmp_path, synthetic(60), serial="4242")
    station, _ = load_station("twin", ["task.obs_mode=pixels", "cameras.front.driver=realsense",
                                       f"cameras.front.width={WIDTH}", f"cameras.front.height={HEIGHT}",
                                       f"cameras.front.fps={FPS}", "cameras.front.crop=[8,16,32,32]",
                                       "cameras.front.resize=[16,16]",
                                       f"cameras.front.options={{serial: '4242', playback_file: '{bag}'}}"])
    env = make_robot_env(station)
    try:
        camera = env.cameras["front"]
        assert type(camera.camera).__name__ == "RealSenseCamera" and camera.shape == (16, 16)
        frame = camera.read()
        assert frame.rgb.shape == (16, 16, 3) and frame.rgb[..., 1].max() == 0  # the recording's tag channel
        np.testing.assert_allclose(frame.intrinsics[0, 0], 50.0 * 16 / 32)  # K follows the crop and resize
    finally:
        env.close()
    with pytest.raises(ValueError, match=r"robot.cameras.front.options.serial is missing"):
        make_robot_env(load_station("twin", ["cameras.front.driver=realsense"])[0])


def test_calibrate_writes_the_stations_file_and_episodes_carry_its_id(tmp_path, capsys):
    """`dojo calibrate intrinsics` on the twin (its board on the table, the wrist camera at 640x480) finds the
    focal length that the camera's field of view gives; a station naming that file records its id in every
    episode, and `dojo replay info` counts them."""
    cal = tmp_path / "cal.json"
    big = ["--set", "cameras.wrist.width=640", "--set", "cameras.wrist.height=480"]
    assert main(["calibrate", "intrinsics", "--robot", "twin", "--camera", "wrist", "--set", "arm.options.board=table",
                 *big, "--yes", "--out", str(cal)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    true_focal = make_robot_env(load_station("twin", ["cameras.wrist.width=640", "cameras.wrist.height=480"])[0]) \
        .cameras["wrist"].read().intrinsics[0, 0]
    assert abs(result["K"][0][0] / true_focal - 1) < 0.01 and result["rms_px"] < 0.5
    station = ROBOTS_DIR / "twin.yaml"
    mine = tmp_path / "station.yaml"
    mine.write_text(station.read_text().replace('calibration: ""', f'calibration: "{cal}"'))
    assert main(["record", "--robot", str(mine), "--episodes", "2", "--out", str(tmp_path / "s.zarr")]) == 0
    capsys.readouterr()
    from dojo.replay.store import open_store

    assert {e.calibration_id for e in open_store(tmp_path / "s.zarr").episodes} == {result["id"]}
    assert main(["replay", "info", str(tmp_path / "s.zarr")]) == 0
    assert json.loads(capsys.readouterr().out)["calibrations"] == {result["id"]: 2}
    mine.write_text(station.read_text().replace('calibration: ""', f'calibration: "{tmp_path / "none.json"}"'))
    with pytest.raises(FileNotFoundError, match="none.json does not exist: run `dojo calibrate"):
        make_robot_env(load_station(str(mine))[0])


def test_the_observation_pairs_the_arm_state_with_the_frames_instant(tmp_path):
    """With a calibrated motion-to-image latency, the state in the observation is the arm's state when the
    first camera's frame shows the scene: interpolated between the states read around that instant."""
    from dojo.calibration.file import update_calibration
    from dojo.calibration.latency import MotionToImage

    cal = tmp_path / "cal.json"
    measured = MotionToImage(camera="front", latency_s=0.05, residual_mm=0.0, frames=1, curve=())
    calibration = update_calibration(cal, measured)
    env = twin("task.obs_mode=both", f"calibration={cal}")
    assert env.calibration_id == calibration.id
    env.reset(seed=0)
    before = env.arm.state()
    obs, *_ = env.step(np.array([1, 0, 0, 1], np.float32))  # moving fast along x
    after = env.arm.state()
    frame_time = after.timestamp_s  # the twin renders at the instant it steps to
    w = (frame_time - 0.05 - before.timestamp_s) / (after.timestamp_s - before.timestamp_s)
    np.testing.assert_allclose(obs["state"][:3], (1 - w) * before.ee_pos_m + w * after.ee_pos_m, atol=1e-5)
    assert obs["state"][0] < after.ee_pos_m[0] - 0.001  # not the latest state: it lags the frame's instant
    env.close()
