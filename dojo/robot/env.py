"""RobotEnv: the gymnasium environment over Arm + Cameras + Task + safety, on hardware and twin alike.

Actions are in [-1, 1]^d: end-effector delta xyz (+ rotation vector) + gripper, scaled by the config,
in the base or end-effector frame. Observations are a dict: "state" (proprioception, plus the task's
object features in obs_mode "state"/"both") and one uint8 HxWx3 image per camera in "pixels"/"both".
"""

from __future__ import annotations

import collections
import dataclasses

import gymnasium as gym
import numpy as np

from dojo.robot import geometry
from dojo.robot.interfaces import Arm, ArmState, Camera, Clock, DeviceError, Task, Teleop, TeleopCommand, WallClock
from dojo.robot.pairing import state_at
from dojo.robot.safety import SafetyConfig, SafetyLayer
from dojo.robot.tasks import ScriptedReset

OBS_MODES = ("state", "pixels", "both")
PROPRIO_DIM = 14  # ee position (3), ee quaternion (4), ee twist (6), gripper width (1)


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    control_hz: float = 10.0
    action_dim: int = 4  # 4: dxyz + gripper; 7: dxyz + rotation vector + gripper
    action_frame: str = "base"  # "base" or "ee": the frame the deltas are expressed in
    action_scale_m: float = 0.03  # translation per step at |action| = 1
    action_scale_rad: float = 0.15  # rotation per step at |action| = 1
    obs_mode: str = "state"
    max_episode_steps: int = 100
    terminate_on_success: bool = True
    # Actions a little outside [-1, 1] are clipped; beyond this magnitude they are malformed and raise.
    max_abs_action: float = 10.0

    def __post_init__(self) -> None:
        if self.action_dim not in (4, 7):
            raise ValueError(f"action_dim must be 4 (xyz + gripper) or 7 (xyz + rotation + gripper), "
                             f"got {self.action_dim!r}")
        if self.action_frame not in ("base", "ee"):
            raise ValueError(f"action_frame must be 'base' or 'ee', got {self.action_frame!r}")
        if self.obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {self.obs_mode!r}")
        if not (self.control_hz > 0 and np.isfinite(self.control_hz)):
            raise ValueError(f"control_hz must be a positive number, got {self.control_hz!r}")
        if not (np.isfinite(self.max_abs_action) and self.max_abs_action >= 1.0):
            raise ValueError(f"max_abs_action must be a finite number >= 1, got {self.max_abs_action!r}")
        if not (isinstance(self.max_episode_steps, int) and self.max_episode_steps > 0):
            raise ValueError(f"max_episode_steps must be a positive integer, got {self.max_episode_steps!r}")


class RobotEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, arm: Arm, task: Task, safety: SafetyConfig, config: EnvConfig = EnvConfig(),
                 cameras: dict[str, Camera] | None = None, clock: Clock | None = None,
                 teleop: Teleop | None = None, render_mode: str | None = None, reset=None,
                 calibration=None) -> None:
        """`reset(env, rng)` puts the scene and the arm into the next episode's start (dojo.robot.tasks);
        by default the task's own reset and the arm at home. `calibration` (the station's, see
        dojo.calibration.file) is recorded by id in every episode, and its motion-to-image latency of the
        first camera pairs the observation's arm state with the instant that camera's frame shows."""
        self.arm, self.task, self.config = arm, task, config
        self.reset_fn = reset or ScriptedReset()
        self.calibration = calibration
        self.calibration_id = calibration.id if calibration is not None else ""
        self._states: collections.deque[ArmState] = collections.deque(maxlen=64)  # for pairing by time
        self.cameras = dict(cameras or {})
        self.clock = clock or WallClock()
        self.teleop = teleop
        self.safety = SafetyLayer(safety)
        self.render_mode = render_mode
        self.read_cameras = True  # False: observations leave the frames out (fast-forwarding the twin to a point)
        self.period_s = 1.0 / config.control_hz
        if config.obs_mode != "state" and not self.cameras:
            raise ValueError(f"obs_mode {config.obs_mode!r} needs at least one camera, got none")

        state_dim = PROPRIO_DIM + (task.obs_dim if config.obs_mode != "pixels" else 0)
        spaces = {"state": gym.spaces.Box(-np.inf, np.inf, (state_dim,), np.float32)}
        if config.obs_mode != "state":
            for name, camera in self.cameras.items():
                spaces[name] = gym.spaces.Box(0, 255, (*camera.shape, 3), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (config.action_dim,), np.float32)
        self._steps = 0
        self._home_quat = np.array([1.0, 0.0, 0.0, 0.0])

    @property
    def estop(self):
        return self.safety.estop

    # --- gymnasium API -------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if self.estop.engaged:
            raise RuntimeError(f"e-stop is engaged ({self.estop.reason}); release it with env.estop.release() "
                               "once the robot is safe")
        self.reset_fn(self, self.np_random)
        state = self.arm.state()
        self._home_quat = geometry.quat_normalize(state.ee_quat_wxyz)
        self.safety.reference_quat_wxyz = self._home_quat
        self._steps = 0
        obs, ages = self._observe(state)
        status = self.task.status(state, obs)
        return obs, {"success": status.success, "intervened": False, "estop": False, "frame_ages_s": ages}

    def step(self, action):
        action = SafetyLayer.check_finite("action", action).reshape(-1)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {action.shape}")
        if np.any(np.abs(action) > self.config.max_abs_action):
            raise ValueError(f"action must lie in [-1, 1] (|a| <= {self.config.max_abs_action} is clipped), got "
                             f"{np.array2string(action, precision=4)}; nothing was commanded")
        teleop_cmd = self.teleop.read() if self.teleop is not None else None
        intervened = bool(teleop_cmd is not None and teleop_cmd.intervene)
        if teleop_cmd is not None and teleop_cmd.estop:
            self.estop.trigger("teleop e-stop button")
        if intervened:
            action = self.teleop_to_action(teleop_cmd)
        action = np.clip(action, -1.0, 1.0)

        try:
            if not self.estop.engaged:
                state = self.arm.state()
                target_pos, target_quat = self._target(state, action)
                safe_pos, safe_quat = self.safety.filter(state.ee_pos_m, state.ee_quat_wxyz, target_pos,
                                                         target_quat)
                gripper_width_m = (action[-1] + 1.0) / 2.0 * self.arm.max_gripper_width_m
                self.arm.command(safe_pos, safe_quat, float(gripper_width_m))
                self.clock.wait(self.period_s)
            if self.estop.engaged:
                self.arm.stop()
            self._steps += 1
            state = self.arm.state()
            obs, ages = self._observe(state)
        except DeviceError:
            self.hold()  # a device stopped working: the arm holds where it is, the episode stops
            raise
        status = self.task.status(state, obs, teleop_cmd)
        terminated = bool(status.success and self.config.terminate_on_success)
        truncated = self._steps >= self.config.max_episode_steps or self.estop.engaged or status.ended
        info = {"success": status.success, "intervened": intervened, "estop": self.estop.engaged,
                "executed_action": action.astype(np.float32), "frame_ages_s": ages,
                "reward_missed": status.label_missed}
        if intervened:
            info["teleop_action"] = action.astype(np.float32)
        return obs, float(status.reward), terminated, bool(truncated), info

    def hold(self) -> None:
        """Keep the arm where it is (the controller holds the current pose): what an actor does while it has
        no policy to act with."""
        self.arm.stop()

    def render(self):
        if not self.cameras:
            return None
        return next(iter(self.cameras.values())).read().rgb

    def close(self) -> None:
        for camera in self.cameras.values():
            camera.close()
        if self.teleop is not None:
            self.teleop.close()
        self.arm.close()

    # --- internals -----------------------------------------------------------------------------
    def teleop_to_action(self, cmd: TeleopCommand) -> np.ndarray:
        """An operator's twist as an action in this env's frame and dimension."""
        twist = np.asarray(cmd.twist, dtype=np.float64)
        if cmd.frame != self.config.action_frame:
            rot = geometry.quat_to_mat(self.arm.state().ee_quat_wxyz)
            to_env = rot.T if self.config.action_frame == "ee" else rot
            twist = np.concatenate([to_env @ twist[:3], to_env @ twist[3:]])
        parts = [twist[:3]] + ([twist[3:6]] if self.config.action_dim == 7 else []) + [[cmd.gripper]]
        return np.clip(np.concatenate(parts), -1.0, 1.0)

    def _target(self, state: ArmState, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.config
        delta_pos = action[:3] * cfg.action_scale_m
        delta_rot = action[3:6] * cfg.action_scale_rad if cfg.action_dim == 7 else np.zeros(3)
        if cfg.action_frame == "ee":
            rot = geometry.quat_to_mat(state.ee_quat_wxyz)
            delta_pos, delta_rot = rot @ delta_pos, rot @ delta_rot
        target_pos = state.ee_pos_m + delta_pos
        if cfg.action_dim == 4:  # orientation held at the reset orientation
            return target_pos, self._home_quat
        return target_pos, geometry.quat_mul(geometry.rotvec_to_quat(delta_rot), state.ee_quat_wxyz)

    def _observe(self, state: ArmState) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """The observation, and each camera's frame age (capture to now, on the env's clock) in seconds."""
        self._states.append(state)
        obs, ages, shown = {}, {}, state
        if self.config.obs_mode != "state" and self.read_cameras:
            now = self.clock.now_s()
            for i, (name, camera) in enumerate(self.cameras.items()):
                frame = camera.read()
                obs[name], ages[name] = frame.rgb, round(now - frame.timestamp_s, 4)
                if i == 0:
                    shown = self._state_shown_by(name, frame.timestamp_s, state)
        proprio = np.concatenate([shown.ee_pos_m, geometry.quat_normalize(shown.ee_quat_wxyz), shown.ee_vel,
                                  [shown.gripper_width_m]])
        parts = [proprio] + ([self.task.observation()] if self.config.obs_mode != "pixels" else [])
        obs["state"] = np.concatenate(parts).astype(np.float32)
        return obs, ages

    def _state_shown_by(self, camera: str, frame_time_s: float, latest: ArmState) -> ArmState:
        """The arm state at the instant `camera`'s frame shows, with the calibrated motion-to-image latency;
        the latest state without one, or when the states read so far do not reach back that far."""
        latency_s = self.calibration.motion_to_image_s(camera) if self.calibration is not None else None
        if latency_s is None:
            return latest
        try:
            return state_at(list(self._states), frame_time_s - latency_s, max_gap_s=self.period_s)
        except ValueError:
            return latest
