"""Config overrides: known keys take typed values; unknown keys and wrong types stop with a clear error."""

import pytest

from dojo.launch import config as config_mod
from dojo.launch.config import ConfigError, load_config


@pytest.fixture
def probe_config(tmp_path, monkeypatch):
    (tmp_path / "probe.yaml").write_text(
        "steps: 100\nagent:\n  lr: 0.0003\n  name: rlpd\n  layer_norm: true\n  extra: null\n")
    monkeypatch.setattr(config_mod, "CONFIG_DIR", tmp_path)
    return "probe"


def test_overrides_take_typed_values(probe_config):
    cfg = load_config(probe_config, ["steps=5", "agent.lr=1", "agent.name=calql", "agent.layer_norm=false",
                                     "agent.extra=[1,2]"])
    assert cfg.steps == 5 and cfg.agent.lr == 1.0 and isinstance(cfg.agent.lr, float)
    assert cfg.agent.name == "calql" and cfg.agent.layer_norm is False and list(cfg.agent.extra) == [1, 2]


@pytest.mark.parametrize("override, words", [
    ("stepz=5", "unknown config key 'stepz'"),
    ("agent.lrr=1", "unknown config key 'agent.lrr'"),
    ("steps=many", "'steps' expects a int"),
    ("steps=1.5", "'steps' expects a int"),
    ("agent.lr=fast", "'agent.lr' expects a float"),
    ("agent.layer_norm=2", "'agent.layer_norm' expects a bool"),
    ("steps", "key=value"),
])
def test_bad_overrides_name_the_key(probe_config, override, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        load_config(probe_config, [override])


def test_unknown_config_name_lists_known(probe_config):
    with pytest.raises(ConfigError, match="known configs: \\['probe'\\]"):
        load_config("nope")


def test_config_is_read_only(probe_config):
    cfg = load_config(probe_config)
    with pytest.raises(Exception):
        cfg.steps = 3
