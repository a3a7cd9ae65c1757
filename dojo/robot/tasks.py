"""A task and its resets as a station config describes them. Success comes from `reward.source`: the twin's
ground truth, an end-effector pose, a person's success / fail keys (HIL-SERL's human classifier) or a reward
model (dojo.rewards) scoring camera frames in the actor, which ends the episode on success. The scene is reset
by a person (`human`: the arm goes home, the actor asks and waits), by a scripted, randomised arm pose
(`scripted`, SERL's), or by a backward policy (`policy`, dojo practice)."""

from __future__ import annotations

import logging
import select
import sys
import time

import numpy as np

from dojo.robot import geometry
from dojo.robot.interfaces import ArmState, Camera, DeviceError, Task, TaskStatus, TeleopCommand

log = logging.getLogger("dojo.robot")
# reward.source values that load reward.model, and the model kinds (dojo.rewards.base.KINDS) each accepts
MODEL_KINDS = {"classifier": ("classifier",), "vlm": ("vlm", "contrastive"), "preference": ("preference",)}
MODEL_SOURCES = tuple(MODEL_KINDS)


class StationTask(Task):
    """`scene` is the world's own task where there is one (the twin's: it re-places objects and knows the
    truth); on hardware there is none and `reset` leaves the scene to the reset mode.

    With a model source the reward model (`reward.model`, a folder from `dojo reward train`) loads here, and
    `use_cameras` gives it the cameras it reads when the observation does not carry them (a state policy)."""

    def __init__(self, section, scene: Task | None = None, obs_features: bool = True,
                 max_gripper_width_m: float = 0.08) -> None:
        self.section, self.scene, self.reward = section, scene, section.reward
        self.max_gripper_width_m = max_gripper_width_m
        self.name = section.name
        self.instruction = section.instruction or getattr(scene, "instruction", "")
        self.obs_dim = scene.obs_dim if scene is not None and obs_features else 0
        self._success_pressed = False
        self.reward_model, self.manifest, self.reward_cameras = None, None, {}
        self.remote, self._t, self.episode_steps = None, 0, section.max_episode_steps
        if self.reward.source in MODEL_SOURCES:
            from dojo.rewards.base import load_reward_model, read_manifest

            if not self.reward.model:
                raise ValueError(f"reward.source={self.reward.source} needs reward.model, the model's folder")
            if self.reward.serve == "learner":  # the weights stay on the learner; its manifest says what to send
                self.manifest = read_manifest(self.reward.model)
            else:
                self.reward_model = load_reward_model(self.reward.model)
                self.manifest = self.reward_model.manifest
            if self.manifest.kind not in MODEL_KINDS[self.reward.source]:
                raise ValueError(f"reward.model {self.reward.model} is a {self.manifest.kind} model; "
                                 f"reward.source={self.reward.source} expects "
                                 f"{' or '.join(MODEL_KINDS[self.reward.source])}")
            self.instruction = self.instruction or self._model_instruction()

    @property
    def reward_source(self) -> str:
        """What the stores record as the episodes' reward_source: "" for the env's own (the twin's truth, a
        pose, a person), "<kind>:<id>:v<version>" for a reward model."""
        return self.manifest.reward_source if self.manifest is not None else ""

    # -- reset-free practice (dojo.robot.practice): the forward task and the one that undoes it --------------
    @property
    def direction_names(self) -> dict[str, str]:
        scene = self._pair_scene()
        if scene is not None:
            return dict(scene.direction_names)
        return {"forward": self.section.name, "backward": self.section.backward.name}

    def set_direction(self, direction: str) -> None:
        """The goal of the next attempt; the next reset is the station's own (the twin re-places its objects)."""
        self._switch(direction, keep_scene=False)

    def begin_attempt(self, direction: str) -> None:
        """The goal of the next attempt, from the scene as it is."""
        self._switch(direction, keep_scene=True)

    def stuck_reason(self) -> str | None:
        return getattr(self.scene, "stuck_reason", lambda: None)()

    def goal_met(self, direction: str) -> bool | None:
        """Whether `direction`'s goal holds in the scene as it is; None where the station cannot tell (hardware)."""
        return getattr(self.scene, "goal_met", lambda _: None)(direction)

    def _pair_scene(self):
        return self.scene if hasattr(self.scene, "begin_attempt") else None

    def _switch(self, direction: str, keep_scene: bool) -> None:
        scene = self._pair_scene()
        if scene is not None:  # the twin's pair: its scene switches goal (and keeps itself, once)
            (scene.begin_attempt if keep_scene else scene.set_direction)(direction)
            self.name, self.instruction = scene.name, scene.instruction
        elif direction == "forward":
            self.name, self.instruction = self.section.name, self.section.instruction
        else:
            self.name, self.instruction = self.section.backward.name, self.section.backward.instruction
        self.direction = direction

    def serve_from(self, remote, episode_steps: int) -> None:
        """With reward.serve=learner: label through `remote` (a dojo.rewards.service.RemoteReward) every
        reward.every steps and on step `episode_steps`, an episode's last."""
        self.remote, self.episode_steps = remote, int(episode_steps)

    def _model_instruction(self) -> str:
        known = self.manifest.instructions
        return known[0] if len(known) == 1 else ""

    def use_cameras(self, cameras: dict[str, Camera]) -> None:
        """The cameras the reward model reads, checked against the model's cameras and image size."""
        if self.manifest is None:
            return
        size = self.manifest.image_size
        for name in self.manifest.cameras:
            if name not in cameras:
                raise ValueError(f"reward.model {self.reward.model} reads camera {name!r}; the station has "
                                 f"{sorted(cameras)}")
            if size is not None and tuple(cameras[name].shape) != tuple(size):
                raise ValueError(f"camera {name!r} gives {cameras[name].shape[0]}x{cameras[name].shape[1]} "
                                 f"frames; reward.model {self.reward.model} expects {size[0]}x{size[1]}")
        self.reward_cameras = {name: cameras[name] for name in self.manifest.cameras}

    def reset(self, rng: np.random.Generator) -> None:
        self._success_pressed = False
        self._t = -1  # the env's status call right after a reset makes it 0: step t's call sees t
        if self.scene is not None:
            self.scene.reset(rng)

    def status(self, arm_state: ArmState, obs: dict | None = None,
               teleop: TeleopCommand | None = None) -> TaskStatus:
        source = self.reward.source
        if source == "sim":
            return self.scene.status(arm_state)
        if source == "pose":
            near = np.linalg.norm(arm_state.ee_pos_m - np.asarray(self.reward.target_pos_m)) < self.reward.tolerance_m
            closed = arm_state.gripper_width_m < 0.5 * self.max_gripper_width_m
            grip = {"any": True, "closed": closed, "open": not closed}[self.reward.gripper]
            success = bool(near and grip)
            return TaskStatus(reward=float(success), success=success)
        if source == "human":  # the success key ends the episode as a success, the fail key as a failure
            self._success_pressed = self._success_pressed or bool(teleop is not None and teleop.success)
            failed = bool(teleop is not None and teleop.fail)
            return TaskStatus(reward=float(self._success_pressed), success=self._success_pressed, ended=failed)
        if self.manifest is not None:
            return self._model_status(obs or {})
        raise ValueError(f"reward.source={source!r} has no reward model loaded")

    def _model_status(self, obs: dict) -> TaskStatus:
        """The model's verdict on this step's frames: the observation's where it has them (the same pixels the
        policy sees), else a fresh read of the reward camera. A success model gives reward 1 on success, which
        ends the episode; a preference model gives its reward and never ends one."""
        frames = {}
        for name in self.manifest.cameras:
            if name in obs:
                frames[name] = obs[name]
            elif name in self.reward_cameras:
                frames[name] = self.reward_cameras[name].read().rgb
            else:
                raise ValueError(f"reward.model {self.reward.model} reads camera {name!r}, which neither the "
                                 "observation nor the task's reward cameras have")
        state = obs.get("state")
        if self.reward_model is None:
            return self._served_status(frames, state)
        scores, success = self.reward_model.verdict(frames, self.instruction or None, state=state)
        if success is None:  # a preference model's reward
            return TaskStatus(reward=float(scores[0]), success=False)
        return TaskStatus(reward=float(success[0]), success=bool(success[0]))

    def _served_status(self, frames: dict, state) -> TaskStatus:
        """reward.serve=learner: a label from the learner's reward service every reward.every steps and on the
        episode's last; between labels reward 0. A label not back within reward.deadline_s is missed: the
        step is flagged and the episode goes on."""
        if self.remote is None:
            raise ValueError("reward.serve=learner: the reward model runs in the learner, and this env has no link "
                             "to one (run it as `dojo actor` or `dojo train`, or set reward.serve=actor)")
        self._t += 1
        if self._t <= 0 or (self._t % self.reward.every and self._t < self.episode_steps):
            return TaskStatus(reward=0.0, success=False)
        got = self.remote.label(frames, self.instruction, state)
        if got is None:
            log.warning("no label from the learner's reward service within %.2f s at step %d (%d missed so far); "
                        "the episode goes on", self.reward.deadline_s, self._t, self.remote.missed)
            return TaskStatus(reward=0.0, success=False, label_missed=True)
        score, success = got
        if success is None:
            return TaskStatus(reward=score, success=False)
        return TaskStatus(reward=float(success), success=success)

    def observation(self) -> np.ndarray:
        if self.scene is not None and self.obs_dim:
            return self.scene.observation()
        return np.zeros(0, np.float32)


