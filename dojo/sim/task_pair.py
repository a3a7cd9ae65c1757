"""The twin's reset-free task pair (RoboFuME / SERL forward-backward practice): a cube and two pads, red and green.

Forward, `cube_to_green`, puts the cube on the green pad; backward, `cube_to_red`, puts it back on the red pad.
Each undoes the other, so a robot can practise them in turns with no one resetting the scene in between.

Reset-free attempts. Both directions are one task class over one scene; `task.direction` says which goal holds
now. `task.begin_attempt("backward")` switches the goal (instruction, name, observed target pad, success) and
touches no physics; the env's next `env.reset()` then keeps the scene as the last attempt left it and only takes
the arm home (the task's `reset` skips the scene once). A reset with no `begin_attempt` before it is a full reset
of the scene, the cube placed on the current direction's start pad (`set_direction` picks the direction without
keeping the scene): the person's reset (dojo.robot.tasks.HumanReset, answered in the twin by
dojo.sim.person.SimPerson after its delay, and counted), asked for when `stuck_reason()` says so::

    env = make_env("cube_to_green")
    env.reset(seed=0)                       # full reset: the cube on the red pad
    ...                                     # the forward attempt
    env.task.begin_attempt("backward")
    env.reset()                             # the cube stays where the forward attempt left it
    ...                                     # the backward attempt

The pads are fixed on the table, as tape marks on a real station's table are.

The observation leaves out the cube's orientation. The gripper cannot turn (the arm holds the orientation its
attempt began with), the cube is the same under quarter turns, and the scripted expert never reads it (30 of 30
full resets, their yaws drawn from -45 to 45 degrees). With it in the state, reset-free practice went wrong on it: the policy's own
placements leave the cube square, so the sessions trained on a yaw of about 0, and their policies failed a
person's reset at any other yaw (benchmarks/results/README.md, reset-free practice).
"""

from __future__ import annotations

import numpy as np

from dojo.robot.interfaces import ArmState
from dojo.sim.experts import EXPERTS
from dojo.sim.multitask import RELEASED_WIDTH_M, REST_TOL_M, PutOnPadExpert
from dojo.sim.tasks import TASKS, PickCube, SimTask, _yaw_quat
from dojo.sim.world import SimWorld

CUBE_HALF_M = PickCube.half_size_m  # pick_cube's cube, so its expert's grasp carries over
PAD_RADIUS_M = 0.06
PADS_XY_M = {"red": (0.50, -0.13), "green": (0.50, 0.13)}  # base frame; 26 cm apart, inside the workspace box
PAD_RGBA = {"red": "0.85 0.2 0.2 1", "green": "0.2 0.7 0.25 1"}
# direction: (task name, instruction, start pad, target pad)
DIRECTIONS = {
    "forward": ("cube_to_green", "put the cube on the green pad", "red", "green"),
    "backward": ("cube_to_red", "put the cube back on the red pad", "green", "red"),
}
OPPOSITE = {"forward": "backward", "backward": "forward"}
START_JITTER_M = 0.025  # a full reset puts the cube's centre within this of its start pad's centre
ON_PAD_M = PAD_RADIUS_M - CUBE_HALF_M  # on a pad: the cube's centre within this of the pad's (the cube mostly on it)
FLAT_MAX_TILT_RAD = np.deg2rad(15)  # flat: some face of the cube points up within this
STILL_SPEED_M_S = 0.01
# stuck_reason's answers; the session manager asks a person to reset the scene on any of them
OFF_TABLE = "the cube fell off the table"
OUT_OF_REACH = "the cube is out of the arm's reach"
TILTED = "the cube rests tilted on an edge"

# The pads are mats printed flush with the table: they do not collide, so the cube rests on them at table height.
SCENE_XML = f"""
<body name="cube" pos="{PADS_XY_M['red'][0]} {PADS_XY_M['red'][1]} {CUBE_HALF_M}">
  <freejoint name="cube"/>
  <geom name="cube" class="object" type="box" size="{CUBE_HALF_M} {CUBE_HALF_M} {CUBE_HALF_M}" mass="0.08"
        rgba="0.95 0.85 0.2 1"/>
</body>""" + "".join(f"""
<body name="{color}_pad" pos="{x} {y} 0">
  <geom name="{color}_pad" type="cylinder" size="{PAD_RADIUS_M} 0.0005" pos="0 0 0.0005" rgba="{PAD_RGBA[color]}"
        contype="0" conaffinity="0"/>
</body>""" for color, (x, y) in PADS_XY_M.items())


def check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; expected one of {sorted(DIRECTIONS)}")
    return direction


