"""V-GPS steering: the selection rule, the normalisation round trip and the chunk execution against hand-computed
values; V-GPS's reward relabelling on a real store; a language-conditioned critic trained offline by the learner;
a steered run through the actor on the twin (`dojo steer`, then `dojo eval` of that run); bad input in one line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from dojo.policies.generalist import unnormalize_actions
from dojo.policies.steering import ChunkExecution, critic_actions, normalize_to_bounds, select_candidate, selection_probs
from dojo.rewards.relabel import vgps_episode_pieces, vgps_mc_return, vgps_rewards

# --- selection ----------------------------------------------------------------------------------------


def test_beta_zero_picks_the_argmax_and_the_first_of_ties():
    rng = np.random.default_rng(0)
    assert select_candidate([1.0, 3.0, 2.0], 0.0, rng) == 1
    assert select_candidate([5.0, -1.0, 5.0], 0.0, rng) == 0
    assert selection_probs([1.0, 3.0, 2.0], 0.0).tolist() == [0.0, 1.0, 0.0]


def test_beta_gives_softmax_of_q_over_beta():
    e1, e2, e3 = math.e, math.e ** 2, math.e ** 3
    total = e1 + e2 + e3
    assert np.allclose(selection_probs([1.0, 3.0, 2.0], 1.0), [e1 / total, e3 / total, e2 / total])
    # beta = 2 halves the gaps: softmax([0.5, 1.5, 1.0])
    z = [math.exp(0.5), math.exp(1.5), math.exp(1.0)]
    assert np.allclose(selection_probs([1.0, 3.0, 2.0], 2.0), [v / sum(z) for v in z])
    rng = np.random.default_rng(3)
    draws = np.bincount([select_candidate([1.0, 3.0, 2.0], 1.0, rng) for _ in range(4000)], minlength=3) / 4000
    assert np.allclose(draws, [e1 / total, e3 / total, e2 / total], atol=0.03)
    with pytest.raises(ValueError, match="beta must be >= 0"):
        selection_probs([1.0], -0.5)


# --- normalisation ------------------------------------------------------------------------------------


def test_the_normalisation_round_trip_by_hand():
    # mean/std statistics: a * std + mean (the env's canonical [-1, 1]), then to the critic's bounds
    stats = {"mean": [0.1, -0.2], "std": [0.5, 0.4]}
    assert np.allclose(unnormalize_actions([[1.0, -0.5]], stats), [[0.6, -0.4]])
    assert np.allclose(critic_actions([[1.0, -0.5]], stats, [-1.0, -0.5], [1.0, 0.5]), [[0.6, -0.8]])
    # beyond the canonical range: clipped there first ((3 * 0.5 + 0.1) -> 1)
    assert np.allclose(critic_actions([[3.0, 0.0]], stats, [-1.0, -1.0], [1.0, 1.0]), [[1.0, -0.2]])
    # low/high statistics: low + (a + 1) / 2 * (high - low)
    stats = {"low": [-0.5, 0.0], "high": [0.5, 1.0]}
    assert np.allclose(unnormalize_actions([[0.0, -1.0], [1.0, 1.0]], stats), [[0.0, 0.0], [0.5, 1.0]])
    assert np.allclose(critic_actions([[0.0, 0.5]], stats, [-0.5, 0.5], [0.5, 1.0]), [[0.0, 0.0]])
    # bounds narrower than the actions: clipped to [-1, 1]; (0.6 - 0) / 0.25 * 2 - 1 = 3.8 -> 1
    assert np.allclose(normalize_to_bounds([[0.6, -0.1]], [0.0, -0.1], [0.25, 0.3]), [[1.0, -1.0]])
    with pytest.raises(ValueError, match="high > low"):
        normalize_to_bounds([[0.0]], [1.0], [1.0])


# --- execution ----------------------------------------------------------------------------------------


def test_temporal_ensembling_averages_what_each_chunk_predicted_for_now():
    ex = ChunkExecution("ensemble", chunk_len=2)
    c1 = np.array([[0.0, 0.0], [0.4, 0.2]])
    c2 = np.array([[0.2, -0.2], [0.6, 0.6]])
    ex.push(c1)
    assert np.allclose(ex.next_action(), [0.0, 0.0])
    ex.push(c2)  # c1's second row and c2's first, equal weights
    assert np.allclose(ex.next_action(), [0.3, 0.0])
    weighted = ChunkExecution("ensemble", chunk_len=2, ensemble_temp=math.log(3.0))  # weights 1, 1/3
    weighted.push(c1)
    weighted.next_action()
    weighted.push(c2)
    assert np.allclose(weighted.next_action(), (np.array([0.4, 0.2]) + np.array([0.2, -0.2]) / 3) / (4 / 3))


def test_open_loop_runs_a_chunk_then_asks_for_the_next():
    ex = ChunkExecution("open_loop", chunk_len=3)
    assert ex.needs_chunk()
    ex.push(np.array([[0.1], [0.2], [0.3]]))
    got = []
    while not ex.needs_chunk():
        got.append(float(ex.next_action()[0]))
    assert np.allclose(got, [0.1, 0.2, 0.3])


def test_the_sticky_gripper_changes_after_that_many_disagreeing_steps():
    ex = ChunkExecution("open_loop", chunk_len=5, sticky_steps=2)
    ex.push(np.array([[0.5, -1.0], [0.5, 1.0], [0.5, -0.6], [0.5, -1.0], [0.5, 0.7]]))
    grip = [float(ex.next_action()[-1]) for _ in range(5)]
    # open at the start; one closing step is not enough, two in a row close it; one opening step keeps it closed
    assert grip == [1.0, 1.0, 1.0, -1.0, -1.0]


# --- V-GPS's rewards ----------------------------------------------------------------------------------


def test_vgps_rewards_and_mc_returns_by_hand():
    reward, terminal = vgps_rewards(5)
    assert reward.tolist() == [-1.0, -1.0, 0.0, 0.0, 0.0]
    assert terminal.tolist() == [False, False, True, True, True]
    assert np.allclose(vgps_mc_return(reward, terminal, 0.98), [-1.98, -1.0, 0.0, 0.0, 0.0])
    reward, terminal = vgps_rewards(2)  # shorter than the final 3: every step is final
    assert reward.tolist() == [0.0, 0.0] and terminal.tolist() == [True, True]


def _store_with_two_episodes(path):
    from dojo.replay.store import EpisodeWriter, StoreReader

    with EpisodeWriter(path, obs_spec={"state": ((2,), np.float32)}, action_dim=1) as w:
        for success in (True, False):
            w.begin_episode(source="prior", task="t", instruction="pick up the red cube")
            for t in range(5):
                w.add_step({"state": np.array([t, success], np.float32)}, np.array([0.1 * t], np.float32), 0.0,
                           False, t == 4)
            w.end_episode({"state": np.array([5, success], np.float32)}, success=success)
    reader = StoreReader(path)
    return reader.episode(0), reader.episode(1)


def test_vgps_pieces_keep_every_transition_of_a_stored_episode(tmp_path):
    success, failure = _store_with_two_episodes(tmp_path / "s.zarr")
    pieces = vgps_episode_pieces(success, 0.98)
    # steps 0..2 end at the first final step; steps 3 and 4 are one-step terminal pieces
    assert [p["action"].shape[0] for p in pieces] == [3, 1, 1]
    assert np.concatenate([p["reward"] for p in pieces]).tolist() == [-1.0, -1.0, 0.0, 0.0, 0.0]
    assert [p["terminal"].tolist() for p in pieces] == [[False, False, True], [True], [True]]
    assert np.allclose(np.concatenate([p["mc_return"] for p in pieces]), [-1.98, -1.0, 0.0, 0.0, 0.0])
    assert [p["obs"]["state"][:, 0].tolist() for p in pieces] == [[0, 1, 2, 3], [3, 4], [4, 5]]
    assert np.allclose(np.concatenate([p["action"] for p in pieces])[:, 0], [0.0, 0.1, 0.2, 0.3, 0.4])
    # the paper's rule treats a failure like any trajectory; with failures=True it never reaches its goal
    assert np.concatenate([p["reward"] for p in vgps_episode_pieces(failure, 0.98)]).tolist()[-1] == 0.0
    (piece,) = vgps_episode_pieces(failure, 0.98, failures=True)
    assert piece["reward"].tolist() == [-1.0] * 5 and not piece["terminal"].any()
    assert piece["truncated"].tolist() == [False] * 4 + [True]
    assert np.allclose(piece["mc_return"], -50.0)


# --- the critic and a steered run on the twin --------------------------------------------------------

TASKS = ("scene_pick_red", "scene_push_red_left")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny language encoder, a multi-task store, a tiny generalist and a critic from `dojo learn --offline`."""
    from dojo.launch.cli import main
    from dojo.policies.generalist import GeneralistConfig, save_generalist, train_generalist
    from dojo.sim.multitask import record_multitask_dataset
    from dojo.sim.tiny_language import build_tiny_language_encoder

    root = tmp_path_factory.mktemp("steer")
    lang = build_tiny_language_encoder(root / "lang")
    store = root / "data.zarr"
    record_multitask_dataset(store, 2, {"expert": 1.0, "poor": 1.0}, tasks=TASKS, max_episode_steps=25)
    save_generalist(root / "gen.msgpack", train_generalist(store, lang, GeneralistConfig(hidden_dims=(32, 32)),
                                                           steps=20))
    assert main(["learn", "--offline", "--agent", "calql-vgps", "--data", str(store), "--steps", "20", "--out",
                 str(root / "critic"), "--no-progress", f"learner.language_encoder={lang}",
                 "learner.relabel=vgps-success"]) == 0
    return root


