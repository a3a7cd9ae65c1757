"""The device contract: Arm, Camera, Teleop and Task, and the data they exchange.

Real drivers (robot/drivers) and the MuJoCo twin (sim/) implement these; nothing above them
branches on which one it has. Poses are in the robot base frame, positions in metres,
orientations as unit quaternions (w, x, y, z).
"""

from __future__ import annotations

import abc
import dataclasses
import time

import numpy as np

from dojo.errors import DojoError


@dataclasses.dataclass(frozen=True)
class ArmState:
    """A snapshot of the arm. `T_base_ee` is given as `ee_pos_m` + `ee_quat_wxyz`."""

    joint_q_rad: np.ndarray  # (n_joints,)
    joint_dq_rad_s: np.ndarray  # (n_joints,)
    ee_pos_m: np.ndarray  # (3,)
    ee_quat_wxyz: np.ndarray  # (4,)
    ee_vel: np.ndarray  # (6,) linear m/s then angular rad/s, base frame
    gripper_width_m: float
    wrench: np.ndarray | None = None  # (6,) force N then torque Nm at the flange, if the arm measures it
    timestamp_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class Frame:
    """One camera image. `rgb` is HxWx3 uint8; `depth_m` HxW float32 if the camera has depth.

    `timestamp_s` is when the image was captured and `arrival_s` when the host had it, both on the clock
    of the device's `Clock` (Unix seconds for real drivers: RealSense's global time and ROS 2 stamps share
    it; simulated seconds in the twin), so frames pair with arm states by time."""

    rgb: np.ndarray
    timestamp_s: float
    intrinsics: np.ndarray | None = None  # 3x3 K matrix in pixels
    depth_m: np.ndarray | None = None
    arrival_s: float | None = None


class DeviceError(DojoError):
    """A device stopped working mid-run (a camera that delivers no frames, an arm whose state went stale):
    the episode stops with this message and the arm holds."""


@dataclasses.dataclass(frozen=True)
class TeleopCommand:
    """What an operator asks for this instant: a twist, a gripper target and button presses."""

    twist: np.ndarray  # (6,) in [-1, 1]: linear xyz then angular xyz, in `frame`
    gripper: float  # in [-1, 1]: -1 closed, +1 open
    intervene: bool = False
    success: bool = False
    fail: bool = False
    rerecord: bool = False
    discard: bool = False
    estop: bool = False
    frame: str = "base"  # "base" or "ee"


@dataclasses.dataclass(frozen=True)
class TaskStatus:
    reward: float
    success: bool
    ended: bool = False  # the episode must end now without success (e.g. a person pressed fail)
    label_missed: bool = False  # the reward service's label did not come within its deadline (reward 0)


class Arm(abc.ABC):
    """A robot arm behind a Cartesian impedance / operational-space controller."""

    n_joints: int
    max_gripper_width_m: float
    home_q_rad: np.ndarray

    @abc.abstractmethod
    def state(self) -> ArmState: ...

    @abc.abstractmethod
    def command(self, target_pos_m: np.ndarray, target_quat_wxyz: np.ndarray, gripper_width_m: float) -> None:
        """Set the controller's end-effector target. Returns at once; the controller tracks it."""

    @abc.abstractmethod
    def reset_to(self, joint_q_rad: np.ndarray) -> None:
        """Move to a joint configuration and hold it there (blocking)."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop motion now and hold position; used by the e-stop."""

    def close(self) -> None:
        pass


class Camera(abc.ABC):
    name: str
    shape: tuple[int, int]  # (height, width)

    @abc.abstractmethod
    def read(self) -> Frame: ...

    def close(self) -> None:
        pass


class Teleop(abc.ABC):
    @abc.abstractmethod
    def read(self) -> TeleopCommand: ...

    def close(self) -> None:
        pass


class Task(abc.ABC):
    """What the robot should do: reset distribution, reward, success and instruction.

    On hardware a task's `reset` asks a person (or a reset policy) to reset the scene and its
    `status` may come from a reward classifier; in the twin both use privileged simulator state.
    """

    name: str
    instruction: str
    # Task-specific observation features (e.g. object pose), appended to the proprioceptive state
    # in obs_mode "state" and "both". Zero-length on hardware without object tracking.
    obs_dim: int = 0

    @abc.abstractmethod
    def reset(self, rng: np.random.Generator) -> None:
        """Put the scene into a new initial state drawn from the task's reset distribution."""

    @abc.abstractmethod
    def status(self, arm_state: ArmState, obs: dict | None = None, teleop: TeleopCommand | None = None) -> TaskStatus:
        """Reward and success after a step, from the arm's state, and where a task needs them the step's
        observation (camera frames for a reward model) and the operator's command (success / fail keys)."""

    def observation(self) -> np.ndarray:
        return np.zeros(0, dtype=np.float32)


class Clock(abc.ABC):
    """Paces the control loop. Hardware sleeps on the wall clock; the twin steps its physics."""

    @abc.abstractmethod
    def now_s(self) -> float: ...

    @abc.abstractmethod
    def wait(self, period_s: float) -> None:
        """Return when `period_s` has passed since the last call (the control period boundary)."""


class WallClock(Clock):
    """Fixed-rate pacing on the wall clock, without drift: boundaries are k * period from the start. Its time
    is Unix seconds, the clock real devices stamp their data with; pacing uses the monotonic clock."""

    def __init__(self) -> None:
        self._next_s: float | None = None

    def now_s(self) -> float:
        return time.time()

    def wait(self, period_s: float) -> None:
        now = time.monotonic()
        if self._next_s is None or now - self._next_s > period_s:
            self._next_s = now  # first tick, or we fell a whole period behind: restart the grid
        self._next_s += period_s
        delay = self._next_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
