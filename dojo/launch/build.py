"""What the commands build from a checked train.yaml config: the env, the learner, the actor and the operator
who may take over, plus the checks that need them (the agent's options, the init checkpoint, the demos).
Wiring only."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

from dojo.launch.config import ConfigError, reward_settings


def station(cfg):
    """The run's station (env.kind=robot) with the run's reward setting, checked."""
    from dojo.launch.config import station_with_reward
    from dojo.robot.station import load_station

    return load_station(station_with_reward(cfg))[0]


def make_env(cfg, local_reward: bool = False):
    """The run's env as actors and learners see it (canonical obs, actions in [-1, 1]): a station's devices
    through the factory, the twin's task, or any gymnasium id. `local_reward`: a reward model scores in this
    process even where reward.serve=learner (evaluation, recording demos: no link to a reward service)."""
    from omegaconf import OmegaConf

    from dojo.policies.spaces import CanonicalEnv

    if local_reward and cfg.reward.serve != "actor":
        cfg = OmegaConf.merge(cfg, {"reward": {"serve": "actor"}})

    if cfg.env.kind == "robot":
        from dojo.robot.factory import make_robot_env

        env = make_robot_env(station(cfg))
        _closing_on_error(env, lambda: env.task.use_cameras(env.cameras))
    elif cfg.env.kind == "sim":
        from dojo.sim import make_env as make_sim_env

        size = int(cfg.env.image_size)
        env = make_sim_env(cfg.task, obs_mode=cfg.env.obs_mode, image_size=(size, size),
                           control_hz=cfg.env.control_hz, action_dim=cfg.env.action_dim,
                           max_episode_steps=cfg.env.max_episode_steps, randomize=cfg.env.randomize)
        if cfg.reward.source not in ("", "sim"):
            _closing_on_error(env, lambda: _reward_from_model(env, cfg))
    elif cfg.env.kind == "gym":
        import gymnasium as gym

        if cfg.env.id.startswith("dojo/"):
            import dojo.sim  # noqa: F401  registers the dojo/* ids
        try:
            env = gym.make(cfg.env.id, **dict(cfg.env.kwargs))
        except TypeError as err:
            raise ConfigError(f"env.kwargs {dict(cfg.env.kwargs)} do not fit {cfg.env.id}: {err}") from None
    else:
        raise ConfigError("this needs an env to act in: env.kind=sim or gym, got env.kind=none")
    if OmegaConf.select(cfg, "practice.enabled", default=False):  # a run saved before practice had no section
        env = _practice_session(env, cfg)
    try:
        return CanonicalEnv(env, cfg.env.success_key)
    except ValueError as err:
        env.close()
        raise ConfigError(f"{cfg.env.id or cfg.task} cannot be learned by dojo's agents: {err}") from None


def _practice_session(env, cfg):
    """The env as a reset-free practice session (dojo.robot.practice); the station's person (the operator, or the
    twin's simulated one) resets the scene when the session asks."""
    from dojo.robot.practice import PracticeConfig, PracticeSession
    from dojo.sim.person import SimPerson

    config = PracticeConfig(int(cfg.practice.max_failures), float(cfg.practice.reset_timeout_s),
                            str(cfg.practice.get("after_failure", "retry")))  # retry: a run saved before
    person = getattr(env, "person", None) or SimPerson(float(cfg.practice.person_delay_s))  # a station's, or the twin's
    return PracticeSession(env, person, config)


def resume_practice(env, journal_path) -> None:
    """A practice session takes up where the attempts in this actor's journal left it (after a restart)."""
    from dojo.replay.store import StoreReader

    session = env
    while session is not None and not hasattr(session, "resume"):
        session = getattr(session, "env", None)
    if session is None or not (Path(journal_path) / "zarr.json").exists():
        return
    session.resume(StoreReader(journal_path).episodes)


def eval_config(cfg):
    """The config an evaluation's env is made from: in the twin its ground truth scores success, whatever
    reward model the run practised with; elsewhere the run's reward model, scored in this process."""
    from omegaconf import OmegaConf

    if cfg.env.kind == "sim":
        return OmegaConf.merge(cfg, {"reward": {"source": "", "model": "", "serve": "auto"}})
    return OmegaConf.merge(cfg, {"reward": {"serve": "actor"}}) if cfg.reward.source else cfg


