"""The twin's multi-task language scene (in the spirit of Bridge / SIMPLER): one table, several instructions.

A red cube, a blue cube and a flat blue pad lie on the table. Each instruction is a task of its own in
`dojo.sim.tasks.TASKS` (`make_env("scene_push_red_left")`, `dojo record --sim scene_pick_blue`), with the
privileged success, the dense progress and the scripted expert the twin's other tasks have. All of them share
this scene, its reset distribution and its observation features, so one seed gives the same layout whatever the
instruction, and a multi-task policy sees one state layout: only the instruction tells the tasks apart.

"Left" is the robot's left: +y in the base frame (the right of the front camera's image, which faces the robot).
"""

from __future__ import annotations

import numpy as np

from dojo.robot.interfaces import ArmState
from dojo.sim.experts import CLOSED, EXPERTS, OPEN, Expert, PickCubeExpert
from dojo.sim.tasks import TASKS, PickCube, SimTask, _hemisphere, _yaw_quat
from dojo.sim.world import SimWorld

CUBE_HALF_M = PickCube.half_size_m  # the cubes are pick_cube's, so its expert's grasp carries over
PAD_HALF_M = 0.05
COLORS = {"red": "0.85 0.15 0.15 1", "blue": "0.15 0.3 0.85 1"}
PAD_RGBA = "0.35 0.55 0.95 1"

# Reset layout (base frame, m). Both cubes start on the right half (y <= 0), with room on their left to be
# pushed over the goal line, and the pad lies on the left half, so no cube starts on it.
CUBE_X_M, CUBE_Y_M = (0.38, 0.60), (-0.16, 0.0)
PAD_X_M, PAD_Y_M = (0.41, 0.57), (0.08, 0.16)
# The cubes are this far apart along x, so neither stands in the other's push lane or under the open fingers
# (the fingers open along y) when the other is grasped.
MIN_CUBE_GAP_X_M = 0.09
PUSH_GOAL_Y_M = 0.10  # "pushed to the left": the cube's centre rests at or beyond this line
REST_TOL_M = 0.01  # a cube whose centre is within this of its resting height is on the table (or the pad)
# Released: the fingers open wider than the cube's diagonal (it may rest turned by up to 45 degrees).
RELEASED_WIDTH_M = 2 * np.sqrt(2) * CUBE_HALF_M + 0.005


def _cube_xml(color: str) -> str:
    h = CUBE_HALF_M
    return f"""
<body name="{color}_cube" pos="0.5 0 {h}">
  <freejoint name="{color}_cube"/>
  <geom name="{color}_cube" class="object" type="box" size="{h} {h} {h}" mass="0.08" rgba="{COLORS[color]}"/>
</body>"""


# The pad is a mat printed flush with the table: it does not collide, so a pushed cube slides over it and a
# placed cube rests at the same height as on the table.
SCENE_XML = _cube_xml("red") + _cube_xml("blue") + f"""
<body name="pad" mocap="true" pos="0.5 0.12 0">
  <geom name="pad" type="box" size="{PAD_HALF_M} {PAD_HALF_M} 0.0005" pos="0 0 0.0005" rgba="{PAD_RGBA}"
        contype="0" conaffinity="0"/>
</body>"""


