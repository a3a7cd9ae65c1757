"""A station's config file (`--robot FILE`): one robot arm, its cameras, the teleop device, the safety limits,
the control rate, the task (reward source, reset mode) and the calibration file, checked in full on load.

Drivers are named, not imported, here: the factory (dojo.robot.factory) imports only the ones a file names.
Driver-specific settings go under `options` and are checked by the driver.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

ROBOTS_DIR = Path(__file__).resolve().parents[1] / "launch" / "configs" / "robots"
REWARD_SOURCES = ("sim", "pose", "human", "classifier", "vlm", "preference")
RESET_MODES = ("human", "scripted", "policy")
OBS_MODES = ("state", "pixels", "both")


@dataclasses.dataclass(frozen=True)
class ArmSection:
    driver: str  # twin | ros2
    home_q_rad: tuple[float, ...] | None = None  # None: the driver's own
    max_gripper_width_m: float | None = None  # None: the driver's own
    stale_after_s: float = 0.2  # an arm state older than this stops the episode
    options: dict = dataclasses.field(default_factory=dict)  # the driver's own settings (topics, names, ...)


@dataclasses.dataclass(frozen=True)
class CameraSection:
    driver: str  # twin | realsense
    width: int = 640  # what the camera delivers, pixels
    height: int = 480
    fps: int = 30
    crop: tuple[int, int, int, int] | None = None  # (top, left, height, width) of the delivered image
    resize: tuple[int, int] | None = None  # (height, width) the policy sees, after the crop
    depth: bool = False
    stale_after_s: float = 1.0  # no new frame for this long stops the episode
    mount: str = "fixed"  # fixed (to the world: calibrated as T_cam_base) | ee (on the hand: T_cam_ee)
    options: dict = dataclasses.field(default_factory=dict)  # serial, exposure_us, white_balance_k, ...

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the images the policy sees."""
        if self.resize is not None:
            return tuple(self.resize)
        return (self.crop[2], self.crop[3]) if self.crop is not None else (self.height, self.width)


@dataclasses.dataclass(frozen=True)
class TeleopSection:
    device: str = "none"  # none | spacemouse | gamepad | keyboard | sim-operator
    options: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class SafetySection:
    workspace_min_m: tuple[float, float, float]
    workspace_max_m: tuple[float, float, float]
    max_step_m: float = 0.05
    max_step_rad: float = 0.3
    max_tilt_rad: float | None = None


@dataclasses.dataclass(frozen=True)
class ActionSection:
    dim: int = 4  # 4: dxyz + gripper; 7: dxyz + rotation + gripper
    frame: str = "base"  # base | ee
    scale_m: float = 0.03  # translation per step at |action| = 1
    scale_rad: float = 0.15


@dataclasses.dataclass(frozen=True)
class RewardSection:
    source: str = "human"  # sim (the twin's ground truth) | pose | human | classifier | vlm | preference
    target_pos_m: tuple[float, float, float] | None = None  # pose: where the end-effector must be, base frame
    tolerance_m: float = 0.02  # pose: how close
    gripper: str = "any"  # pose: any | closed | open, at success
    model: str = ""  # classifier / vlm / preference: the model folder
    serve: str = "actor"  # where the model runs: actor (scores every step) | learner (its reward service)
    every: int = 10  # serve=learner: ask for a label every k steps (and on an episode's last step)
    deadline_s: float = 2.0  # serve=learner: wait at most this long for a label; later, it counts as missed


@dataclasses.dataclass(frozen=True)
class ResetSection:
    mode: str = "human"  # human (a person resets the scene) | scripted (a randomised arm pose) | policy (the
    #                      backward task's attempts reset the scene: dojo practice; a person when it asks)
    timeout_s: float = 300.0  # human: how long to wait for the person
    xy_noise_m: float = 0.0  # scripted: uniform offset of the reset pose in x and y (SERL)
    yaw_noise_rad: float = 0.0  # scripted: uniform rotation about z of the reset pose
    person_delay_s: float = 0.0  # the twin's simulated person: how long a scene reset takes


@dataclasses.dataclass(frozen=True)
class BackwardSection:
    """The task that undoes this one, for reset-free practice (`reset.mode: policy`, dojo practice): its
    attempts take turns with the task's own. The twin's task pair knows its own and needs none."""
    name: str = ""
    instruction: str = ""


@dataclasses.dataclass(frozen=True)
class TaskSection:
    name: str
    instruction: str = ""
    max_episode_steps: int = 100
    obs_mode: str = "state"  # state | pixels | both
    reward: RewardSection = dataclasses.field(default_factory=RewardSection)
    reset: ResetSection = dataclasses.field(default_factory=ResetSection)
    backward: BackwardSection = dataclasses.field(default_factory=BackwardSection)


