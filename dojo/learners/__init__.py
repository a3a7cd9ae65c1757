"""JAX agents (one file each), the one `Learner`, checkpoints, and the registry every command uses: the
agent files by name and the named presets, each spelled once here.

A preset is an agent file plus settings over its published defaults (`get_config()`); `agent.name` in a
config, `--agent` on the command line and benchmarks all pick a preset, so a name means the same settings
everywhere. Imported lazily: naming a preset does not import JAX.
"""

from __future__ import annotations

import dataclasses
import importlib

AGENTS = {"sac": "dojo.learners.sac", "calql": "dojo.learners.calql", "iql": "dojo.learners.iql",
          "fql": "dojo.learners.fql", "bc": "dojo.learners.bc"}

# SERL's robot settings plus what keeps the twin's practice from sagging (benchmarks/results/README.md)
_SERL = {"num_qs": 2, "backup_entropy": False, "init_temperature": 0.01, "utd_ratio": 1, "bc_weight": 1.0,
         "discount": 0.97, "n_step": 3, "entropy_rule": "equal", "target_entropy": -4.0}

# name -> (agent file, settings over its published defaults, what it is for)
PRESETS = {
    "rlpd": ("sac", {}, "RLPD's published settings: 10 LayerNorm critics, UTD 20, entropy backup"),
    "serl": ("sac", {**_SERL, "actor_lr": 1e-4},
             "SERL's robot settings (2 critics, no entropy backup, temperature 0.01, UTD 1, HIL-SERL's discount "
             "0.97) plus a BC term on demo rows, 3-step returns, the entropy held at -4 (SAC's -1 per dimension "
             "of the twin's 4-D actions) and an actor rate of 1e-4 (Cal-QL's): what learns the twin's sparse tasks "
             "on a CPU and keeps what it learned (benchmarks/results/README.md)"),
    "serl-practice": ("sac", {**_SERL, "actor_lr": 3e-4, "bc_weight": 3.0, "bc_only_updates": 3000},
                      "serl with SAC's actor rate 3e-4, a BC weight of 3 and an actor that clones the demos for its "
                      "first 3,000 updates, `dojo practice`'s default (it runs them offline, before the first "
                      "attempt): a reset-free session acts with the policy's mode, so a direction gone wrong repeats "
                      "its failure, and every 5 failures cost a person's reset; cloning first, the first attempts "
                      "succeed instead of the first 40-55 failing (benchmarks/results/README.md)"),
    "sac": ("sac", {"num_qs": 2, "num_min_qs": 2, "critic_layer_norm": False, "utd_ratio": 1, "demo_ratio": 0.0},
            "plain SAC (Haarnoja et al.): twin critics, no LayerNorm, one update per env step"),
    "calql": ("calql", {}, "Cal-QL's published settings"),
    "iql": ("iql", {}, "IQL's published locomotion settings"),
    "iql-sparse": ("iql", {"reward_shift": -1.0, "expectile": 0.9, "awr_temperature": 10.0,
                           "hidden_dims": (512, 512, 512, 512)},
                   "IQL's antmaze settings for sparse 0/1 rewards with 4x512 networks: the offline start that "
                   "WSRL fine-tunes (benchmarks/results/README.md)"),
    "calql-vgps": ("calql", {"discount": 0.98, "cql_n_actions": 4, "critic_hidden_dims": (256, 256)},
                   "V-GPS's language-conditioned critic (lc_cql with use_calql): alpha 5, gamma 0.98, 2 critics of "
                   "2x256, CQL with 4 sampled actions; with learner.language_encoder and learner.relabel=vgps"),
    "iql-vgps": ("iql", {"discount": 0.98, "expectile": 0.7, "awr_temperature": 1.0, "tau": 0.002},
                 "V-GPS's IQL critic (lc_iql): expectile 0.7, temperature 1, gamma 0.98, target rate 0.002"),
    "fql": ("fql", {}, "FQL's published settings"),
    "bc": ("bc", {}, "behaviour cloning, OGBench's settings"),
}


def agent_module(name: str):
    """The agent file `name` (sac, calql, iql, fql, bc)."""
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; expected one of {sorted(AGENTS)}")
    return importlib.import_module(AGENTS[name])


def preset_agent(preset: str) -> str:
    """The agent file a preset uses."""
    if preset not in PRESETS:
        raise ValueError(f"unknown agent {preset!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[preset][0]


def agent_config(preset: str, overrides: dict | None = None):
    """(agent module, its Config): the published defaults, the preset's settings, then `overrides`. Every
    value is checked here (the Config checks itself), so a bad option stops before anything runs."""
    module = agent_module(preset_agent(preset))
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(overrides or {}).items()}
    fields = {f.name for f in dataclasses.fields(module.Config)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"agent {preset!r} ({module.Config().agent_name}) has no option(s) {unknown}; "
                         f"it has {sorted(fields - {'agent_name'})}")
    return module, module.get_config(**{**PRESETS[preset][1], **overrides})


def make_agent(preset: str, obs_space, action_space, seed: int = 0, overrides: dict | None = None,
               obs_stats: dict | None = None):
    """A fresh agent from a preset and option overrides, for gymnasium spaces (or an ObsSpec/ActionScale)."""
    module, config = agent_config(preset, overrides)
    return module.create(seed, obs_space, action_space, config, obs_stats=obs_stats)