def _closing_on_error(env, step) -> None:
    """Run `step` on a built env; if it fails, close the env (its devices, renderers) before raising."""
    try:
        step()
    except BaseException:
        env.close()
        raise


def _reward_from_model(env, cfg) -> None:
    """Put the twin's task behind a StationTask whose reward and episode end come from cfg.reward.model, as on
    a station: the twin's truth then only places the objects. The model reads the env's cameras where they
    have its image size, else cameras of its own on the same world (a state policy has none)."""
    from dojo.robot.station import RewardSection, TaskSection
    from dojo.robot.tasks import StationTask
    from dojo.sim.camera import SimCamera

    section = TaskSection(name=cfg.task, max_episode_steps=int(cfg.env.max_episode_steps),
                          reward=RewardSection(**reward_settings(cfg)))
    task = StationTask(section, env.task, obs_features=env.config.obs_mode != "pixels",
                       max_gripper_width_m=env.arm.max_gripper_width_m)
    size = task.manifest.image_size or tuple([int(cfg.env.image_size)] * 2)
    cameras = {}
    for name in task.manifest.cameras:
        have = env.cameras.get(name)
        cameras[name] = have if have is not None and tuple(have.shape) == tuple(size) else \
            SimCamera(env.task.world, name, size)
    task.use_cameras(cameras)
    env.task = task


def reward_service(cfg):
    """The learner's reward service (dojo.rewards.service) with the run's reward model loaded, when the model
    runs there (reward.serve=learner, or the station's robot.task.reward.serve); else None."""
    from dojo.robot.tasks import MODEL_SOURCES

    reward = dataclasses.asdict(station(cfg).task.reward) if cfg.env.kind == "robot" else reward_settings(cfg)
    if reward["source"] not in MODEL_SOURCES or reward["serve"] != "learner":
        return None
    from dojo.rewards.base import load_reward_model
    from dojo.rewards.service import RewardService

    return RewardService(load_reward_model(reward["model"]))


def serve_reward(env, client) -> None:
    """reward.serve=learner: the env's task asks the learner's reward service through `client` (a LinkClient)."""
    from dojo.rewards.service import RemoteReward

    task = getattr(env.unwrapped, "task", None)
    if task is None or getattr(task, "manifest", None) is None or task.reward.serve != "learner":
        return
    task.serve_from(RemoteReward(client, task.reward.deadline_s, expect_source=task.reward_source),
                    env.unwrapped.config.max_episode_steps)


def run_spaces(cfg) -> tuple:
    """(observation space, action space) of the run: its env's, canonical; with env.kind=none, the offline
    store's."""
    if cfg.env.kind == "none":
        return _store_spaces(cfg.demos.store)
    if cfg.env.kind == "robot":  # without its devices: the learner may be on another machine
        from omegaconf import OmegaConf

        from dojo.robot.factory import station_spaces
        from dojo.robot.practice import session_space

        obs_space, action_space = station_spaces(station(cfg))
        practising = OmegaConf.select(cfg, "practice.enabled", default=False)
        return (session_space(obs_space) if practising else obs_space), action_space
    env = make_env(cfg)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def _store_spaces(store: str) -> tuple:
    from dojo.learners.learner import spaces_of
    from dojo.policies.spaces import ObsSpec
    from dojo.replay.store import StoreError, StoreReader

    try:
        reader = StoreReader(store)
    except (StoreError, FileNotFoundError) as err:
        raise ConfigError(f"demos.store: {err}") from None
    if reader.obs_spec is None or "state" not in reader.obs_spec:
        raise ConfigError(f"demos.store {store} holds no steps with a 'state' observation to learn from")
    cams = tuple((k, tuple(shape)) for k, (shape, dtype) in sorted(reader.obs_spec.items())
                 if k != "state" and len(shape) == 3 and shape[-1] == 3)
    return spaces_of(ObsSpec(reader.obs_spec["state"][0][0], cams), reader.action_dim)


