"""Full learner-state checkpoints: params, targets, optimiser states, rng and step, written atomically and
restored exactly (the next update after a restore equals the one without the restart). msgpack, no pickle.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os

import flax.serialization
import jax
import numpy as np

from dojo.fileio import atomic_write
from dojo.policies.spaces import ActionScale, ObsSpec

AGENT_MODULES = {"sac": "dojo.learners.sac", "calql": "dojo.learners.calql", "iql": "dojo.learners.iql",
                 "fql": "dojo.learners.fql", "bc": "dojo.learners.bc"}
FORMAT_VERSION = 1


def agent_module(name: str):
    if name not in AGENT_MODULES:
        raise ValueError(f"unknown agent {name!r}; expected one of {sorted(AGENT_MODULES)}")
    return importlib.import_module(AGENT_MODULES[name])


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


def load_checkpoint(path: str, config_overrides: dict | None = None):
    """Rebuild the agent saved at `path`. Returns (agent, extra).

    `config_overrides` changes hyperparameters that do not alter parameter shapes (e.g. utd_ratio or
    demo_ratio when offline pre-training turns into online fine-tuning).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    with open(path, "rb") as f:
        blob = flax.serialization.msgpack_restore(f.read())
    meta = json.loads(blob["meta"])
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"checkpoint {path!r} has format_version {meta.get('format_version')!r}, "
                         f"expected {FORMAT_VERSION}")
    module = agent_module(meta["agent"])
    config = config_from_json(module, meta["config"])
    if config_overrides:
        bad = sorted(set(config_overrides) - {f.name for f in dataclasses.fields(config)})
        if bad:
            raise ValueError(f"unknown {meta['agent']} config keys {bad}")
        config = dataclasses.replace(config, **config_overrides)
    spec = ObsSpec.from_dict(meta["obs_spec"])
    scale = ActionScale(tuple(meta["action_low"]), tuple(meta["action_high"]))
    template = module.create(0, spec, scale, config)
    agent = flax.serialization.from_state_dict(template, blob["state"])
    agent = jax.tree_util.tree_map(jax.numpy.asarray, agent)
    return agent, meta["extra"]
