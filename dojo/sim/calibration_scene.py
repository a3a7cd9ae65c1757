"""The twin as calibration ground truth: a ChArUco board (OpenCV's image as a MuJoCo texture) on the table or
held by the gripper, cameras at a calibration resolution with optional lens distortion and latencies, and
the true answers: intrinsics from fovy, camera poses, board poses and the injected latencies.

    twin = make_calibration_twin("table", command_latency_s=0.02, camera_latency_s=0.05)
    twin.arm, twin.clock, twin.cameras["wrist"]      # what a calibration is given, as on a robot
    twin.true_T_cam_ee("wrist"), twin.true_K("wrist")  # what it must find
"""

from __future__ import annotations

import dataclasses

import mujoco
import numpy as np

from dojo.calibration.board import BoardSpec
from dojo.calibration.frames import invert, transform
from dojo.robot.interfaces import Clock
from dojo.sim.arm import SimArm, SimClock
from dojo.sim.timed_devices import LaggedArm, TimedCamera
from dojo.sim.world import HOME_Q_RAD, SimWorld, build_xml

# A4-sized board on the table for the wrist camera; a smaller one with bigger squares on the gripper,
# which the front camera sees from 0.5 to 0.9 m.
TABLE_BOARD = BoardSpec(squares_x=9, squares_y=7, square_m=0.03, marker_m=0.022, dictionary="4X4_100")
GRIPPER_BOARD = BoardSpec(squares_x=5, squares_y=4, square_m=0.04, marker_m=0.03, dictionary="4X4_100")
BOARD_MARGIN_M = 0.01  # white border around the printed squares
BOARD_THICKNESS_M = 0.002
TABLE_BOARD_CENTER_M = (0.47, 0.0)
# Board on the gripper: its printed face looks along the hand's +x, tilted 30 degrees up (towards -z of
# the hand, which points down at home), so that it faces the front camera; centre in the hand frame.
GRIPPER_BOARD_TILT_RAD = np.deg2rad(30.0)
GRIPPER_BOARD_CENTER_HAND_M = (0.12, 0.0, 0.02)
BOARD_ON = ("table", "gripper", "person")  # "person": a free board that a simulated person holds up
PERSON_BOARD_HOME_M = (0.5, 0.0, 0.3)


def table_board_pose(spec: BoardSpec = TABLE_BOARD) -> np.ndarray:
    """T_base_board of the board lying printed face up on the table (x along base x, y along -base y)."""
    R = np.diag([1.0, -1.0, -1.0])
    center = np.array([*TABLE_BOARD_CENTER_M, BOARD_THICKNESS_M])
    return transform(R, center - R @ spec.center_m())


def gripper_board_pose(spec: BoardSpec = GRIPPER_BOARD) -> np.ndarray:
    """T_hand_board of the board the gripper holds."""
    c, s = np.cos(GRIPPER_BOARD_TILT_RAD), np.sin(GRIPPER_BOARD_TILT_RAD)
    z = np.array([-c, 0.0, s])  # into the board: the printed face looks along -z
    x = np.array([0.0, 1.0, 0.0])
    R = np.stack([x, np.cross(z, x), z], axis=1)
    return transform(R, np.asarray(GRIPPER_BOARD_CENTER_HAND_M) - R @ spec.center_m())


def _add_board(spec_model: mujoco.MjSpec, board: BoardSpec, parent, T_parent_board: np.ndarray,
               px_per_square: int = 80, mocap: bool = False) -> None:
    """A thin slab whose front face (z = 0 of the board frame) carries the board's image, margin included."""
    margin_px = int(round(BOARD_MARGIN_M / board.square_m * px_per_square))
    image = np.pad(board.image(px_per_square), margin_px, constant_values=255)
    texture = spec_model.add_texture(name="charuco", type=mujoco.mjtTexture.mjTEXTURE_2D,
                                     width=image.shape[1], height=image.shape[0], nchannel=3)
    texture.data = np.repeat(image[:, :, None], 3, axis=2).tobytes()
    # Some emission, as white paper under room light: the board reads well whichever way it faces the lights.
    material = spec_model.add_material(name="charuco", specular=0.0, shininess=0.0, reflectance=0.0, emission=0.5)
    material.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = "charuco"
    width, height = board.size_m
    x0, y0, x1, y1 = -BOARD_MARGIN_M, -BOARD_MARGIN_M, width + BOARD_MARGIN_M, height + BOARD_MARGIN_M
    t = BOARD_THICKNESS_M
    mesh = spec_model.add_mesh(name="charuco")
    mesh.uservert = [x0, y0, 0, x1, y0, 0, x1, y1, 0, x0, y1, 0, x0, y0, t, x1, y0, t, x1, y1, t, x0, y1, t]
    # Texture row 0 is the image's top row: v runs down the board's y like the image's rows.
    mesh.usertexcoord = [0, 0, 1, 0, 1, 1, 0, 1] * 2
    mesh.userface = [0, 2, 1, 0, 3, 2, 4, 5, 6, 4, 6, 7, 0, 1, 5, 0, 5, 4, 1, 2, 6, 1, 6, 5,
                     2, 3, 7, 2, 7, 6, 3, 0, 4, 3, 4, 7]
    body = parent.add_body(name="charuco", pos=T_parent_board[:3, 3], quat=_quat(T_parent_board[:3, :3]),
                           mocap=mocap)
    # Visual only: the board neither collides with nor weighs on the arm.
    body.add_geom(type=mujoco.mjtGeom.mjGEOM_MESH, meshname="charuco", material="charuco", contype=0,
                  conaffinity=0, mass=1e-3)