def check_learner_inputs(cfg, obs_space, action_space) -> None:
    """What a learner would trip on later, checked now: the agent and its options, the init checkpoint and
    the offline store, each against this run's observations and actions."""
    from dojo import runs
    from dojo.learners import agent_config, agent_module, preset_agent
    from dojo.learners.checkpoint import config_from_json, read_checkpoint
    from dojo.learners.learner import agent_overrides, sampled_n_step
    from dojo.policies.spaces import ObsAdapter, ObsSpec
    from dojo.replay.store import StoreError, StoreReader

    spec, action_dim = ObsAdapter(obs_space).spec, int(action_space.shape[0])
    try:
        if cfg.agent.init:
            path = runs.checkpoint_path(cfg.agent.init)
            meta, _ = read_checkpoint(str(path))
            config = config_from_json(agent_module(meta["agent"]), meta["config"])
            config = dataclasses.replace(config, **agent_overrides(cfg, meta["agent"]))  # checks the options
            got = (ObsSpec.from_dict(meta["obs_spec"]), len(meta["action_low"]))
            if got != (spec, action_dim):
                raise ValueError(f"agent.init {path} was trained on observations {got[0]} and {got[1]} actions; "
                                 f"this run has {spec} and {action_dim}")
        else:
            config = agent_config(cfg.agent.name, agent_overrides(cfg, preset_agent(cfg.agent.name)))[1]
        n_step = sampled_n_step(cfg.learner, config)
        if n_step > 1 and getattr(config, "enable_calql", False):
            raise ValueError(f"learner.n_step={n_step}: Cal-QL's Monte-Carlo bound holds for one-step returns only; "
                             "use learner.n_step=1 (or agent.calql.enable_calql=false)")
        if cfg.demos.store:
            reader = StoreReader(cfg.demos.store)
            need = {"state": (spec.state_dim,), **dict(spec.cameras)}
            have = {k: shape for k, (shape, _) in (reader.obs_spec or {}).items()}
            wrong = {k: (have.get(k), shape) for k, shape in need.items() if have.get(k) != tuple(shape)}
            if reader.num_steps and (wrong or reader.action_dim != action_dim):
                raise ValueError(f"demos.store {cfg.demos.store} holds observations {have} and "
                                 f"{reader.action_dim} actions; this run needs {need} and {action_dim}")
    except (ValueError, FileNotFoundError, StoreError) as err:
        raise ConfigError(str(err) if not isinstance(err, StoreError) else f"demos.store: {err}") from None


def make_learner(run, cfg, *, serve: bool, eval_env=None):
    from dojo.learners.learner import Learner

    obs_space, action_space = run_spaces(cfg)
    return Learner(run, cfg, obs_space, action_space, serve=serve, eval_env=eval_env)


def actor_config(cfg):
    from omegaconf import OmegaConf

    from dojo.robot.actor import ActorConfig

    robot = cfg.env.kind == "robot"
    without = cfg.actor.without_learner
    if without == "auto":  # the twin acts on with its last policy; a robot (the hardware path) holds
        without = "hold" if robot else "act"
    return ActorConfig(actor_id=cfg.actor.id, random_steps=cfg.actor.random_steps, without_learner=without,
                       give_up_s=cfg.actor.give_up_s, max_lead_steps=0 if robot else cfg.actor.max_lead_steps,
                       realtime=cfg.env.realtime and not robot, robot=cfg.robot.name if robot else "sim-twin",
                       seed=cfg.seed, noise_scale=float(OmegaConf.select(cfg, "actor.noise_scale", default=1.0)))


def make_operator(cfg, env):
    """The person (or the twin's simulated operator) who may take over from the policy, or None. A station
    brings its own teleop device; intervention.operator=sim replaces it with the twin's operator."""
    kind = cfg.intervention.operator
    if cfg.env.kind == "robot" and kind != "sim":
        return env.unwrapped.teleop
    if kind == "none":
        return None
    from dojo.robot.teleop import make_teleop

    if kind == "sim":
        return make_teleop("sim-operator", env=env.unwrapped, mode="intervening", rule=cfg.intervention.rule,
                           skill=cfg.intervention.skill, noise_std=cfg.intervention.noise_std,
                           takeover_steps=cfg.intervention.takeover_steps,
                           aim_offset_m=tuple(cfg.intervention.aim_offset_m), seed=cfg.seed)
    return make_teleop(kind)


def journal_path(cfg, keys: Path) -> Path:
    """One journal per actor and learner run: the learner's public key names the run it streams to."""
    if cfg.actor.journal:
        return Path(cfg.actor.journal)
    learner_key = hashlib.sha256((keys / "learner.key").read_bytes()).hexdigest()[:12]
    return Path(os.environ.get("DOJO_JOURNAL_DIR", "journal")) / f"{cfg.actor.id}-{learner_key}.zarr"