def test_the_learner_conditions_on_the_instruction_and_relabels(trained):
    from omegaconf import OmegaConf

    from dojo.learners.learner import offline_mirror
    from dojo.policies.language import load_language_encoder
    from dojo.policies.snapshot import load_snapshot
    from dojo.replay.store import StoreReader

    encoder = load_language_encoder(trained / "lang")
    snap = load_snapshot(str(trained / "critic" / "policy.msgpack"))
    assert snap.language == {"id": encoder.id, "dim": encoder.dim}
    assert snap.critic_config == {"hidden_dims": (256, 256), "layer_norm": False, "num_qs": 2}
    env_dim = StoreReader(trained / "data.zarr").obs_spec["state"][0][0]
    assert snap.obs_spec.state_dim == env_dim + encoder.dim

    cfg = OmegaConf.load(trained / "critic" / "config.yaml")
    mirror = offline_mirror(cfg, 100_000, ("state",), encoder)
    batch = mirror.sample(512, np.random.default_rng(0), gamma=0.98)
    state = batch["obs"]["state"]
    known = encoder.encode([f"{t}" for t in ("pick up the red cube", "push the red cube to the left")])
    tails = state[:, env_dim:]
    assert all(np.allclose(row, known[0]) or np.allclose(row, known[1]) for row in tails)
    assert set(np.unique(batch["reward"])) <= {-1.0, 0.0}
    assert set(np.unique(batch["mc_return"][batch["reward"] == 0.0])) == {0.0}  # final steps: 0, terminal
    assert np.all(batch["discount"][batch["reward"] == 0.0] == 0.0)


