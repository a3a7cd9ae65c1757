"""V-GPS's generalists (dojo/policies/generalist.py): dojo's own flow-matching generalist trained on a real multi-task
store from the twin, and the openpi adapter against dojo's own server on loopback; the mixed-quality dataset
recorder (dojo/sim/multitask.py)."""

import json

import numpy as np
import pytest

from dojo.launch.cli import main as dojo_main
from dojo.policies.generalist import (FlowGeneralist, OpenpiGeneralist, load_generalist, normalize_actions,
                                      read_generalist, save_generalist, train_generalist, unnormalize_actions)
from dojo.policies.openpi import GeneralistPolicy, PolicyServer, PolicyServerError
from dojo.replay.store import open_store
from dojo.sim import make_env
from dojo.sim.experts import make_expert
from dojo.sim.multitask import INSTRUCTIONS, record_multitask_dataset
from dojo.sim.tiny_language import build_tiny_language_encoder

TASKS = ("scene_pick_red", "scene_push_red_left")
STEPS = 1500  # BC steps of the trained fixture (the default config); the untrained one takes 1


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("generalist")


@pytest.fixture(scope="module")
def encoder_folder(workdir):
    return build_tiny_language_encoder(workdir / "tiny-bert")


@pytest.fixture(scope="module")
def expert_store(workdir):
    """Expert demos of two instructions that start from the same layouts: only the instruction tells them apart."""
    path = workdir / "two.zarr"
    result = record_multitask_dataset(path, 12, {"expert": 1.0}, seed=0, tasks=TASKS)
    assert result["episodes"] == 24
    return path


@pytest.fixture(scope="module")
def trained(workdir, expert_store, encoder_folder):
    model = train_generalist(expert_store, encoder_folder, steps=STEPS, seed=0)
    path = workdir / "trained.msgpack"
    save_generalist(path, model)
    return path


@pytest.fixture(scope="module")
def untrained(workdir, expert_store, encoder_folder):
    path = workdir / "untrained.msgpack"
    save_generalist(path, train_generalist(expert_store, encoder_folder, steps=1, seed=0))
    return path


def test_the_dataset_mixes_qualities_and_keeps_failures(tmp_path):
    path = tmp_path / "mixed.zarr"
    result = record_multitask_dataset(path, 5, {"expert": 2, "poor": 3}, seed=0, tasks=("scene_pick_blue",))
    assert result["quality_counts"] == {"expert": 2, "poor": 3}
    episodes = open_store(path).episodes
    assert [e.operator for e in episodes] == ["sim-operator:expert"] * 2 + ["sim-operator:poor"] * 3
    assert {e.instruction for e in episodes} == {INSTRUCTIONS["scene_pick_blue"]}
    assert [e.reset_seed for e in episodes] == [0, 1, 2, 3, 4]
    measured = result["instructions"][INSTRUCTIONS["scene_pick_blue"]]
    assert measured["success"] == np.mean([e.success for e in episodes])
    by_quality = measured["success_by_quality"]
    assert by_quality["expert"] == 1.0 and by_quality["poor"] < 1.0  # failures are kept
    with pytest.raises(ValueError, match="quality_mix must map some of"):
        record_multitask_dataset(tmp_path / "bad.zarr", 5, {"superb": 1.0})


def test_samples_have_the_chunk_shape_and_are_deterministic_per_seed(trained, expert_store):
    obs = {"state": open_store(expert_store).read("obs/state", 0, 1)[0]}
    instruction = INSTRUCTIONS["scene_pick_red"]
    g = load_generalist(trained, seed=3)
    chunks = g.sample(obs, instruction, 7)
    assert chunks.shape == (7, g.chunk_len, g.action_dim) == (7, 4, 4) and chunks.dtype == np.float32
    np.testing.assert_array_equal(chunks, load_generalist(trained, seed=3).sample(obs, instruction, 7))
    assert not np.allclose(chunks, load_generalist(trained, seed=4).sample(obs, instruction, 7))
    assert not np.allclose(chunks, g.sample(obs, instruction, 7))  # the next draw is a new one
    actions = g.unnormalize(chunks)
    assert np.all(np.abs(actions) <= 1.0)
    # The normalisation round trip inside [-1, 1], with the policy's own statistics.
    inside = np.clip(actions, -0.99, 0.99)
    np.testing.assert_allclose(unnormalize_actions(normalize_actions(inside, g.action_stats), g.action_stats),
                               inside, atol=1e-5)
    with pytest.raises(ValueError, match="positive integer"):
        g.sample(obs, instruction, 0)
    with pytest.raises(ValueError, match="obs\\['state'\\] must be one observation"):
        g.sample({"state": np.zeros(3, np.float32)}, instruction, 2)


