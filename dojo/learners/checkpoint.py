"""Full learner-state checkpoints: params, targets, optimiser states, rng and step, written atomically and
restored exactly (the next update after a restore equals the one without the restart). msgpack, no pickle.
"""

from __future__ import annotations

import dataclasses
import json
import os

import flax.serialization
import jax
import numpy as np

from dojo.fileio import atomic_write
from dojo.learners import agent_module
from dojo.policies.spaces import ActionScale, ObsSpec

FORMAT_VERSION = 1


def _config_to_json(config) -> str:
    return json.dumps(dataclasses.asdict(config))


def config_from_json(module, text: str):
    fields = json.loads(text)
    return module.Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


def save_checkpoint(path: str, agent, extra: dict | None = None) -> None:
    """Write `agent` (and a JSON-able `extra`, e.g. env steps) to `path`: temp file, fsync, rename."""
    meta = {"format_version": FORMAT_VERSION, "agent": agent.config.agent_name,
            "config": _config_to_json(agent.config), "obs_spec": agent.obs_spec.to_dict(),
            "action_low": agent.action_scale.low, "action_high": agent.action_scale.high, "extra": extra or {}}
    blob = {"meta": json.dumps(meta),
            "state": jax.tree_util.tree_map(np.asarray, flax.serialization.to_state_dict(agent))}
    atomic_write(path, flax.serialization.msgpack_serialize(blob))


def read_checkpoint(path: str) -> tuple[dict, dict]:
    """(meta, state) of a checkpoint file, checked to be one this dojo reads. meta holds the agent's file
    name, its config (JSON), obs_spec, action bounds and `extra`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        with open(path, "rb") as f:
            blob = flax.serialization.msgpack_restore(f.read())
        meta = json.loads(blob["meta"])
    except Exception as err:  # msgpack and json raise several types for damaged bytes
        raise ValueError(f"checkpoint {path!r} is not a readable dojo checkpoint ({type(err).__name__}: {err})") \
            from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"checkpoint {path!r} has format_version {meta.get('format_version')!r}, "
                         f"expected {FORMAT_VERSION}")
    return meta, blob["state"]


def load_checkpoint(path: str, config_overrides: dict | None = None):
    """Rebuild the agent saved at `path`. Returns (agent, extra).

    `config_overrides` changes hyperparameters that do not alter parameter shapes (e.g. utd_ratio or
    demo_ratio when offline pre-training turns into online fine-tuning).
    """
    meta, state = read_checkpoint(path)
    module = agent_module(meta["agent"])
    config = config_from_json(module, meta["config"])
    if config_overrides:
        bad = sorted(set(config_overrides) - {f.name for f in dataclasses.fields(config)})
        if bad:
            raise ValueError(f"the {meta['agent']} agent in {path!r} has no option(s) {bad}")
        overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in config_overrides.items()}
        config = dataclasses.replace(config, **overrides)
    spec = ObsSpec.from_dict(meta["obs_spec"])
    scale = ActionScale(tuple(meta["action_low"]), tuple(meta["action_high"]))
    template = module.create(0, spec, scale, config)
    shapes = jax.tree_util.tree_map(np.shape, flax.serialization.to_state_dict(template))
    if shapes != jax.tree_util.tree_map(np.shape, state):
        raise ValueError(f"options {sorted(config_overrides or {})} change the network shapes of the "
                         f"{meta['agent']} agent in {path!r}; only options that keep them can change on a checkpoint")
    agent = flax.serialization.from_state_dict(template, state)
    agent = jax.tree_util.tree_map(jax.numpy.asarray, agent)
    return agent, meta["extra"]