def _quat(R: np.ndarray) -> np.ndarray:
    q = np.empty(4)
    mujoco.mju_mat2Quat(q, np.ascontiguousarray(R, dtype=np.float64).ravel())
    return q


def build_calibration_world(board_on: str = "table", image_size: tuple[int, int] = (480, 640),
                            table_board: BoardSpec = TABLE_BOARD, gripper_board: BoardSpec = GRIPPER_BOARD) -> SimWorld:
    """The twin's scene with a ChArUco board on the table ("table"), held by the gripper ("gripper") or free,
    for a simulated person to move ("person", see `BoardCarrier`)."""
    if board_on not in BOARD_ON:
        raise ValueError(f"board_on must be one of {BOARD_ON}, got {board_on!r}")
    spec_model = mujoco.MjSpec.from_string(build_xml("", image_size))
    if board_on == "table":
        _add_board(spec_model, table_board, spec_model.worldbody, table_board_pose(table_board))
    elif board_on == "gripper":
        _add_board(spec_model, gripper_board, spec_model.body("hand"), gripper_board_pose(gripper_board))
    else:
        _add_board(spec_model, gripper_board, spec_model.worldbody, transform(np.eye(3), PERSON_BOARD_HOME_M),
                   mocap=True)
    return SimWorld(image_size=image_size, model=spec_model.compile())


def camera_pose(world: SimWorld, name: str) -> np.ndarray:
    """T_base_cam of a model camera, with OpenCV's camera axes (x right, y down, z forward); MuJoCo's camera
    looks along its -z with y up."""
    camera = world.data.camera(name)
    return transform(camera.xmat.reshape(3, 3) @ np.diag([1.0, -1.0, -1.0]), camera.xpos)


def ee_pose(world: SimWorld) -> np.ndarray:
    site = world.data.site(world.ee_site)
    return transform(site.xmat.reshape(3, 3), site.xpos)


@dataclasses.dataclass
class CalibrationTwin:
    """The devices a calibration gets (arm, clock, cameras) and the truth it is checked against."""

    world: SimWorld
    sim_arm: SimArm
    arm: LaggedArm
    clock: Clock
    cameras: dict[str, TimedCamera]
    board: BoardSpec
    board_on: str
    command_latency_s: float
    camera_latency_s: float
    timestamp_offset_s: float

    def true_K(self, camera: str) -> np.ndarray:
        return self.cameras[camera].true_K.copy()

    def true_T_cam_base(self, camera: str) -> np.ndarray:
        return invert(camera_pose(self.world, camera))

    def true_T_cam_ee(self, camera: str) -> np.ndarray:
        """Constant for a camera on the hand (the wrist camera), whatever the arm's pose."""
        return invert(camera_pose(self.world, camera)) @ ee_pose(self.world)

    def true_T_base_board(self) -> np.ndarray:
        body = self.world.data.body("charuco")
        return transform(body.xmat.reshape(3, 3), body.xpos)

    def close(self) -> None:
        for camera in self.cameras.values():
            camera.close()