def test_the_file_records_its_encoder_and_refuses_another(trained, encoder_folder, tmp_path, expert_store):
    model = read_generalist(trained)
    assert model.instructions == tuple(INSTRUCTIONS[t] for t in TASKS)
    assert model.encoder_id.startswith("tiny-bert-") and model.encoder_folder == str(encoder_folder)
    assert model.train_info["steps"] == STEPS and model.train_info["episodes"] == 24
    # An instruction outside the training set is embedded by the recorded encoder folder.
    obs = {"state": open_store(expert_store).read("obs/state", 0, 1)[0]}
    g = load_generalist(trained)
    assert g.sample(obs, "lift the red cube", 2).shape == (2, 4, 4)
    other = build_tiny_language_encoder(tmp_path / "other", seed=1)
    with pytest.raises(ValueError, match="not the one this generalist was trained with"):
        load_generalist(trained, encoder=other)
    (tmp_path / "junk.msgpack").write_bytes(b"\x00not msgpack")
    with pytest.raises(ValueError, match="not a readable generalist"):
        read_generalist(tmp_path / "junk.msgpack")


def _expert_states(task: str, seeds, steps: int = 6):
    """Observations along the expert's own path from held-out layouts, with the expert's action at each."""
    env = make_env(task)
    expert, out = make_expert(env), []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        for _ in range(steps):
            action = expert()
            out.append((obs, action))
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
    env.close()
    return out


def _action_error(g: FlowGeneralist, states, instruction: str, k: int = 16) -> float:
    """RMS gap between the expert's action and the mean first action of k sampled chunks."""
    gaps = [g.unnormalize(g.sample(obs, instruction, k))[:, 0].mean(0) - action for obs, action in states]
    return float(np.sqrt(np.mean(np.square(gaps))))


def test_bc_matches_the_experts_and_follows_the_instruction(trained, untrained):
    held_out = {task: _expert_states(task, seeds=range(500, 506)) for task in TASKS}
    g, g0 = load_generalist(trained, seed=0), load_generalist(untrained, seed=0)
    for task, states in held_out.items():
        err, err0 = _action_error(g, states, INSTRUCTIONS[task]), _action_error(g0, states, INSTRUCTIONS[task])
        assert err < 0.5 * err0, (task, err, err0)
    # Same layouts, other instruction: the chunk follows the instruction, not the scene.
    for task, other in (TASKS, TASKS[::-1]):
        right = _action_error(g, held_out[task], INSTRUCTIONS[task])
        wrong = _action_error(g, held_out[task], INSTRUCTIONS[other])
        assert right < 0.6 * wrong, (task, right, wrong)


def test_the_openpi_adapter_samples_from_dojos_server_and_reports_a_dropped_one(trained, expert_store):
    obs = {"state": open_store(expert_store).read("obs/state", 3, 4)[0]}
    instruction = INSTRUCTIONS["scene_push_red_left"]
    policy = GeneralistPolicy(str(trained), seed=5)
    local = load_generalist(trained, seed=5)
    with PolicyServer(policy.infer, policy.metadata, port=0) as server:
        with OpenpiGeneralist(server.url) as remote:
            assert (remote.chunk_len, remote.action_dim, remote.max_per_call) == (4, 4, 256)
            chunks = remote.sample(obs, instruction, 6)  # one request of num_samples=6
            assert server.requests == 1
            # The server's generalist drew the same noise as a local one with its seed: the same chunks, in the
            # env's canonical space (the adapter's stats are the identity).
            np.testing.assert_allclose(chunks, local.unnormalize(local.sample(obs, instruction, 6)), atol=1e-5)
            np.testing.assert_allclose(remote.unnormalize(chunks), np.clip(chunks, -1, 1), atol=1e-6)
    # A server that does not batch (no max_samples_per_call): K requests of one chunk each.
    metadata = {k: v for k, v in policy.metadata.items() if k != "max_samples_per_call"}
    with PolicyServer(policy.infer, metadata, port=0) as server:
        remote = OpenpiGeneralist(server.url, timeout_s=5.0)
        assert remote.sample(obs, instruction, 3).shape == (3, 4, 4)
        assert server.requests == 3
        server.shutdown()
        with pytest.raises(PolicyServerError, match=f"policy server at {server.url}") as err:
            remote.sample(obs, instruction, 3)
        assert "\n" not in str(err.value)
        remote.close()


def test_the_command_trains_and_refuses_bad_input_in_one_line(expert_store, encoder_folder, tmp_path, capsys):
    out = tmp_path / "g.msgpack"
    rc = dojo_main(["generalist", "train", "--store", str(expert_store), "--encoder", str(encoder_folder), "--out",
                    str(out), "--steps", "20"])
    assert rc == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["generalist"] == str(out) and line["steps"] == 20 and line["transitions"] > 0
    assert load_generalist(out).chunk_len == 4
    rc = dojo_main(["generalist", "train", "--store", str(expert_store), "--encoder", "org/some-hub-model",
                    "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "is not a local folder" in err
    rc = dojo_main(["generalist", "train", "--store", str(tmp_path / "nowhere.zarr"), "--encoder",
                    str(encoder_folder), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("dojo generalist: error:")
