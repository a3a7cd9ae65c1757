"""The openpi policy-server protocol: openpi's wire format, dojo's client against `dojo serve-policy` in another
process on loopback, and the errors a missing, stalled, dropped or failing server gives."""

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading

import gymnasium as gym
import msgpack
import numpy as np
import pytest

from dojo.learners import sac
from dojo.policies.openpi import PolicyClient, PolicyServer, PolicyServerError, packb, unpackb
from dojo.policies.snapshot import Policy, save_snapshot

SPACE = gym.spaces.Dict({"state": gym.spaces.Box(-1, 1, (5,), np.float32),
                         "front": gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)})
ACTIONS = gym.spaces.Box(-1, 1, (4,), np.float32)
CFG = sac.get_config(hidden_dims=(16,), num_qs=2, utd_ratio=1, encoder_channels=(4,), encoder_strides=(2,),
                     encoder_feature_dim=6)


def test_arrays_travel_as_openpi_packs_them():
    # hand-written bytes of openpi_client.msgpack_numpy.packb(np.float32(1.5)): a 3-entry map of bin keys
    scalar = (b"\x83" + b"\xc4\x0d__npgeneric__" + b"\xc3" + b"\xc4\x04data" + b"\xcb\x3f\xf8" + b"\x00" * 6
              + b"\xc4\x05dtype" + b"\xa3<f4")
    assert packb(np.float32(1.5)) == scalar
    array = msgpack.packb({b"__ndarray__": True, b"data": b"\x01\x00\x02\x00\x03\x00", b"dtype": "<i2",
                           b"shape": [3]})
    assert packb(np.array([1, 2, 3], np.int16)) == array
    # openpi's own round-trip cases (msgpack_numpy_test.py)
    cases = [1, 1.0, "hello", np.bool_(True), np.array([1, 2, 3])[0], np.str_("asdf"), [1, 2, 3], {"key": [1, 2]},
             np.array(1.0), np.array(["asdf", "qwer"]), np.array([True, False]),
             np.array([[1.0, 2.0], [3.0, 4.0]], np.float32), np.arange(8, dtype=np.int16).reshape(2, 2, 2),
             np.array([np.nan, np.inf, -np.inf]), {"arr": np.arange(3), "nested": {"arr": np.arange(3, 6)}}]
    for case in cases:
        back = unpackb(packb(case))
        if isinstance(case, np.ndarray):
            assert back.dtype == case.dtype and back.shape == case.shape
            np.testing.assert_array_equal(back, case)
        elif isinstance(case, dict) and "arr" in case:
            np.testing.assert_array_equal(back["nested"]["arr"], case["nested"]["arr"])
        else:
            # np.str_ is a str, which msgpack packs itself (so does openpi): it comes back as a str
            assert back == case and (type(back) is type(case) or isinstance(case, np.str_))
    with pytest.raises(ValueError, match="dtype object"):
        packb(np.array([None, 1], dtype=object))