# --- resets ----------------------------------------------------------------------------------------------
class ScriptedReset:
    """The scene's own reset (the twin re-places its objects; hardware has none), the arm home, then a
    uniformly random offset of the end-effector in x, y and yaw, approached through the safety layer."""

    def __init__(self, xy_noise_m: float = 0.0, yaw_noise_rad: float = 0.0, max_steps: int = 50) -> None:
        self.xy_noise_m, self.yaw_noise_rad, self.max_steps = xy_noise_m, yaw_noise_rad, max_steps

    def __call__(self, env, rng: np.random.Generator) -> None:
        env.task.reset(rng)
        env.arm.reset_to(env.arm.home_q_rad)
        if self.xy_noise_m == 0 and self.yaw_noise_rad == 0:
            return
        start = env.arm.state()
        offset = np.array([*rng.uniform(-self.xy_noise_m, self.xy_noise_m, 2), 0.0])
        target_quat = geometry.quat_mul(geometry.rotvec_to_quat(
            np.array([0.0, 0.0, rng.uniform(-self.yaw_noise_rad, self.yaw_noise_rad)])), start.ee_quat_wxyz)
        target = start.ee_pos_m + offset
        for _ in range(self.max_steps):
            state = env.arm.state()
            pos, quat = env.safety.filter(state.ee_pos_m, state.ee_quat_wxyz, target, target_quat)
            env.arm.command(pos, quat, state.gripper_width_m)
            env.clock.wait(env.period_s)
            if np.linalg.norm(env.arm.state().ee_pos_m - target) < 0.005:
                break


