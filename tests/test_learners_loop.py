"""The online/offline loops and the `dojo learn` / `dojo eval` commands, on real envs and real stores."""

import json
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np

from dojo.learners import loop
from dojo.replay.sampler import ReplayMirror
from dojo.replay.store import EpisodeWriter


class PointReach(gym.Env):
    """A point in the plane must reach a goal; sparse reward 1 and termination on success.
    Actions are in [-0.1, 0.1]^2 (metres per step) to exercise the [-1, 1] boundary scaling."""

    observation_space = gym.spaces.Box(-2, 2, (4,), np.float32)
    action_space = gym.spaces.Box(-0.1, 0.1, (2,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-0.5, 0.5, 2)
        self.goal = self.np_random.uniform(-0.5, 0.5, 2)
        self.t = 0
        return self._obs(), {}

    def _obs(self):
        return np.concatenate([self.pos, self.goal - self.pos]).astype(np.float32)

    def step(self, action):
        self.pos = np.clip(self.pos + np.clip(action, -0.1, 0.1), -1, 1)
        self.t += 1
        success = bool(np.linalg.norm(self.goal - self.pos) < 0.1)
        return self._obs(), float(success), success, self.t >= 30, {"success": success}


def add_expert_demos(mirror, episodes):
    """Scripted demos: head straight for the goal (the RLPD setting: demos + online data, 50/50)."""
    env = PointReach()
    for ep in range(episodes):
        obs, _ = env.reset(seed=1000 + ep)
        states, actions, rewards, terms, truncs = [obs], [], [], [], []
        done = False
        while not done:
            action = np.clip(obs[2:], -0.1, 0.1)
            obs, reward, terminated, truncated, _ = env.step(action)
            states.append(obs)
            actions.append(action / 0.1)  # stored in [-1, 1]
            rewards.append(reward), terms.append(terminated), truncs.append(truncated)
            done = terminated or truncated
        mirror.add_episode({"state": np.stack(states)}, np.stack(actions), np.array(rewards), np.array(terms),
                           np.array(truncs), source="demo")


def test_rlpd_online_loop_learns_point_reach(tmp_path):
    env = PointReach()
    agent = loop.make_agent("rlpd", env.observation_space, env.action_space, seed=0,
                            overrides={"hidden_dims": (64, 64), "num_qs": 4, "utd_ratio": 4, "batch_size": 64,
                                       "backup_entropy": False, "init_temperature": 0.01})
    cfg = loop.LoopConfig(steps=4000, learning_starts=300, random_steps=0, eval_every=2000, eval_episodes=20,
                          checkpoint_every=0, progress=False)
    mirror = ReplayMirror(capacity_steps=10_000)
    add_expert_demos(mirror, 10)
    demo_steps = mirror.num_steps
    agent, summary = loop.run_online(env, agent, mirror, cfg, str(tmp_path), eval_env=PointReach())
    assert summary["env_steps"] == 4000 and summary["updates"] == 4000 - 300
    assert mirror.num_steps - demo_steps > 2000
    assert summary["success_rate"] >= 0.9, summary
    # the snapshot alone (no learner code) reproduces the result
    result = loop.evaluate_run(str(tmp_path), PointReach(), episodes=20, seed=10_000 + 4000)
    assert result["success_rate"] == summary["success_rate"]
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert rows[-1]["env_steps"] == 4000


def _record_pendulum_store(path, episodes=3, source="demo"):
    env = gym.make("Pendulum-v1", max_episode_steps=40)
    rng = np.random.default_rng(0)
    with EpisodeWriter(path, obs_spec={"state": ((3,), np.float32)}, action_dim=1) as writer:
        for ep in range(episodes):
            obs, _ = env.reset(seed=ep)
            writer.begin_episode(source=source)
            done = False
            while not done:
                action = rng.uniform(-1, 1, 1).astype(np.float32)
                next_obs, reward, terminated, truncated, _ = env.step(2.0 * action)
                writer.add_step({"state": obs.astype(np.float32)}, action, reward / 16.0, terminated, truncated)
                obs, done = next_obs, terminated or truncated
            writer.end_episode({"state": obs.astype(np.float32)}, success=False)


def _dojo(*args):
    out = subprocess.run([sys.executable, "-m", "dojo.launch.cli", *args], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    return out.returncode, out.stdout.strip().splitlines(), out.stderr


def test_commands_offline_then_online_finetune_and_eval(tmp_path):
    store = str(tmp_path / "demos.zarr")
    _record_pendulum_store(store)
    small = ["--set", "actor_hidden_dims=[16]", "--set", "critic_hidden_dims=[16]", "--set", "batch_size=16",
             "--set", "cql_n_actions=2", "--no-progress"]
    rc, out, err = _dojo("learn", "--offline", "--data", store, "--agent", "calql", "--steps", "30",
                         "--out", str(tmp_path / "offline"), *small)
    assert rc == 0, err
    summary = json.loads(out[-1])
    assert summary["updates"] == 30 and summary["env_steps"] == 0

    # Cal-QL fine-tuning online with a 50/50 demo mix, from the offline checkpoint
    rc, out, err = _dojo("learn", "--env", "Pendulum-v1", "--env-arg", "max_episode_steps=40", "--init",
                         str(tmp_path / "offline" / "checkpoint.msgpack"), "--demos", store, "--demo-ratio", "0.5",
                         "--steps", "60", "--learning-starts", "20", "--eval-every", "60", "--eval-episodes", "1",
                         "--store", str(tmp_path / "online.zarr"), "--out", str(tmp_path / "online"), "--no-progress")
    assert rc == 0, err
    summary = json.loads(out[-1])
    assert summary == {**summary, "env_steps": 60, "updates": 40}
    assert set(summary) == {"env_steps", "updates", "success_rate", "wall_s"}
    # the online episodes also reached the durable store
    assert ReplayMirror.from_store(str(tmp_path / "online.zarr")).num_steps == 40

    # WSRL: frozen-policy warm-up, then online data only
    rc, out, err = _dojo("learn", "--env", "Pendulum-v1", "--env-arg", "max_episode_steps=40", "--init",
                         str(tmp_path / "offline" / "checkpoint.msgpack"), "--warmup", "40", "--demo-ratio", "0",
                         "--steps", "50", "--learning-starts", "0", "--eval-every", "0",
                         "--out", str(tmp_path / "wsrl"), "--no-progress")
    assert rc == 0, err
    assert json.loads(out[-1])["updates"] == 10

    rc, out, err = _dojo("eval", "--run", str(tmp_path / "online"), "--env", "Pendulum-v1", "--env-arg",
                         "max_episode_steps=20", "--episodes", "2")
    assert rc == 0, err
    assert json.loads(out[-1])["success_rate"] == 0.0

    rc, out, err = _dojo("learn", "--env", "Pendulum-v1", "--agent", "nope", "--steps", "5", "--out",
                         str(tmp_path / "bad"))
    assert rc == 2 and "unknown agent 'nope'" in err
    rc, out, err = _dojo("learn", "--env", "Pendulum-v1", "--set", "hidden_dimz=[3]", "--steps", "5", "--out",
                         str(tmp_path / "bad"))
    assert rc == 2 and "hidden_dimz" in err
