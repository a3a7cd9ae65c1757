"""The MuJoCo twin: a simulated Arm, Cameras and Tasks behind the robot's interfaces, plus scripted experts.

Importing it registers the gymnasium ids dojo/Reach-v0, dojo/PickCube-v0 and dojo/PegInsert-v0.
"""

import os

# Headless offscreen rendering; must be chosen before mujoco is first imported.
if not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")

from dojo.sim.envs import GYM_IDS, make_env, register  # noqa: E402

register()

__all__ = ["GYM_IDS", "make_env"]
