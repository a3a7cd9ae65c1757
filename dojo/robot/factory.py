"""The device factory: a station config (dojo.robot.station) in, a RobotEnv out, through a small registry of
drivers by name (LeRobot's `make_robot_from_config` is the model). The twin is one driver among them, so the
same factory and actor code run in CI; a driver's module is imported only when a config names it, so a robot
machine never imports MuJoCo, and a missing vendor library stops with its install hint.

A driver module provides `make_arm(station) -> Arm` (with a `clock` attribute if it keeps its own time) or
`make_camera(name, section, arm) -> Camera`; an arm driver may also provide `make_scene(station, arm)` (a
world that resets itself and knows the truth) and `make_person(station)` (who resets the scene).
"""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np

from dojo.robot.cameras import CameraView
from dojo.robot.env import EnvConfig, RobotEnv, PROPRIO_DIM
from dojo.robot.interfaces import WallClock
from dojo.robot.safety import SafetyConfig
from dojo.robot.tasks import HumanReset, OperatorPrompt, ScriptedReset, StationTask

ARM_DRIVERS = {"twin": "dojo.sim.drivers", "ros2": "dojo.robot.drivers.ros2_arm"}
CAMERA_DRIVERS = {"twin": "dojo.sim.drivers", "realsense": "dojo.robot.drivers.realsense"}


def _driver(registry: dict, kind: str, name: str):
    if name not in registry:
        raise ValueError(f"unknown {kind} driver {name!r}; expected one of {sorted(registry)}")
    return importlib.import_module(registry[name])


def make_robot_env(station, teleop=None, with_teleop: bool = True, render_mode: str | None = None) -> RobotEnv:
    """The station's RobotEnv: its arm, cameras (cropped and resized as configured, stopped when stale),
    teleop device (or `teleop`, e.g. the twin's simulated operator; none with `with_teleop=False`, for a
    command that reads the device itself), task, resets, safety limits and clock."""
    arm_driver = _driver(ARM_DRIVERS, "arm", station.arm.driver)
    arm = arm_driver.make_arm(station)
    if station.arm.max_gripper_width_m is not None:
        arm.max_gripper_width_m = station.arm.max_gripper_width_m
    clock = getattr(arm, "clock", None) or WallClock()
    cameras = {}
    for name, section in station.cameras.items():
        camera = _driver(CAMERA_DRIVERS, "camera", section.driver).make_camera(name, section, arm)
        cameras[name] = CameraView(camera, clock, section.crop, section.resize, section.stale_after_s)
    if teleop is None and with_teleop:
        teleop = make_station_teleop(station)
    scene = arm_driver.make_scene(station, arm) if hasattr(arm_driver, "make_scene") else None
    task = StationTask(station.task, scene, obs_features=station.task.obs_mode != "pixels",
                       max_gripper_width_m=arm.max_gripper_width_m)
    env = RobotEnv(arm, task, SafetyConfig(**dataclasses.asdict(station.safety)), env_config(station),
                   cameras=cameras, clock=clock, teleop=teleop, render_mode=render_mode,
                   reset=_make_reset(station, arm_driver, teleop), calibration=load_station_calibration(station))
    env.station = station
    env.person = station_person(station, arm_driver, teleop)  # a practice session asks them for resets
    return env


def load_station_calibration(station):
    """The station's calibration file, checked, or None when it names none yet."""
    if not station.calibration:
        return None
    from pathlib import Path

    from dojo.calibration.file import load_calibration

    if not Path(station.calibration).is_file():
        raise FileNotFoundError(f"robot.calibration {station.calibration} does not exist: run `dojo calibrate ...` "
                                "to make it, or set calibration: '' until you have")
    return load_calibration(station.calibration)


def make_station_teleop(station):
    """The station's teleop device, or None."""
    if station.teleop.device == "none":
        return None
    from dojo.robot.teleop import make_teleop

    return make_teleop(station.teleop.device, **station.teleop.options)


def env_config(station) -> EnvConfig:
    a = station.action
    return EnvConfig(control_hz=station.control_hz, action_dim=a.dim, action_frame=a.frame, action_scale_m=a.scale_m,
                     action_scale_rad=a.scale_rad, obs_mode=station.task.obs_mode,
                     max_episode_steps=station.task.max_episode_steps)


def station_person(station, arm_driver, teleop):
    """Who resets the scene when asked: the twin's simulated person, or the operator at the station."""
    return arm_driver.make_person(station) if hasattr(arm_driver, "make_person") else OperatorPrompt(teleop)


def _make_reset(station, arm_driver, teleop):
    reset = station.task.reset
    if reset.mode == "scripted":
        return ScriptedReset(reset.xy_noise_m, reset.yaw_noise_rad)
    if reset.mode == "human":
        return HumanReset(station_person(station, arm_driver, teleop), reset.timeout_s)
    # policy: the backward task's attempts reset the scene (dojo.robot.practice); the env's own reset only takes
    # the arm home (and in the twin re-places the objects, which a practice session asks for on a fresh start)
    return ScriptedReset()


def station_spaces(station) -> tuple:
    """The observation and action spaces a station's env will have, without building any device (for a
    learner on another machine)."""
    import gymnasium as gym

    driver = _driver(ARM_DRIVERS, "arm", station.arm.driver)
    features = station.task.obs_mode != "pixels" and hasattr(driver, "task_obs_dim")
    task_dim = driver.task_obs_dim(station) if features else 0  # the twin's task adds its object features
    spaces = {"state": gym.spaces.Box(-np.inf, np.inf, (PROPRIO_DIM + task_dim,), np.float32)}
    if station.task.obs_mode != "state":
        spaces.update({name: gym.spaces.Box(0, 255, (*cam.shape, 3), np.uint8) for name, cam in station.cameras.items()})
    return gym.spaces.Dict(spaces), gym.spaces.Box(-1.0, 1.0, (station.action.dim,), np.float32)
