"""RLPD learns the twin's reach task (state obs, sparse reward) from a few scripted demos in a small step budget."""

import numpy as np

from dojo.launch.cmd_record import record
from dojo.learners import loop
from dojo.replay.sampler import ReplayMirror
from dojo.replay.store import EpisodeWriter
from dojo.sim.experts import make_expert


def test_rlpd_learns_reach_from_demos(tmp_path):
    demo_env = loop.make_env("dojo/Reach-v0")
    writer = EpisodeWriter(str(tmp_path / "demos.zarr"))
    assert record(demo_env.unwrapped, writer, 20, act=make_expert(demo_env), seed=5_000)["success_rate"] == 1.0
    writer.close()
    mirror = ReplayMirror.from_store(str(tmp_path / "demos.zarr"))

    env, eval_env = loop.make_env("dojo/Reach-v0"), loop.make_env("dojo/Reach-v0")
    # the pick_cube settings of benchmarks/results/README.md (no state normalisation), smaller networks and
    # batches for CI, and a stronger demo BC term (3 rather than 1: reach needs the last centimetres right)
    agent = loop.make_agent("rlpd", env.observation_space, env.action_space, seed=0,
                            overrides={"hidden_dims": (128, 128), "num_qs": 2, "utd_ratio": 1, "batch_size": 128,
                                       "backup_entropy": False, "init_temperature": 0.01, "bc_weight": 3.0})
    cfg = loop.LoopConfig(steps=3500, learning_starts=200, random_steps=0, eval_every=3500, eval_episodes=10,
                          checkpoint_every=0, progress=False)
    agent, summary = loop.run_online(env, agent, mirror, cfg, str(tmp_path / "run"), eval_env=eval_env)
    assert summary["updates"] == 3500 - 200
    assert mirror.steps_by_source()["online"] > 1500
    # 50 fresh episodes with the inference snapshot alone (no learner code acting)
    result = loop.evaluate_run(str(tmp_path / "run"), eval_env, episodes=50, seed=777)
    assert result["success_rate"] >= 0.9, result
    assert np.isfinite(result["return_mean"])
