"""omegaconf YAML configs under launch/configs/ with `key=value` overrides, checked before anything runs.

An unknown key or a value of the wrong type stops with a `ConfigError` naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

CONFIG_DIR = Path(__file__).parent / "configs"


class ConfigError(ValueError):
    pass


def load_config(name: str, overrides: Sequence[str] = (), open_sections: Sequence[str] = (),
                replace: dict | None = None) -> DictConfig:
    """Load configs/NAME.yaml (or a .yaml path, e.g. a run's saved config), set the `replace` keys to their
    values (e.g. a station file as `robot`), then apply the overrides. Keys under an `open_sections` prefix may
    be new (their owner checks them, e.g. an agent's hyperparameters); every other key must exist already."""
    path = Path(name) if str(name).endswith(".yaml") else CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"no config named {name!r}; known configs: {known}")
    config = OmegaConf.load(path)
    for key, value in (replace or {}).items():
        OmegaConf.update(config, key, value, merge=False, force_add=True)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"config override must look like key=value, got {item!r}")
        default = OmegaConf.select(config, key, default=_MISSING)
        if default is _MISSING and any(key.startswith(f"{section}.") for section in open_sections):
            default = None
        if default is _MISSING:
            raise ConfigError(f"unknown config key {key!r} in {item!r}; known keys: {sorted(_leaf_keys(config))}")
        value = OmegaConf.create({"v": raw} if raw == "" else OmegaConf.from_dotlist([f"v={raw}"]))["v"]
        OmegaConf.update(config, key, _coerce(key, default, value), merge=False, force_add=True)
    OmegaConf.set_readonly(config, True)
    return config


_MISSING = object()


def _coerce(key: str, default, value):
    """Accept a value only if it fits the type of the default it replaces (int -> float allowed)."""
    if default is None or isinstance(default, (DictConfig, ListConfig)) and isinstance(value, type(default)):
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, str):
        ok, value = True, str(value)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(f"config key {key!r} expects a {type(default).__name__} (default {default!r}), "
                          f"got {value!r}")
    return value