@dataclasses.dataclass(frozen=True)
class Station:
    name: str
    arm: ArmSection
    safety: SafetySection
    task: TaskSection
    cameras: dict = dataclasses.field(default_factory=dict)  # name -> CameraSection
    teleop: TeleopSection = dataclasses.field(default_factory=TeleopSection)
    action: ActionSection = dataclasses.field(default_factory=ActionSection)
    control_hz: float = 10.0
    calibration: str = ""  # the station's calibration file ("" : none yet)
    calibration_max_age_days: float = 30.0  # older than this: `dojo robot check` warns
    # The ChArUco boards as printed (`dojo calibrate board` draws them): one lying on the table (wrist cameras,
    # the table plane), a smaller one the gripper holds (fixed cameras). Keys: squares_x, squares_y,
    # square_m, marker_m, dictionary.
    calibration_boards: dict = dataclasses.field(default_factory=lambda: {
        "table": {"squares_x": 9, "squares_y": 7, "square_m": 0.03, "marker_m": 0.022, "dictionary": "4X4_100"},
        "gripper": {"squares_x": 5, "squares_y": 4, "square_m": 0.04, "marker_m": 0.03, "dictionary": "4X4_100"}})

    def is_twin(self) -> bool:
        return self.arm.driver == "twin"


def robot_file(name_or_path: str) -> Path:
    """A station file: a path, or the name of one shipped in launch/configs/robots/ (e.g. twin)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = ROBOTS_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    known = sorted(p.stem for p in ROBOTS_DIR.glob("*.yaml"))
    raise FileNotFoundError(f"no robot config {name_or_path!r}: give a file, or one of {known}")


def load_station(source: str | Mapping, overrides: Sequence[str] = ()) -> tuple[Station, dict]:
    """(Station, its plain dict) from a file, a name of a shipped one, or a dict (a run's saved `robot:`),
    with `key=value` overrides (keys relative to the file, e.g. task.reward.source=pose). Raises ValueError
    naming the first bad key or value."""
    raw = OmegaConf.load(robot_file(source)) if isinstance(source, (str, Path)) else OmegaConf.create(dict(source))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"robot override must look like key=value, got {item!r}")
        OmegaConf.update(raw, key, OmegaConf.from_dotlist([f"v={value}"])["v"], merge=True, force_add=True)
    data = OmegaConf.to_container(raw, resolve=True) if isinstance(raw, (DictConfig, ListConfig)) else raw
    if not isinstance(data, dict):
        raise ValueError(f"a robot config must be a mapping of sections, got {type(data).__name__}")
    station = build_section(Station, data, "robot")
    _check(station)
    return station, data


def build_section(cls, data, where: str):
    """A (nested) dataclass from a dict, each value checked against the field's type."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where} has unknown key(s) {unknown}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, field in fields.items():
        key = f"{where}.{name}"
        if name not in data:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise ValueError(f"{key} is missing")
            continue
        value, kind = data[name], hints[name]
        if name == "cameras":
            if not isinstance(value, Mapping):
                raise ValueError(f"{key} must map camera names to their settings, got {value!r}")
            values[name] = {str(cam): build_section(CameraSection, cfg, f"{key}.{cam}") for cam, cfg in value.items()}
        elif dataclasses.is_dataclass(kind):
            values[name] = build_section(kind, value, key)
        else:
            values[name] = _typed(value, kind, key)
    return cls(**values)


def _typed(value, kind, key: str):
    """`value` as the annotated type (int, float, str, bool, dict, tuple[...] or one of them | None)."""
    args = typing.get_args(kind)
    if type(None) in args:
        if value is None:
            return None
        kind = next(a for a in args if a is not type(None))
        args = typing.get_args(kind)
    origin = typing.get_origin(kind) or kind
    if origin is tuple:
        ok = isinstance(value, (list, tuple)) and (args[-1] is Ellipsis or len(value) == len(args))
        if ok:
            item = args[0]
            return tuple(_typed(v, item, f"{key}[{i}]") for i, v in enumerate(value))
        count = "a list" if args[-1] is Ellipsis else f"a list of {len(args)}"
        raise ValueError(f"{key} must be {count} of {args[0].__name__}s, got {value!r}")
    if origin is bool:
        ok = isinstance(value, bool)
    elif origin is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif origin is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value
    elif origin is dict:
        ok = isinstance(value, Mapping)
        value = dict(value) if ok else value
    else:
        ok = isinstance(value, origin)
    if not ok:
        raise ValueError(f"{key} must be {'a finite number' if origin is float else 'a ' + origin.__name__}, "
                         f"got {value!r}")
    return value


def _check(s: Station) -> None:
    """Ranges and choices across sections (types were checked while building)."""
    def need(cond: bool, message: str) -> None:
        if not cond:
            raise ValueError(message)

    from dojo.robot.safety import SafetyConfig

    SafetyConfig(**dataclasses.asdict(s.safety))  # the box and step limits check themselves
    need(s.control_hz > 0, f"robot.control_hz must be > 0, got {s.control_hz}")
    need(s.action.dim in (4, 7), f"robot.action.dim must be 4 or 7, got {s.action.dim}")
    need(s.action.frame in ("base", "ee"), f"robot.action.frame must be base or ee, got {s.action.frame!r}")
    need(s.action.scale_m > 0 and s.action.scale_rad > 0,
         f"robot.action.scale_m and scale_rad must be > 0, got {s.action.scale_m}, {s.action.scale_rad}")
    need(s.arm.stale_after_s > 0, f"robot.arm.stale_after_s must be > 0, got {s.arm.stale_after_s}")
    task = s.task
    need(task.max_episode_steps >= 1, f"robot.task.max_episode_steps must be >= 1, got {task.max_episode_steps}")
    need(task.obs_mode in OBS_MODES, f"robot.task.obs_mode must be one of {list(OBS_MODES)}, got {task.obs_mode!r}")
    need(task.obs_mode == "state" or bool(s.cameras),
         f"robot.task.obs_mode={task.obs_mode} needs at least one camera in robot.cameras")
    reward, reset = task.reward, task.reset
    need(reward.source in REWARD_SOURCES,
         f"robot.task.reward.source must be one of {list(REWARD_SOURCES)}, got {reward.source!r}")
    need(reward.source != "sim" or s.is_twin(), "robot.task.reward.source=sim is the twin's ground truth: it "
         f"needs arm.driver=twin, got {s.arm.driver!r}")
    need(reward.source != "pose" or reward.target_pos_m is not None,
         "robot.task.reward.source=pose needs robot.task.reward.target_pos_m")
    need(reward.tolerance_m > 0, f"robot.task.reward.tolerance_m must be > 0, got {reward.tolerance_m}")
    need(reward.gripper in ("any", "closed", "open"),
         f"robot.task.reward.gripper must be any, closed or open, got {reward.gripper!r}")
    need(reward.serve in ("actor", "learner"),
         f"robot.task.reward.serve must be actor or learner, got {reward.serve!r}")
    need(isinstance(reward.every, int) and not isinstance(reward.every, bool) and reward.every >= 1,
         f"robot.task.reward.every must be an integer >= 1, got {reward.every!r}")
    need(isinstance(reward.deadline_s, (int, float)) and 0 < reward.deadline_s < float("inf"),
         f"robot.task.reward.deadline_s must be a number > 0, got {reward.deadline_s!r}")
    need(reset.mode in RESET_MODES, f"robot.task.reset.mode must be one of {list(RESET_MODES)}, got {reset.mode!r}")
    need(reset.timeout_s > 0, f"robot.task.reset.timeout_s must be > 0, got {reset.timeout_s}")
    need(reset.mode != "policy" or bool(task.backward.name) or s.is_twin(),
         "robot.task.reset.mode=policy practises reset-free: name the task that undoes this one in "
         "robot.task.backward.name (and its instruction)")
    need(reset.xy_noise_m >= 0 and reset.yaw_noise_rad >= 0 and reset.person_delay_s >= 0,
         "robot.task.reset.xy_noise_m, yaw_noise_rad and person_delay_s must be >= 0")
    for name, cam in s.cameras.items():
        where = f"robot.cameras.{name}"
        need(cam.width > 0 and cam.height > 0 and cam.fps > 0, f"{where}: width, height and fps must be > 0")
        need(cam.stale_after_s > 0, f"{where}.stale_after_s must be > 0, got {cam.stale_after_s}")
        if cam.crop is not None:
            top, left, h, w = cam.crop
            need(top >= 0 and left >= 0 and h > 0 and w > 0 and top + h <= cam.height and left + w <= cam.width,
                 f"{where}.crop {list(cam.crop)} (top, left, height, width) must lie inside the "
                 f"{cam.height}x{cam.width} image")
        need(cam.resize is None or min(cam.resize) > 0, f"{where}.resize must be (height, width) > 0")
        need(cam.mount in ("fixed", "ee"), f"{where}.mount must be fixed or ee, got {cam.mount!r}")
    need(s.calibration_max_age_days > 0, "robot.calibration_max_age_days must be > 0")
    need(set(s.calibration_boards) <= {"table", "gripper"},
         f"robot.calibration_boards has {sorted(s.calibration_boards)}; expected table and gripper")