def sample_layout(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The scene's initial layout: each cube's (x, y, yaw_rad) and the pad's (x, y), drawn from `rng`."""
    while True:  # rejection sampling; about half the draws keep the cubes MIN_CUBE_GAP_X_M apart
        red, blue = rng.uniform(CUBE_X_M[0], CUBE_X_M[1], 2)
        if abs(red - blue) >= MIN_CUBE_GAP_X_M:
            break
    ys = rng.uniform(CUBE_Y_M[0], CUBE_Y_M[1], 2)
    yaws = rng.uniform(-np.pi / 4, np.pi / 4, 2)  # a cube is symmetric under quarter turns
    pad = np.array([rng.uniform(*PAD_X_M), rng.uniform(*PAD_Y_M)])
    return {"red": np.array([red, ys[0], yaws[0]]), "blue": np.array([blue, ys[1], yaws[1]]), "pad": pad}


class SceneTask(SimTask):
    """One instruction in the scene. Subclasses name the task, the instruction and the cube it is about."""

    objects_xml = SCENE_XML
    # red cube position, quaternion; blue cube position, quaternion; pad centre (x, y);
    # red cube - end-effector; blue cube - end-effector
    obs_dim = 22
    cube = "red"

    def __init__(self, world: SimWorld, dense_reward: bool = False) -> None:
        super().__init__(world, dense_reward)
        m = world.model
        self._qpos = {c: m.joint(f"{c}_cube").qposadr[0] for c in COLORS}
        self._body = {c: m.body(f"{c}_cube").id for c in COLORS}
        self._pad = m.body("pad").mocapid[0]

    def reset(self, rng: np.random.Generator) -> None:
        self.world.reset()
        layout = sample_layout(rng)
        for color in COLORS:
            x, y, yaw = layout[color]
            self.world.data.qpos[self._qpos[color]:self._qpos[color] + 7] = [x, y, CUBE_HALF_M, *_yaw_quat(yaw)]
        self.world.data.mocap_pos[self._pad] = [*layout["pad"], 0.0]
        self.world.finish_reset(rng)

    def cube_pos_of(self, color: str) -> np.ndarray:
        return self.world.data.xpos[self._body[color]].copy()

    @property
    def cube_pos_m(self) -> np.ndarray:
        """The instruction's cube (the name pick_cube's expert reads)."""
        return self.cube_pos_of(self.cube)

    @property
    def pad_xy_m(self) -> np.ndarray:
        return self.world.data.mocap_pos[self._pad][:2].copy()

    def _resting(self) -> bool:
        return bool(self.cube_pos_m[2] < CUBE_HALF_M + REST_TOL_M)

    def _reach(self, arm_state: ArmState, target_m: np.ndarray) -> float:
        return float(1.0 - np.tanh(10.0 * np.linalg.norm(target_m - arm_state.ee_pos_m)))

    def observation(self) -> np.ndarray:
        d, ee = self.world.data, self.world.data.site_xpos[self.world.ee_site]
        red, blue = (d.xpos[self._body[c]] for c in ("red", "blue"))
        return np.concatenate([red, _hemisphere(d.xquat[self._body["red"]]), blue,
                               _hemisphere(d.xquat[self._body["blue"]]), self.pad_xy_m, red - ee, blue - ee]
                              ).astype(np.float32)


class ScenePick(SceneTask):
    """Lift the cube 10 cm above its resting height (pick_cube's success)."""

    def success(self, arm_state: ArmState) -> bool:
        return bool(self.cube_pos_m[2] >= CUBE_HALF_M + PickCube.lift_m)

    def dense(self, arm_state: ArmState) -> float:
        lift = np.clip((self.cube_pos_m[2] - CUBE_HALF_M) / PickCube.lift_m, 0.0, 1.0)
        return 0.45 * self._reach(arm_state, self.cube_pos_m) + 0.45 * lift


class ScenePushLeft(SceneTask):
    """Push the cube along +y until it rests with its centre beyond PUSH_GOAL_Y_M (10 cm to 26 cm of travel)."""

    # where the closed fingers stand behind the cube to push it: its centre's x, this far on its right, low
    behind_m = 0.05
    push_z_m = 0.02

    def push_point_m(self) -> np.ndarray:
        cube = self.cube_pos_m
        return np.array([cube[0], cube[1] - self.behind_m, self.push_z_m])

    def success(self, arm_state: ArmState) -> bool:
        return bool(self.cube_pos_m[1] >= PUSH_GOAL_Y_M and self._resting())

    def dense(self, arm_state: ArmState) -> float:
        travel = np.clip((self.cube_pos_m[1] - CUBE_Y_M[0]) / (PUSH_GOAL_Y_M - CUBE_Y_M[0]), 0.0, 1.0)
        return 0.3 * self._reach(arm_state, self.push_point_m()) + 0.6 * travel


class ScenePutOnPad(SceneTask):
    """Place the cube on the pad and let go: its centre within 3.5 cm of the pad's (both axes), resting, and the
    fingers open wider than the cube."""

    inside_m = PAD_HALF_M - 0.015

    def _pad_target_m(self) -> np.ndarray:
        return np.array([*self.pad_xy_m, CUBE_HALF_M])

    def on_pad(self) -> bool:
        return bool(np.all(np.abs(self.cube_pos_m[:2] - self.pad_xy_m) < self.inside_m) and self._resting())

    def success(self, arm_state: ArmState) -> bool:
        return self.on_pad() and arm_state.gripper_width_m > RELEASED_WIDTH_M

    def dense(self, arm_state: ArmState) -> float:
        to_pad = np.linalg.norm(self.cube_pos_m - self._pad_target_m())
        return 0.25 * self._reach(arm_state, self.cube_pos_m) + 0.65 * (1.0 - np.tanh(8.0 * to_pad))


class PickRed(ScenePick):
    name, instruction, cube = "scene_pick_red", "pick up the red cube", "red"


class PickBlue(ScenePick):
    name, instruction, cube = "scene_pick_blue", "pick up the blue cube", "blue"


class PushRedLeft(ScenePushLeft):
    name, instruction, cube = "scene_push_red_left", "push the red cube to the left", "red"


class PushBlueLeft(ScenePushLeft):
    name, instruction, cube = "scene_push_blue_left", "push the blue cube to the left", "blue"


class PutRedOnPad(ScenePutOnPad):
    name, instruction, cube = "scene_put_red_on_pad", "put the red cube on the blue pad", "red"


class PutBlueOnPad(ScenePutOnPad):
    name, instruction, cube = "scene_put_blue_on_pad", "put the blue cube on the blue pad", "blue"


SCENE_TASKS: dict[str, type[SceneTask]] = {
    cls.name: cls for cls in (PickRed, PickBlue, PushRedLeft, PushBlueLeft, PutRedOnPad, PutBlueOnPad)}
INSTRUCTIONS: dict[str, str] = {name: cls.instruction for name, cls in SCENE_TASKS.items()}


# --- scripted experts: stateless, like the other tasks' (dojo.sim.experts), so they re-plan after a slip ---


def _held(expert: Expert, state) -> bool:
    """The fingers are closed on the instruction's cube and at rest (pick_cube's expert's test)."""
    err = expert.task.cube_pos_m - state.ee_pos_m
    finger_speed = np.abs(expert.arm.world.data.qvel[expert.arm.world.finger_dof]).max()
    return bool(np.linalg.norm(err) < 0.02 and state.gripper_width_m < 2 * np.sqrt(2) * CUBE_HALF_M + 0.002
                and finger_speed < 0.01)


class PushLeftExpert(Expert):
    """Closed fingers go down behind the cube's right side, then push it along +y past the goal line, keeping
    in line with its centre; if they slip off its side, they rise and come down behind it again."""

    hover_m = 0.08  # end-effector height while moving over the table to the push point
    contact_gap_m = 0.034  # cube half size + the closed fingers' half thickness: the ee's y behind the centre

    def plan(self, state):
        cube = self.task.cube_pos_m + self.aim_offset_m
        ee = state.ee_pos_m
        point = np.array([cube[0], cube[1] - ScenePushLeft.behind_m, ScenePushLeft.push_z_m])
        in_lane = (abs(ee[0] - cube[0]) < 0.015 and ee[1] < cube[1] - 0.025
                   and ee[2] < ScenePushLeft.push_z_m + 0.015)
        if in_lane:
            goal_y = PUSH_GOAL_Y_M + 0.03 - self.contact_gap_m  # a little past the line
            return np.array([cube[0] - ee[0], goal_y - ee[1], ScenePushLeft.push_z_m - ee[2]]), CLOSED
        if np.linalg.norm(point[:2] - ee[:2]) < 0.012:  # above the push point: go down
            return point - ee, CLOSED
        if ee[2] < self.hover_m - 0.01:  # low and out of place: rise clear of the cubes first
            return np.array([0.0, 0.0, self.hover_m - ee[2]]), CLOSED
        return np.array([point[0], point[1], self.hover_m]) - ee, CLOSED


class PutOnPadExpert(PickCubeExpert):
    """pick_cube's grasp, then carry the cube over the pad's centre, lower it to the table and open."""

    carry_m = CUBE_HALF_M + 0.06  # the cube's centre height while carried

    def plan(self, state):
        task = self.task
        if task.on_pad():  # placed: let go and back off upwards
            return np.array([0.0, 0.0, 0.03]), OPEN
        if _held(self, state):
            cube, pad = task.cube_pos_m, task.pad_xy_m + self.aim_offset_m[:2]
            err_xy = pad - cube[:2]
            height = self.carry_m if np.linalg.norm(err_xy) > 0.01 else CUBE_HALF_M + 0.002
            return np.array([err_xy[0], err_xy[1], height - cube[2]]), CLOSED
        return super().plan(state)


SCENE_EXPERTS: dict[str, type[Expert]] = {
    PickRed.name: PickCubeExpert, PickBlue.name: PickCubeExpert,  # it reads the task's cube_pos_m
    PushRedLeft.name: PushLeftExpert, PushBlueLeft.name: PushLeftExpert,
    PutRedOnPad.name: PutOnPadExpert, PutBlueOnPad.name: PutOnPadExpert,
}

# Registered with the twin's other tasks and experts here, where they are defined; dojo/sim/tasks.py imports
# this module at its end, so every reader of TASKS (make_env, `dojo record --sim`, configs) sees them.
TASKS.update(SCENE_TASKS)
EXPERTS.update(SCENE_EXPERTS)

# Operator qualities for prior data of mixed quality (dojo.sim.operators.ScriptedOperator's skill and noise_std):
# the expert; an operator who lapses now and then (70-90 % success per instruction over 20 episodes); a poor one
# who lapses often and shakes (0-25 %). benchmarks/results/README.md has the measured rates.
QUALITIES: dict[str, dict] = {
    "expert": {"skill": 1.0, "noise_std": 0.0},
    "sloppy": {"skill": 0.85, "noise_std": 0.1},
    "poor": {"skill": 0.7, "noise_std": 0.3},
}



# --- a mixed-quality multi-task dataset (the prior data V-GPS's generalist and critic train on) ---


def _quality_counts(episodes: int, quality_mix: dict[str, float]) -> dict[str, int]:
    """Split `episodes` over the qualities by their shares (largest remainder, so the counts add up)."""
    unknown = sorted(set(quality_mix) - set(QUALITIES))
    if unknown or not quality_mix:
        raise ValueError(f"quality_mix must map some of {sorted(QUALITIES)} to shares, got {dict(quality_mix)!r}")
    shares = {q: float(s) for q, s in quality_mix.items()}
    if any(not np.isfinite(s) or s < 0 for s in shares.values()) or sum(shares.values()) <= 0:
        raise ValueError(f"quality_mix shares must be >= 0 and not all 0, got {dict(quality_mix)!r}")
    total = sum(shares.values())
    exact = {q: episodes * s / total for q, s in shares.items()}
    counts = {q: int(np.floor(x)) for q, x in exact.items()}
    for q in sorted(exact, key=lambda q: counts[q] - exact[q])[:episodes - sum(counts.values())]:
        counts[q] += 1
    return counts


def record_multitask_dataset(path, episodes_per_instruction: int,
                             quality_mix: dict[str, float] | None = None, seed: int = 0,
                             tasks=None, max_episode_steps: int = 100, source: str = "prior",
                             progress=None, **env_options) -> dict:
    """Record a mixed-quality multi-task store at `path` (created, or appended to): for every scene instruction,
    `episodes_per_instruction` episodes of dojo.sim.operators.ScriptedOperator, split over the operator
    qualities of QUALITIES by `quality_mix` (name -> share; default: equal shares of each). Successes and
    failures alike are kept, each episode with its task, instruction, operator ("sim-operator:<quality>") and
    reset seed. Episode j of every instruction starts from the same layout (reset seed `seed` + j).

    Returns what the recording measured: per instruction, its episodes, success share, and success share per
    quality. `env_options` go to make_env (obs_mode, image_size, ...); `progress(done, total)` after each episode.
    """
    from dojo.replay.store import EpisodeWriter  # the one place the twin writes a store: prior data for V-GPS
    from dojo.sim.envs import make_env
    from dojo.sim.operators import ScriptedOperator

    if isinstance(episodes_per_instruction, bool) or not isinstance(episodes_per_instruction, int) or \
            episodes_per_instruction < 1:
        raise ValueError(f"episodes_per_instruction must be a positive integer, got {episodes_per_instruction!r}")
    tasks = list(SCENE_TASKS) if tasks is None else list(tasks)
    unknown = [t for t in tasks if t not in SCENE_TASKS]
    if unknown or not tasks:
        raise ValueError(f"unknown scene task(s) {unknown or tasks}; expected some of {sorted(SCENE_TASKS)}")
    counts = _quality_counts(episodes_per_instruction, quality_mix or {q: 1.0 for q in QUALITIES})
    done, total = 0, episodes_per_instruction * len(tasks)
    result: dict[str, dict] = {}
    with EpisodeWriter(path) as writer:
        for t, task in enumerate(tasks):
            env = make_env(task, max_episode_steps=max_episode_steps, **env_options)
            per_quality: dict[str, list[bool]] = {}
            try:
                j = 0
                for q, (quality, n) in enumerate(counts.items()):
                    # Lapses and noise drawn independently per (instruction, quality); layouts shared.
                    operator = ScriptedOperator(env, seed=seed * 1_000 + 100 * t + q, **QUALITIES[quality])
                    for _ in range(n):
                        obs, info = env.reset(seed=seed + j)
                        operator.reset()
                        writer.begin_episode(source=source, task=task, instruction=env.task.instruction,
                                             operator=f"sim-operator:{quality}", robot="sim-twin",
                                             reset_seed=seed + j)
                        while True:
                            next_obs, reward, terminated, truncated, info = env.step(operator.action())
                            writer.add_step(obs, info["executed_action"], reward, terminated, truncated, info=info)
                            obs = next_obs
                            if terminated or truncated:
                                break
                        writer.end_episode(obs, success=bool(info["success"]))
                        per_quality.setdefault(quality, []).append(bool(info["success"]))
                        j, done = j + 1, done + 1
                        if progress is not None:
                            progress(done, total)
            finally:
                env.close()
            outcomes = [s for runs in per_quality.values() for s in runs]
            result[INSTRUCTIONS[task]] = {
                "task": task, "episodes": len(outcomes), "success": float(np.mean(outcomes)),
                "success_by_quality": {q: float(np.mean(runs)) for q, runs in per_quality.items()}}
    return {"store": str(path), "episodes": done, "quality_counts": counts, "instructions": result,
            "success": float(np.mean([r["success"] for r in result.values()]))}