class HumanReset:
    """The arm goes home, then a person resets the scene: `person.request()` asks, `person.ready()` says when
    it is done (a teleop button or Enter on hardware; the twin's simulated person, whose work is the twin
    task's own scene reset). Waits `timeout_s`, then raises with the arm at home."""

    def __init__(self, person, timeout_s: float) -> None:
        self.person, self.timeout_s = person, timeout_s

    def __call__(self, env, rng: np.random.Generator) -> None:
        env.arm.reset_to(env.arm.home_q_rad)
        self.person.request(rng)
        deadline = time.monotonic() + self.timeout_s
        while not self.person.ready():
            if time.monotonic() > deadline:
                raise DeviceError(f"no one reset the scene within {self.timeout_s:.0f} s "
                                  f"(robot.task.reset.timeout_s); the arm holds at home")
            time.sleep(0.05)
        env.task.reset(rng)  # the latched success key; in the twin also the scene, as the person left it
        env.arm.reset_to(env.arm.home_q_rad)


class OperatorPrompt:
    """The person at a real station: asked in the log, answers with the teleop's success button or Enter."""

    def __init__(self, teleop=None) -> None:
        self.teleop = teleop

    def request(self, rng) -> None:
        log.warning("reset the scene for the next episode, then press the teleop's success button or Enter")

    def ready(self) -> bool:
        if self.teleop is not None and self.teleop.read().success:
            return True
        if sys.stdin is not None and sys.stdin.isatty() and select.select([sys.stdin], [], [], 0)[0]:
            sys.stdin.readline()
            return True
        return False