class CubePads(SimTask):
    """Move the cube from one pad to the other and let go: its centre within ON_PAD_M of the target pad's, flat,
    resting on the table and the fingers open wider than the cube. One class for both directions."""

    objects_xml = SCENE_XML
    obs_dim = 8  # cube position, cube - end-effector, target pad centre (x, y); no orientation (module docstring)
    direction = "forward"  # the direction a new task starts in; each instance then keeps its own
    direction_names = {d: names[0] for d, names in DIRECTIONS.items()}  # the task's name in each direction

    def __init__(self, world: SimWorld, dense_reward: bool = False) -> None:
        super().__init__(world, dense_reward)
        self._qpos = world.model.joint("cube").qposadr[0]
        self._dof = world.model.joint("cube").dofadr[0]
        self._body = world.model.body("cube").id
        self._geom, self._table = world.model.geom("cube").id, world.model.geom("table").id
        self.set_direction(type(self).direction)

    def set_direction(self, direction: str) -> None:
        """Switch the goal (name, instruction, target pad, success); the next `reset` is a full one."""
        self.direction = check_direction(direction)
        self._keep_scene = False
        self.name, self.instruction, self.start_pad, self.target_pad = DIRECTIONS[direction]

    def begin_attempt(self, direction: str) -> None:
        """Take the scene over as it is, with `direction`'s goal; the next `reset` keeps the scene (once)."""
        self.set_direction(direction)
        self._keep_scene = True

    def reset(self, rng: np.random.Generator) -> None:
        if self._keep_scene:  # a reset-free attempt: the arm goes home (the env's reset), the cube stays
            self._keep_scene = False
            return
        self.world.reset()
        radius, angle = START_JITTER_M * np.sqrt(rng.uniform()), rng.uniform(-np.pi, np.pi)
        xy = np.asarray(PADS_XY_M[self.start_pad]) + radius * np.array([np.cos(angle), np.sin(angle)])
        yaw = rng.uniform(-np.pi / 4, np.pi / 4)  # a cube is symmetric under quarter turns
        self.world.data.qpos[self._qpos:self._qpos + 7] = [*xy, CUBE_HALF_M, *_yaw_quat(yaw)]
        self.world.finish_reset(rng)

    @property
    def cube_pos_m(self) -> np.ndarray:
        return self.world.data.xpos[self._body].copy()

    @property
    def pad_xy_m(self) -> np.ndarray:
        return np.array(PADS_XY_M[self.target_pad])

    def _tilt_rad(self) -> float:
        """Angle between the world's up and the cube face that points most nearly up."""
        up_in_cube = self.world.data.xmat[self._body].reshape(3, 3)[2]  # the world z axis in the cube's frame
        return float(np.arccos(np.clip(np.abs(up_in_cube).max(), 0.0, 1.0)))

    def _speed_m_s(self) -> float:
        return float(np.linalg.norm(self.world.data.qvel[self._dof:self._dof + 3]))

    def goal_met(self, direction: str) -> bool:
        """`direction`'s goal holds in the scene as it is: the cube lies flat on its target pad (held or not)."""
        return self._on(DIRECTIONS[check_direction(direction)][3])

    def on_pad(self) -> bool:
        """The cube lies flat on the target pad (held or not)."""
        return self._on(self.target_pad)

    def _on(self, pad: str) -> bool:
        cube = self.cube_pos_m
        near = np.linalg.norm(cube[:2] - np.asarray(PADS_XY_M[pad])) < ON_PAD_M
        return bool(near and cube[2] < CUBE_HALF_M + REST_TOL_M and self._tilt_rad() < FLAT_MAX_TILT_RAD)

    def success(self, arm_state: ArmState) -> bool:
        return self.on_pad() and arm_state.gripper_width_m > RELEASED_WIDTH_M

    def dense(self, arm_state: ArmState) -> float:
        reach = 1.0 - np.tanh(10.0 * np.linalg.norm(self.cube_pos_m - arm_state.ee_pos_m))
        to_pad = np.linalg.norm(self.cube_pos_m - np.array([*self.pad_xy_m, CUBE_HALF_M]))
        return 0.25 * reach + 0.65 * (1.0 - np.tanh(8.0 * to_pad))

    def stuck_reason(self) -> str | None:
        """Why no attempt can start from this scene without a person (None: one can). Off the table: the cube's
        centre below the table top. Out of reach: its centre outside the task's workspace box in x or y, where the
        gripper cannot go down on it. Tilted: low (centre below its height on an edge + 1 cm), no face within
        FLAT_MAX_TILT_RAD of up, still (centre slower than STILL_SPEED_M_S) and touching nothing but the table;
        a cube the fingers hold up is not counted, as it falls flat when the arm goes home. Ask it before
        `begin_attempt`: a person's reset after it would be skipped as a reset-free one."""
        cube = self.cube_pos_m
        if cube[2] < 0.0:
            return OFF_TABLE
        lo, hi = self.workspace_min_m, self.workspace_max_m
        if not (lo[0] <= cube[0] <= hi[0] and lo[1] <= cube[1] <= hi[1]):
            return OUT_OF_REACH
        low = cube[2] < np.sqrt(2) * CUBE_HALF_M + 0.01
        if (low and self._tilt_rad() > FLAT_MAX_TILT_RAD and self._speed_m_s() < STILL_SPEED_M_S
                and not self._touched_by_arm()):
            return TILTED
        return None

    def _touched_by_arm(self) -> bool:
        """The cube is in contact with anything but the table (the pads do not collide: that is the arm)."""
        pairs = self.world.data.contact.geom[:self.world.data.ncon]
        mine = np.any(pairs == self._geom, axis=1)
        return bool(np.any(mine & ~np.any(pairs == self._table, axis=1)))

    def observation(self) -> np.ndarray:
        d = self.world.data
        pos = d.xpos[self._body]
        return np.concatenate([pos, pos - d.site_xpos[self.world.ee_site], self.pad_xy_m]).astype(np.float32)


class CubeToGreen(CubePads):
    direction = "forward"
    name, instruction = DIRECTIONS["forward"][:2]


class CubeToRed(CubePads):
    direction = "backward"
    name, instruction = DIRECTIONS["backward"][:2]


PAIR_TASKS = {cls.name: cls for cls in (CubeToGreen, CubeToRed)}
PAIRS = {"cube_pads": CubeToGreen.name}  # `dojo practice --sim PAIR`: the pair's name -> its forward task

# Registered where they are defined, as dojo.sim.multitask's are; dojo/sim/tasks.py imports this module at its end.
TASKS.update(PAIR_TASKS)
# The multi-task scene's put-on-pad expert reads the task's pad_xy_m and on_pad() every step, so it follows
# a begin_attempt to the other pad.
EXPERTS.update({name: PutOnPadExpert for name in PAIR_TASKS})
