"""omegaconf YAML configs under launch/configs/ with `key=value` overrides, checked before anything runs.

An unknown key or a value of the wrong type stops with a `ConfigError` naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

CONFIG_DIR = Path(__file__).parent / "configs"


class ConfigError(ValueError):
    pass


def load_config(name: str, overrides: Sequence[str] = (), open_sections: Sequence[str] = ()) -> DictConfig:
    """Load configs/NAME.yaml (or a .yaml path, e.g. a run's saved config) with overrides. Keys under an `open_sections` prefix may be new (their
    owner checks them, e.g. an agent's hyperparameters); every other key must exist already."""
    path = Path(name) if str(name).endswith(".yaml") else CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"no config named {name!r}; known configs: {known}")
    config = OmegaConf.load(path)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"config override must look like key=value, got {item!r}")
        default = OmegaConf.select(config, key, default=_MISSING)
        if default is _MISSING and any(key.startswith(f"{section}.") for section in open_sections):
            default = None
        if default is _MISSING:
            raise ConfigError(f"unknown config key {key!r} in {item!r}; known keys: {sorted(_leaf_keys(config))}")
        value = OmegaConf.create({"v": raw} if raw == "" else OmegaConf.from_dotlist([f"v={raw}"]))["v"]
        OmegaConf.update(config, key, _coerce(key, default, value), merge=False, force_add=True)
    OmegaConf.set_readonly(config, True)
    return config


_MISSING = object()


def _coerce(key: str, default, value):
    """Accept a value only if it fits the type of the default it replaces (int -> float allowed)."""
    if default is None or isinstance(default, (DictConfig, ListConfig)) and isinstance(value, type(default)):
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, str):
        ok, value = True, str(value)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(f"config key {key!r} expects a {type(default).__name__} (default {default!r}), "
                          f"got {value!r}")
    return value


def _leaf_keys(config: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for k, v in config.items():
        full = f"{prefix}{k}"
        keys += _leaf_keys(v, full + ".") if isinstance(v, DictConfig) else [full]
    return keys