class ServerProcess:
    """`dojo serve-policy ARGS --port 0` in its own process; `url` from the line it prints when it listens."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "dojo.launch.cli", "serve-policy", *args, "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, JAX_PLATFORMS="cpu"))
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.proc.stderr], daemon=True).start()
        self.stderr = []
        while True:
            line = lines.get(timeout=120)  # a stuck start fails the test instead of hanging it
            self.stderr.append(line)
            found = re.search(r"serving .* at (ws://\S+)", line)
            if found:
                self.url = found.group(1)
                return

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0
        return json.loads(out.strip().splitlines()[-1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def snapshot_path(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("run") / "policy.msgpack")
    save_snapshot(path, sac.create(0, SPACE, ACTIONS, CFG).snapshot())
    return path


def observation(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"state": rng.uniform(-1, 1, 5).astype(np.float32),
            "front": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), "prompt": "pick up the red cube"}


def test_dojo_snapshot_served_in_another_process(snapshot_path):
    server = ServerProcess("--snapshot", snapshot_path)
    try:
        local = Policy(snapshot_path)
        with PolicyClient(server.url, timeout_s=60) as client:
            meta = client.metadata
            assert meta["policy"] == "dojo-snapshot" and meta["action_horizon"] == 1 and meta["action_dim"] == 4
            assert meta["state_dim"] == 5 and meta["cameras"] == {"front": [8, 8, 3]}
            for seed in range(3):
                result = client.infer(observation(seed))
                assert result["actions"].shape == (1, 4) and result["actions"].dtype == np.float32
                np.testing.assert_allclose(result["actions"][0], local(observation(seed)), atol=1e-6)
                assert result["server_timing"]["infer_ms"] >= 0
            assert "prev_total_ms" in result["server_timing"]  # from the second request on, as openpi's
            with pytest.raises(PolicyServerError, match=re.escape(server.url) + ".*one observation per request"):
                client.infer({k: np.stack([v, v]) for k, v in observation(0).items() if k != "prompt"})
        # the failed request closed that connection only: the server goes on serving
        with PolicyClient(server.url, timeout_s=60) as client:
            assert client.infer(observation(5))["actions"].shape == (1, 4)
        assert server.stop() == {"url": server.url, "policy": "dojo-snapshot", "requests": 4}
    finally:
        server.kill()


def test_a_dropped_or_stalled_server_gives_one_error_naming_it(snapshot_path):
    server = ServerProcess("--snapshot", snapshot_path)
    try:
        client = PolicyClient(server.url, timeout_s=60)
        client.infer(observation(0))
        server.proc.send_signal(signal.SIGSTOP)  # the server stops answering
        client.timeout_s = 0.5
        with pytest.raises(PolicyServerError, match=re.escape(server.url) + " did not answer within 0.5 s"):
            client.infer(observation(1))
        server.proc.send_signal(signal.SIGCONT)
        client = PolicyClient(server.url, timeout_s=60)
        client.infer(observation(2))
        server.kill()  # dropped mid-run
        with pytest.raises(PolicyServerError, match=re.escape(server.url) + " closed the connection"):
            client.infer(observation(3))
    finally:
        server.proc.send_signal(signal.SIGCONT)
        server.kill()
    with socket.socket() as held:  # bound, never listening, and held: nothing else can listen there meanwhile
        held.bind(("127.0.0.1", 0))
        url = "127.0.0.1:%d" % held.getsockname()[1]
        with pytest.raises(PolicyServerError, match=f"policy server at ws://{url} refused the connection"):
            PolicyClient(url, timeout_s=5)


def test_any_infer_fn_can_be_served_and_its_failures_reach_the_client():
    resets = []

    def infer(obs):
        if obs["state"][0] < 0:
            raise ValueError(f"state[0] must be >= 0, got {obs['state'][0]}")
        return {"actions": np.repeat(obs["state"][None, :2], 10, axis=0), "note": str(obs["prompt"])}

    with PolicyServer(infer, {"action_horizon": 10}, port=0, on_connect=lambda: resets.append(1)) as server:
        with PolicyClient(server.url) as client:
            assert client.metadata == {"action_horizon": 10} and resets == [1]
            result = client.infer({"state": np.array([0.5, 0.25, 1.0]), "prompt": np.str_("push")})
            np.testing.assert_array_equal(result["actions"], np.tile([0.5, 0.25], (10, 1)))
            assert result["note"] == "push"
            with pytest.raises(PolicyServerError, match="failed while inferring: ValueError: state.0. must be >= 0"):
                client.infer({"state": np.array([-1.0, 0.0]), "prompt": "push"})
            with pytest.raises(PolicyServerError, match="closed the connection .code 1011"):
                client.infer({"state": np.array([1.0, 0.0]), "prompt": "push"})
        with PolicyServer(lambda obs: {"no_actions": 1}, port=0) as bad, PolicyClient(bad.url) as client:
            with pytest.raises(PolicyServerError, match="'actions' as an .H, action_dim. array"):
                client.infer({"state": np.zeros(2)})
    with pytest.raises(ValueError, match="port must be an integer in"):
        PolicyServer(infer, port=70000)


def test_lerobot_without_lerobot_says_where_to_run_it(tmp_path, capfd):
    from dojo.launch.cli import main

    assert main(["serve-policy", "--lerobot", str(tmp_path), "--port", "0"]) == 1
    err = capfd.readouterr().err.strip()
    assert err.count("\n") == 0 and "LeRobot does not import in this Python" in err and "--python" in err
    # with --python the server runs under that Python (here dojo's own, to see its error come through)
    assert main(["serve-policy", "--lerobot", str(tmp_path / "missing"), "--python", sys.executable]) == 2
    assert "serve-policy: error: LeRobot checkpoint" in capfd.readouterr().err