def test_the_critic_refuses_another_language_encoder(trained, tmp_path):
    from dojo.policies.language import load_language_encoder
    from dojo.policies.steering import Critic
    from dojo.sim.tiny_language import build_tiny_language_encoder

    other = load_language_encoder(build_tiny_language_encoder(tmp_path / "other", seed=1))
    with pytest.raises(ValueError, match="trained with language encoder"):
        Critic(str(trained / "critic" / "policy.msgpack"), other)
    with pytest.raises(ValueError, match="give that encoder's folder"):
        Critic(str(trained / "critic" / "policy.msgpack"), None)


def test_a_steered_run_through_the_actor_on_the_twin_and_its_eval(trained, tmp_path, capsys):
    from dojo.launch.cli import main
    from dojo.replay.store import StoreReader

    run = tmp_path / "steer"
    assert main(["steer", "--generalist", str(trained / "gen.msgpack"), "--critic", str(trained / "critic"),
                 "--k", "4", "--sim", "scene_pick_red", "--episodes", "2", "--out", str(run),
                 "env.max_episode_steps=6"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["episodes"] == 2 and out["steering_steps"] == 12
    log = [json.loads(line) for line in open(run / "steering.jsonl")]
    assert len(log) == 12 and all(0 <= r["chosen"] < 4 for r in log)
    assert all(r["q_chosen"] == r["q_max"] for r in log)  # beta 0: the argmax
    assert any(r["q_spread"] > 0 for r in log)
    reader = StoreReader(run / "replay" / "steer.zarr")
    assert reader.num_episodes == 2 and reader.episode(0).info.instruction == "pick up the red cube"
    settings = json.load(open(run / "steer.json"))
    assert settings["k"] == 4 and settings["critic_language"]["dim"] == 32
    assert set(settings["policy_action_stats"]) == {"mean", "std"}

    assert main(["eval", "--run", str(run), "--episodes", "1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["episodes"] == 1 and result["steering_steps"] == 6 and result["success_rate"] in (0.0, 1.0)


@pytest.mark.parametrize("extra, message", [
    (["--k", "0"], "--k must be an integer >= 1"),
    (["--beta", "-1"], "--beta must be a number >= 0"),
    (["env.action_dim=7"], "action dimensions do not fit"),
])
def test_bad_steering_input_is_one_line(trained, tmp_path, capsys, extra, message):
    from dojo.launch.cli import main

    code = main(["steer", "--generalist", str(trained / "gen.msgpack"), "--critic", str(trained / "critic"),
                 "--sim", "scene_pick_red", "--episodes", "1", "--out", str(tmp_path / "r"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err


def test_a_missing_critic_is_one_line(trained, tmp_path, capsys):
    from dojo.launch.cli import main

    code = main(["steer", "--generalist", str(trained / "gen.msgpack"), "--critic", str(tmp_path / "nothing"),
                 "--sim", "scene_pick_red", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "no snapshot there" in err


def test_steering_a_generalist_served_over_the_openpi_protocol(trained, tmp_path, capsys):
    from dojo.launch.cli import main
    from dojo.policies.openpi import GeneralistPolicy, PolicyServer

    served = GeneralistPolicy(str(trained / "gen.msgpack"))
    run = tmp_path / "steer"
    with PolicyServer(served.infer, served.metadata, port=0) as server:
        assert main(["steer", "--generalist", server.url, "--critic", str(trained / "critic"), "--k", "3",
                     "--sim", "scene_push_red_left", "--episodes", "1", "--out", str(run),
                     "env.max_episode_steps=5"]) == 0
        assert server.requests == 5  # the K candidates of a step in one batched request
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["episodes"] == 1 and out["steering_steps"] == 5
    settings = json.load(open(run / "steer.json"))
    assert settings["generalist"] == server.url and settings["chunk_len"] == 4
    # the server answers in the env's canonical actions: the adapter's statistics are the identity
    assert settings["policy_action_stats"] == {"low": [-1.0] * 4, "high": [1.0] * 4}


def test_a_server_dropped_mid_run_ends_it_in_one_line_and_keeps_what_ran(trained, tmp_path, capsys):
    """The generalist's server (`dojo serve-policy`, its own process) killed while `dojo steer` runs on it: one
    line naming the server, every finished episode stored, and the steering log of every step that ran."""
    import threading
    import time

    from test_openpi import ServerProcess

    from dojo.launch.cli import main
    from dojo.replay.store import StoreReader

    server = ServerProcess("--generalist", str(trained / "gen.msgpack"))
    run = tmp_path / "steer"
    store = run / "replay" / "steer.zarr"

    def finished_episodes() -> list:
        try:
            return [e for e in StoreReader(store).episodes if e.finished]
        except Exception:  # not written yet, or mid-write: look again
            return []

    def kill_after_two_episodes():
        deadline = time.monotonic() + 120
        while len(finished_episodes()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.kill()

    killer = threading.Thread(target=kill_after_two_episodes, daemon=True)
    killer.start()
    try:
        code = main(["steer", "--generalist", server.url, "--critic", str(trained / "critic"), "--k", "3",
                     "--sim", "scene_pick_red", "--episodes", "100000", "--out", str(run), "env.max_episode_steps=5"])
    finally:
        killer.join(timeout=150)
        server.kill()
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and f"{server.url} closed the connection" in err, err
    finished = finished_episodes()
    assert len(finished) >= 2 and all(e.num_steps == 5 for e in finished)
    log = [json.loads(line) for line in open(run / "steering.jsonl")]
    assert len(log) >= 5 * len(finished)  # every step of the stored episodes was steered and logged
    assert {r["episode"] for r in log} >= set(range(len(finished)))