def _leaf_keys(config: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for k, v in config.items():
        full = f"{prefix}{k}"
        keys += _leaf_keys(v, full + ".") if isinstance(v, DictConfig) else [full]
    return keys


# --- the checks of train.yaml's values (dojo learn / learner / actor / train) ------------------------------
OPEN_SECTIONS = ("agent.sac", "agent.calql", "agent.iql", "agent.fql", "agent.bc", "env.kwargs", "robot",
                 "actors.resources")
ENV_KINDS = ("sim", "gym", "robot", "none")
OBS_MODES = ("state", "pixels", "both")
INTERVENTION_OPERATORS = ("none", "sim", "spacemouse", "gamepad", "keyboard")


def actor_ids(count: int) -> list[str]:
    return [f"actor-{i}" for i in range(count)]


def check_train_config(cfg: DictConfig) -> None:
    """Every value's range, enum and id, before anything runs: raises ConfigError naming the key, the
    value and what was expected. The agent's options and stores are checked where a learner is built."""
    from dojo.link.keys import check_key_name
    from dojo.rewards.interventions import INTERVENTION_MODES

    _number(cfg, "seed", 0, integer=True)
    _choice(cfg, "env.kind", ENV_KINDS)
    if cfg.env.kind == "sim":
        from dojo.sim.tasks import TASKS

        _choice(cfg, "task", tuple(sorted(TASKS)))
    elif cfg.env.kind == "gym":
        _gym_id(cfg.env.id)
    elif cfg.env.kind == "robot":
        from dojo.robot.station import load_station

        if not cfg.robot:
            raise ConfigError("env.kind=robot needs a station: give --robot FILE (e.g. --robot twin)")
        _wrap(lambda: load_station(station_with_reward(cfg)))
    elif cfg.learner.env_steps > 0:
        raise ConfigError(f"learner.env_steps={cfg.learner.env_steps} needs an env to act in: env.kind=sim or gym, "
                          f"got env.kind=none")
    _check_reward(cfg)
    _choice(cfg, "env.obs_mode", OBS_MODES)
    _number(cfg, "env.image_size", 8, integer=True)
    _number(cfg, "env.control_hz", 0, strict=True)
    _choice(cfg, "env.action_dim", (4, 7))
    _number(cfg, "env.max_episode_steps", 1, integer=True)
    if not cfg.env.success_key:
        raise ConfigError("env.success_key must name the info key of success, got ''")
    _number(cfg, "demos.episodes", 0, integer=True)
    for key in ("learner.env_steps", "learner.offline_updates", "learner.start_after_steps", "learner.eval_every",
                "actor.random_steps", "actor.max_lead_steps", "eval.episodes"):
        _number(cfg, key, 0, integer=True)
    if cfg.learner.n_step is not None:
        _number(cfg, "learner.n_step", 1, integer=True)
    for key in ("learner.snapshot_every_updates", "learner.eval_episodes",
                "intervention.takeover_steps"):
        _number(cfg, key, 1, integer=True)
    _number(cfg, "learner.capacity_steps", 1000, integer=True)
    for key in ("learner.updates_per_step", "learner.checkpoint_every_s", "learner.log_every_s", "actor.give_up_s"):
        _number(cfg, key, 0, strict=True)
    if cfg.learner.demo_ratio is not None:
        _number(cfg, "learner.demo_ratio", 0, 1)
    _choice(cfg, "learner.normalize", ("none", "demos"))
    if "relabel" in cfg.learner:  # absent from runs saved before it
        _check_language(cfg)
    if not (cfg.learner.devices == "all" or str(cfg.learner.devices).isdigit() and int(cfg.learner.devices) >= 1):
        raise ConfigError(f"learner.devices must be 'all' or a number >= 1, got {cfg.learner.devices!r}")
    _number(cfg, "actors.count", 1, integer=True)
    _choice(cfg, "actors.backend", ("local", "ray"))
    actors = list(cfg.learner.actors)
    if not actors or len(set(actors)) != len(actors):
        raise ConfigError(f"learner.actors must be a non-empty list of distinct actor ids, got {actors}")
    if len(actors) < cfg.actors.count:
        raise ConfigError(f"actors.count={cfg.actors.count} needs as many learner.actors, got {actors}")
    for name in actors + [cfg.actor.id]:
        _wrap(lambda: check_key_name(name, "an actor id"))
    _choice(cfg, "intervention.mode", INTERVENTION_MODES)
    _choice(cfg, "intervention.operator", INTERVENTION_OPERATORS)
    _choice(cfg, "intervention.rule", ("deviation", "value"))
    _number(cfg, "intervention.skill", 0, 1)
    _number(cfg, "intervention.noise_std", 0)
    offset = cfg.intervention.aim_offset_m
    if not (isinstance(offset, ListConfig) and len(offset) == 3 and all(_finite(v) for v in offset)):
        raise ConfigError(f"intervention.aim_offset_m must be 3 finite numbers (x, y, z in m), got {offset}")
    if not (isinstance(cfg.link.host, str) and cfg.link.host):
        raise ConfigError(f"link.host must be a host name or address, got {cfg.link.host!r}")
    _number(cfg, "link.port", 1, 65535, integer=True)
    _choice(cfg, "actor.without_learner", ("auto", "act", "hold"))
    if "max_wall_s" in cfg.learner:  # absent from runs saved before it
        _number(cfg, "learner.max_wall_s", 0)
    if "noise_scale" in cfg.actor:  # absent from runs saved before it
        _number(cfg, "actor.noise_scale", 0, 1)
    if "practice" in cfg:
        _check_practice(cfg)


def _check_practice(cfg: DictConfig) -> None:
    if not isinstance(cfg.practice.enabled, bool):
        raise ConfigError(f"practice.enabled must be true or false, got {cfg.practice.enabled!r}")
    _number(cfg, "practice.max_failures", 1, integer=True)
    _number(cfg, "practice.reset_timeout_s", 0, strict=True)
    _number(cfg, "practice.person_delay_s", 0)
    _number(cfg, "practice.videos", 0, integer=True)
    if "after_failure" in cfg.practice:  # absent from runs saved before it
        from dojo.robot.practice import AFTER_FAILURE

        _choice(cfg, "practice.after_failure", AFTER_FAILURE)
    if not cfg.practice.enabled:
        return
    if cfg.env.kind == "robot":
        reset = OmegaConf.select(cfg, "robot.task.reset.mode")
        if reset != "policy":
            raise ConfigError(f"practice.enabled on a station needs robot.task.reset.mode=policy (the backward task "
                              f"resets the scene), got {reset!r}")
        return
    if cfg.env.kind != "sim":
        raise ConfigError(f"practice.enabled needs a task pair: the twin's (env.kind=sim) or a station's "
                          f"(env.kind=robot), got env.kind={cfg.env.kind}")
    from dojo.sim.task_pair import PAIR_TASKS

    if cfg.task not in PAIR_TASKS:
        raise ConfigError(f"practice.enabled needs a reset-free task pair's task, one of {sorted(PAIR_TASKS)}; "
                          f"got task={cfg.task}")


def _check_language(cfg: DictConfig) -> None:
    """learner.language_encoder and learner.relabel: offline training of a V-GPS critic on demos.store."""
    _choice(cfg, "learner.relabel", ("", "vgps", "vgps-success"))
    folder = cfg.learner.language_encoder
    if folder and not Path(folder).is_dir():
        raise ConfigError(f"learner.language_encoder must be a local folder holding a language model, got {folder!r}")
    if folder and cfg.learner.env_steps > 0:
        raise ConfigError(f"learner.language_encoder conditions offline training only (dojo learn --offline), "
                          f"got learner.env_steps={cfg.learner.env_steps}")
    if (folder or cfg.learner.relabel) and not cfg.demos.store:
        key = "learner.language_encoder" if folder else "learner.relabel"
        raise ConfigError(f"{key} applies to the offline data: give demos.store (--data STORE)")


def station_with_reward(cfg: DictConfig) -> dict:
    """The station section as a plain dict, with reward.source / reward.model (when set) in place of its
    robot.task.reward ones: one reward setting for `dojo train` and `dojo actor`, whatever the env."""
    station = OmegaConf.to_container(cfg.robot, resolve=True)
    reward = station.setdefault("task", {}).setdefault("reward", {})
    if cfg.reward.source:
        reward.update({k: v for k, v in reward_settings(cfg).items() if v != ""})
    elif cfg.reward.serve != "auto":
        reward["serve"] = cfg.reward.serve
    return station


def reward_settings(cfg) -> dict:
    """The run's reward.* keys as a station's robot.task.reward section takes them; reward.serve=auto runs a VLM
    in the learner's reward service and any other model in the actor."""
    serve = cfg.reward.serve if cfg.reward.serve != "auto" else "learner" if cfg.reward.source == "vlm" else "actor"
    return {"source": cfg.reward.source, "model": cfg.reward.model, "serve": serve,
            "every": int(cfg.reward.every), "deadline_s": float(cfg.reward.deadline_s)}


def _check_reward(cfg: DictConfig) -> None:
    """reward.source fits the env, and a model source names a model folder that loads (checked now, so a bad
    folder or a hub id stops the run before any process starts)."""
    from dojo.robot.station import REWARD_SOURCES
    from dojo.robot.tasks import MODEL_KINDS, MODEL_SOURCES

    source, model = cfg.reward.source, cfg.reward.model
    _choice(cfg, "reward.serve", ("auto", "actor", "learner"))
    _number(cfg, "reward.every", 1, integer=True)
    _number(cfg, "reward.deadline_s", 0, strict=True)
    if cfg.env.kind == "robot":
        _choice(cfg, "reward.source", ("", *REWARD_SOURCES))
    elif source:
        if cfg.env.kind != "sim":
            raise ConfigError(f"reward.source={source} needs env.kind=sim or robot, got env.kind={cfg.env.kind}")
        _choice(cfg, "reward.source", ("", "sim", *MODEL_SOURCES))
    if source in MODEL_SOURCES:
        if not model:
            raise ConfigError(f"reward.source={source} needs reward.model, the folder of a `dojo reward train` model")
        from dojo.rewards.base import read_manifest

        try:
            manifest = read_manifest(model)
        except (ValueError, FileNotFoundError) as err:
            raise ConfigError(f"reward.model: {err}") from None
        if manifest.kind not in MODEL_KINDS[source]:
            raise ConfigError(f"reward.model {model} is a {manifest.kind} model; reward.source={source} expects "
                              f"{' or '.join(MODEL_KINDS[source])}")
    elif cfg.reward.serve == "learner" and cfg.env.kind != "robot":
        raise ConfigError(f"reward.serve=learner serves a reward model, but reward.source={source!r} reads none; "
                          f"set reward.source to one of {list(MODEL_SOURCES)}")
    elif model:
        raise ConfigError(f"reward.model is set but reward.source={source!r} reads no model; set "
                          f"reward.source to one of {list(MODEL_SOURCES)}")


def _wrap(check) -> None:
    try:
        check()
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value \
        and abs(value) != float("inf")


def _number(cfg: DictConfig, key: str, low: float, high: float | None = None, *, integer: bool = False,
            strict: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    ok = _finite(value) and (not integer or isinstance(value, int))
    ok = ok and (value > low if strict else value >= low) and (high is None or value <= high)
    if not ok:
        kind = "an integer" if integer else "a number"
        bound = f"> {low}" if strict else (f"in [{low}, {high}]" if high is not None else f">= {low}")
        raise ConfigError(f"{key} must be {kind} {bound}, got {value!r}")


def _choice(cfg: DictConfig, key: str, options: tuple) -> None:
    value = OmegaConf.select(cfg, key)
    if value not in options:
        raise ConfigError(f"{key} must be one of {list(options)}, got {value!r}")


def _gym_id(env_id: str) -> None:
    import gymnasium as gym

    if not env_id:
        raise ConfigError("env.kind=gym needs env.id, a gymnasium id such as Pendulum-v1")
    if env_id.startswith("dojo/"):
        import dojo.sim  # noqa: F401 (registers the dojo/* ids)
    try:
        gym.spec(env_id)
    except gym.error.Error as err:
        raise ConfigError(f"env.id {env_id!r} is not a registered gymnasium env ({err})") from None
