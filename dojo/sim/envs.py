"""Build a RobotEnv on the twin (`make_env`) and register the gymnasium ids dojo/<Task>-v0."""

from __future__ import annotations

import gymnasium as gym

from dojo.robot.env import EnvConfig, RobotEnv
from dojo.robot.safety import SafetyConfig
from dojo.sim.arm import SimArm, SimClock
from dojo.sim.camera import SimCamera
from dojo.sim.tasks import TASKS
from dojo.sim.world import MAX_TILT_RAD, Randomization, SimWorld

CAMERA_NAMES = ("front", "wrist")
GYM_IDS = {"dojo/Reach-v0": "reach", "dojo/PickCube-v0": "pick_cube", "dojo/PegInsert-v0": "peg_insert"}


def make_env(task: str, obs_mode: str = "state", image_size: tuple[int, int] = (128, 128),
             control_hz: float = 10.0, action_dim: int = 4, action_frame: str = "base",
             randomize: bool = False, seed: int | None = None, dense_reward: bool = False,
             render_mode: str | None = None, **env_config) -> RobotEnv:
    """A RobotEnv over the twin's arm, cameras ("front", "wrist"; only built when obs_mode needs pixels
    or render_mode is "rgb_array") and `task` (one of TASKS). `env_config` goes to EnvConfig; `seed`
    seeds the env's generator for the first reset that is given none.
    """
    if task not in TASKS:
        raise ValueError(f"unknown sim task {task!r}; expected one of {sorted(TASKS)}")
    image_size = tuple(int(v) for v in image_size)
    if len(image_size) != 2 or min(image_size) <= 0:
        raise ValueError(f"image_size must be (height, width) in pixels, got {image_size!r}")
    config = EnvConfig(control_hz=control_hz, action_dim=action_dim, action_frame=action_frame,
                       obs_mode=obs_mode, **env_config)
    task_cls = TASKS[task]
    world = SimWorld(task_cls.objects_xml, image_size, Randomization() if randomize else None)
    arm = SimArm(world)
    cameras = None
    if obs_mode != "state" or render_mode == "rgb_array":
        cameras = {name: SimCamera(world, name, image_size) for name in CAMERA_NAMES}
    env = RobotEnv(arm, task_cls(world, dense_reward=dense_reward),
                   SafetyConfig(workspace_min_m=task_cls.workspace_min_m, workspace_max_m=task_cls.workspace_max_m,
                                max_tilt_rad=MAX_TILT_RAD),
                   config, cameras=cameras, clock=SimClock(arm), render_mode=render_mode)
    if seed is not None:
        env.np_random, _ = gym.utils.seeding.np_random(seed)
        env.action_space.seed(seed)
    return env


def _entry_point(task: str):
    def make(**kwargs) -> RobotEnv:
        return make_env(task, **kwargs)
    return make


def register() -> None:
    for gym_id, task in GYM_IDS.items():
        if gym_id not in gym.registry:
            gym.register(id=gym_id, entry_point=_entry_point(task), disable_env_checker=False)