def make_calibration_twin(board_on: str = "table", image_size: tuple[int, int] = (480, 640), fps: float = 30.0,
                          command_latency_s: float = 0.0, camera_latency_s: float = 0.0,
                          timestamp_offset_s: float = 0.0, dist=None, reported_K: np.ndarray | None = None,
                          cameras: tuple[str, ...] = ("front", "wrist"),
                          home_q_rad: np.ndarray = HOME_Q_RAD) -> CalibrationTwin:
    """A calibration scene reset to `home_q_rad`, its arm (commands `command_latency_s` late) and its cameras.

    Every camera delivers frames `camera_latency_s` after capture, stamped `timestamp_offset_s` after the
    instant they show, through the lens `dist` (k1, k2, p1, p2, k3; None: an ideal pinhole), and reports
    `reported_K` as its factory intrinsics (None: the true ones).
    """
    world = build_calibration_world(board_on, image_size)
    world.reset()
    mujoco.mj_forward(world.model, world.data)
    sim_arm = SimArm(world, home_q_rad=home_q_rad)
    sim_arm.reset_to(home_q_rad)
    arm = LaggedArm(sim_arm, command_latency_s)
    timed = {name: TimedCamera(sim_arm, name, image_size, fps=fps, latency_s=camera_latency_s,
                               timestamp_offset_s=timestamp_offset_s, dist=dist, reported_K=reported_K)
             for name in cameras}
    return CalibrationTwin(world=world, sim_arm=sim_arm, arm=arm, clock=SimClock(sim_arm), cameras=timed,
                           board=TABLE_BOARD if board_on == "table" else GRIPPER_BOARD, board_on=board_on,
                           command_latency_s=float(command_latency_s), camera_latency_s=float(camera_latency_s),
                           timestamp_offset_s=float(timestamp_offset_s))


class BoardCarrier:
    """A simulated person holding the free board ("person" scene) up to a camera: it holds each pose of
    `poses_base_board` (T_base_board) for `hold_s`, then carries it to the next over `move_s` (straight line,
    slerp), keeping time with the physics through the arm's tick hooks. `done` once the last is held."""

    def __init__(self, twin: CalibrationTwin, poses_base_board: list[np.ndarray], hold_s: float = 0.5,
                 move_s: float = 0.5) -> None:
        if twin.board_on != "person":
            raise ValueError(f"a BoardCarrier needs the 'person' scene, this twin has the board on {twin.board_on!r}")
        self.world, self.poses, self.hold_s, self.move_s = twin.world, list(poses_base_board), hold_s, move_s
        self.start_s = float(self.world.data.time)
        self._mocap = twin.world.model.body("charuco").mocapid[0]
        twin.sim_arm.tick_hooks.append(self._tick)
        self._tick()

    @property
    def duration_s(self) -> float:
        return len(self.poses) * (self.hold_s + self.move_s)

    @property
    def done(self) -> bool:
        return float(self.world.data.time) - self.start_s >= self.duration_s

    def _tick(self) -> None:
        t = float(self.world.data.time) - self.start_s
        period = self.hold_s + self.move_s
        i = min(int(t // period), len(self.poses) - 1)
        frac = 0.0 if i == len(self.poses) - 1 else max(0.0, (t - i * period - self.hold_s) / self.move_s)
        a, b = self.poses[i], self.poses[min(i + 1, len(self.poses) - 1)]
        q = np.empty(4)
        mujoco.mju_mat2Quat(q, np.ascontiguousarray(a[:3, :3]).ravel())
        qb = np.empty(4)
        mujoco.mju_mat2Quat(qb, np.ascontiguousarray(b[:3, :3]).ravel())
        if q @ qb < 0:
            qb = -qb
        quat = (1 - frac) * q + frac * qb  # a normalised blend: slerp's path, close enough for a person
        self.world.data.mocap_pos[self._mocap] = (1 - frac) * a[:3, 3] + frac * b[:3, 3]
        self.world.data.mocap_quat[self._mocap] = quat / np.linalg.norm(quat)


def person_board_poses(twin: CalibrationTwin, camera: str, n: int = 30, seed: int = 0) -> list[np.ndarray]:
    """Where a person would hold the board for an intrinsics calibration of `camera`: its centre spread over
    the whole image, 0.35 to 0.55 m away (in front of the arm), above the table, tilted up to 40 degrees
    (uses the true camera pose and K)."""
    from dojo.calibration.planning import ViewPlan, _visible_fraction, desired_board_poses

    board, K = twin.board, twin.true_K(camera)
    height, width = twin.cameras[camera].shape
    facing = transform(np.eye(3), np.array([0.0, 0.0, 0.5]) - board.center_m())
    plan = ViewPlan(tilt_deg=(5.0, 40.0), depth_scale=(0.7, 1.1), image_margin=0.08)
    T_base_cam = invert(twin.true_T_cam_base(camera))
    corners = np.array([[x, y, 0.0] for x in (0.0, board.size_m[0]) for y in (0.0, board.size_m[1])])
    poses = []
    for T_cam_board, _ in desired_board_poses(facing, K, (height, width), board, plan, np.random.default_rng(seed)):
        T_base_board = T_base_cam @ T_cam_board
        above_table = np.all((corners @ T_base_board[:3, :3].T + T_base_board[:3, 3])[:, 2] > 0.03)
        if above_table and _visible_fraction(T_cam_board, K, (height, width), board) >= 0.9:
            poses.append(T_base_board)
        if len(poses) == n:
            return poses
