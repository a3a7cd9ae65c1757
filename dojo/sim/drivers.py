"""The twin as a driver of the device factory (dojo.robot.factory): a station config with `driver: twin`
gets the MuJoCo arm, cameras that render its scene, the twin task as the scene (it re-places objects and
knows the ground truth) and a simulated person for human resets. arm.options.board (table | gripper) puts
the station's ChArUco board into the scene instead of the task's objects, for `dojo calibrate`. Camera
options inject faults for tests: cameras.NAME.options.freeze_after_s makes a camera deliver the same frame
from then on."""

from __future__ import annotations

import dataclasses

import numpy as np

from dojo.robot.interfaces import Camera, Frame
from dojo.sim.arm import SimArm, SimClock
from dojo.sim.camera import SimCamera
from dojo.sim.person import SimPerson
from dojo.sim.tasks import TASKS
from dojo.sim.world import Randomization, SimWorld

ARM_OPTIONS = ("randomize", "board")
CAMERA_OPTIONS = ("freeze_after_s",)


def _check_options(options: dict, known: tuple, where: str) -> None:
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"{where} has unknown twin option(s) {unknown}; known: {list(known)}")


def make_arm(station) -> SimArm:
    _check_options(station.arm.options, ARM_OPTIONS, "robot.arm.options")
    if station.task.name not in TASKS:
        raise ValueError(f"robot.task.name must be one of the twin's tasks {sorted(TASKS)} with arm.driver=twin, "
                         f"got {station.task.name!r}")
    sizes = [(c.height, c.width) for c in station.cameras.values()] or [(128, 128)]
    largest = (max(h for h, _ in sizes), max(w for _, w in sizes))
    randomize, board = station.arm.options.get("randomize", False), station.arm.options.get("board", "none")
    if board == "none":
        world = SimWorld(TASKS[station.task.name].objects_xml, largest, Randomization() if randomize else None)
    else:
        from dojo.calibration.board import BoardSpec
        from dojo.sim.calibration_scene import build_calibration_world

        boards = {f"{k}_board": BoardSpec(**v) for k, v in station.calibration_boards.items()}
        world = build_calibration_world(board, largest, **boards)
    arm = SimArm(world) if station.arm.home_q_rad is None else SimArm(world, np.asarray(station.arm.home_q_rad))
    arm.clock = SimClock(arm)
    arm.reset_to(arm.home_q_rad)  # the twin powers on at home, where a real arm usually waits
    return arm


def make_camera(name: str, section, arm: SimArm) -> Camera:
    _check_options(section.options, CAMERA_OPTIONS, f"robot.cameras.{name}.options")
    camera = SimCamera(arm.world, name, (section.height, section.width))
    freeze_after_s = section.options.get("freeze_after_s")
    return camera if freeze_after_s is None else FreezingCamera(camera, float(freeze_after_s))


def make_scene(station, arm: SimArm):
    if station.arm.options.get("board", "none") != "none":
        return None  # a calibration scene: the board, not the task's objects
    return TASKS[station.task.name](arm.world)


def task_obs_dim(station) -> int:
    return TASKS[station.task.name].obs_dim


def make_person(station):
    return SimPerson(station.task.reset.person_delay_s)


class FreezingCamera(Camera):
    """A twin camera whose stream stops at simulated time `freeze_after_s`: it keeps returning its last frame,
    capture time included, as a camera that hangs does."""

    def __init__(self, camera: SimCamera, freeze_after_s: float) -> None:
        self.camera, self.freeze_after_s = camera, freeze_after_s
        self.name, self.shape = camera.name, camera.shape
        self._last: Frame | None = None

    def read(self) -> Frame:
        if self._last is None or self.camera.world.data.time < self.freeze_after_s:
            self._last = self.camera.read()
        return dataclasses.replace(self._last)

    def close(self) -> None:
        self.camera.close()
