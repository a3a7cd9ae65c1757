"""Data-parallel updates over two (forced) CPU devices give the update one device gives, within float
tolerance; a batch that does not split is refused with a clear line."""

import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, sys
import jax, numpy as np
from dojo.learners import make_agent
from dojo.learners.devices import DataParallel
from dojo.policies.spaces import ObsSpec, ActionScale

assert len(jax.local_devices()) == 2, jax.local_devices()
results = {}
for preset, options in (("serl", {"hidden_dims": [32, 32], "batch_size": 16, "utd_ratio": 2}),
                        ("iql", {"hidden_dims": [32, 32], "batch_size": 16})):
    spec, scale = ObsSpec(6), ActionScale((-1.0,) * 3, (1.0,) * 3)
    rng = np.random.default_rng(0)
    n = 32
    obs = lambda: {"state": rng.normal(size=(n, 6)).astype(np.float32)}
    batch = {"obs": obs(), "next_obs": obs(), "action": rng.uniform(-1, 1, (n, 3)).astype(np.float32),
             "reward": rng.normal(size=n).astype(np.float32), "discount": np.full(n, 0.99, np.float32),
             "source": (np.arange(n) % 2).astype(np.int8), "mc_return": rng.normal(size=n).astype(np.float32)}
    out = {}
    for count in (1, 2):
        parallel = DataParallel(count)
        agent = parallel.agent(make_agent(preset, spec, scale, seed=0, overrides=options))
        for _ in range(3):
            agent, info = agent.update(parallel.batch(batch))
        out[count] = jax.tree_util.tree_leaves(jax.tree_util.tree_map(np.asarray, agent))
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(out[1], out[2]) if np.asarray(a).dtype.kind == "f")
    scale_ = max(float(np.max(np.abs(a))) for a in out[1] if np.asarray(a).dtype.kind == "f")
    results[preset] = {"max_abs_diff": diff, "max_abs": scale_}
try:
    DataParallel(2).check_batch_size(33)
except ValueError as err:
    results["refused"] = str(err)
try:
    DataParallel(3)
except ValueError as err:
    results["too_many"] = str(err)
print(json.dumps(results))
"""


def test_two_devices_update_as_one_does():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    results = json.loads(out.stdout.strip().splitlines()[-1])
    for preset in ("serl", "iql"):
        assert results[preset]["max_abs_diff"] < 1e-4 * max(1.0, results[preset]["max_abs"]), results
    assert "does not split over learner.devices=2" in results["refused"]
    assert "learner.devices=3 but this machine has 2 cpu device(s)" in results["too_many"]


def test_the_learner_option_is_checked_up_front(tmp_path):
    from dojo.launch.cli import main

    assert main(["learn", "--sim", "reach", "--steps", "10", "--out", str(tmp_path / "r"),
                 "learner.devices=many"]) == 2
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("devices", ["1", "all"])
def test_one_device_is_the_default_path(devices):
    from dojo.learners.devices import DataParallel

    parallel = DataParallel(devices)
    assert parallel.count == 1 and parallel.batch({"x": 1}) == {"x": 1}
