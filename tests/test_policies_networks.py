"""Network pieces: obs adapters for any gymnasium space, DrQ random shift, tanh-Gaussian densities."""

import gymnasium as gym
import jax
import numpy as np
import pytest

from dojo.policies import networks as nets
from dojo.policies.spaces import ActionScale, ObsAdapter


def test_obs_adapter_handles_box_and_dict_spaces():
    box = ObsAdapter(gym.spaces.Box(-1, 1, (3, 2), np.float64))
    out = box(np.arange(6.0).reshape(3, 2))
    assert box.spec.state_dim == 6 and out["state"].dtype == np.float32 and out["state"].shape == (6,)

    img = ObsAdapter(gym.spaces.Box(0, 255, (8, 8, 3), np.uint8))
    assert img.spec.camera_keys == ("pixels",) and img.spec.state_dim == 0
    assert img(np.ones((8, 8, 3), np.uint8))["pixels"].shape == (8, 8, 3)

    mixed = gym.spaces.Dict({"wrist": gym.spaces.Box(0, 255, (4, 4, 3), np.uint8),
                             "object": gym.spaces.Box(-1, 1, (2,)), "state": gym.spaces.Box(-1, 1, (3,))})
    adapter = ObsAdapter(mixed)
    out = adapter({"wrist": np.zeros((4, 4, 3), np.uint8), "object": np.array([7.0, 8.0]),
                   "state": np.array([1.0, 2.0, 3.0])})
    np.testing.assert_array_equal(out["state"], [1, 2, 3, 7, 8])  # "state" first, then sorted keys
    assert adapter.spec.cameras == (("wrist", (4, 4, 3)),)

    with pytest.raises(ValueError, match="Discrete"):
        ObsAdapter(gym.spaces.Discrete(4))
    with pytest.raises(ValueError, match="'mode'"):
        ObsAdapter(gym.spaces.Dict({"mode": gym.spaces.Discrete(2)}))


def test_action_scale_round_trip_and_errors():
    scale = ActionScale.from_space(gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 10.0], np.float32)))
    np.testing.assert_allclose(scale.to_env(np.array([-1.0, 1.0])), [-2.0, 10.0])
    np.testing.assert_allclose(scale.to_env(np.array([0.0, 0.0])), [0.0, 5.0])
    np.testing.assert_allclose(scale.to_norm(scale.to_env(np.array([0.3, -0.7]))), [0.3, -0.7], atol=1e-6)
    with pytest.raises(ValueError, match="finite"):
        ActionScale.from_space(gym.spaces.Box(-np.inf, np.inf, (2,)))


def test_random_shift_is_an_edge_padded_crop_with_per_sample_offsets():
    h = w = 6
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    img = np.stack([yy * 10 + xx, yy, xx], -1).astype(np.uint8)
    batch = np.repeat(img[None], 32, 0)
    out = np.asarray(nets.random_shift(jax.random.PRNGKey(0), batch, pad=2))
    padded = np.pad(img, ((2, 2), (2, 2), (0, 0)), mode="edge")
    offsets = set()
    for sample in out:
        matches = [(dy, dx) for dy in range(5) for dx in range(5)
                   if np.array_equal(sample, padded[dy:dy + h, dx:dx + w])]
        assert matches, "each output must be a crop of the padded image"
        offsets.add(matches[0])
    assert len(offsets) > 5  # offsets differ between samples


def test_tanh_gaussian_log_prob_matches_the_change_of_variables():
    mean, log_std = np.array([[0.3, -0.5]]), np.array([[-0.2, 0.1]])
    action, logp = nets.sample_and_log_prob(jax.random.PRNGKey(1), mean, log_std, tanh_squash=True)
    u = np.arctanh(np.asarray(action, np.float64))
    std = np.exp(log_std)
    by_hand = np.sum(-0.5 * ((u - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
                     - np.log(1 - np.tanh(u) ** 2), -1)
    np.testing.assert_allclose(logp, by_hand, rtol=1e-4)
    np.testing.assert_allclose(nets.log_prob(mean, log_std, action, True), by_hand, rtol=1e-3)


def test_frame_stacked_obs_fold_into_features():
    enc = nets.ObsEncoder(camera_keys=("front",), channels=(4,), strides=(2,), feature_dim=5, frame_stack=3)
    obs = {"state": np.ones((2, 3, 4), np.float32), "front": np.zeros((2, 3, 8, 8, 3), np.uint8)}
    params = enc.init(jax.random.PRNGKey(0), obs)
    assert params["params"]["trunk_front"]["Conv_0"]["kernel"].shape == (3, 3, 9, 4)
    assert enc.apply(params, obs).shape == (2, 5 + 12)
