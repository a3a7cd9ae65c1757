"""Teleoperation devices behind `Teleop`, built by `make_teleop(kind, **config)`.

Kinds: "spacemouse" (hidapi), "gamepad" (pygame), "keyboard" (a terminal), "sim-operator" (a scripted
or intervening operator from dojo.sim.operators). Vendor modules are imported only when a device is built.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect

from dojo.robot.interfaces import Teleop
from dojo.robot.teleop.mapping import GamepadLayout, MappingConfig

# kind -> (module, class, MappingConfig defaults that suit the device)
DEVICES = {
    "spacemouse": ("dojo.robot.teleop.spacemouse", "SpaceMouseTeleop", {"intervene_mode": "motion"}),
    "gamepad": ("dojo.robot.teleop.gamepad", "GamepadTeleop", {"gripper_mode": "analog"}),
    "keyboard": ("dojo.robot.teleop.keyboard", "KeyboardTeleop", {"scale": 0.5}),
}
KINDS = (*DEVICES, "sim-operator")


def make_teleop(kind: str, **config) -> Teleop:
    """Build a teleop device. `config` holds MappingConfig fields (frame, deadzone, scale, axis_order,
    axis_signs, gripper_mode, intervene_mode) and the driver's own arguments (e.g. `path` for a
    SpaceMouse, `layout` for a gamepad, `fd` for a keyboard); for "sim-operator", the arguments of
    `dojo.sim.operators.make_operator`."""
    if kind == "sim-operator":
        try:
            operators = importlib.import_module("dojo.sim.operators")
        except ImportError as err:
            raise RuntimeError(f"teleop kind 'sim-operator' needs the MuJoCo twin (dojo.sim): {err}; install it "
                               "with: pip install 'dojo-robot[sim]'") from err
        return operators.make_operator(**config)
    if kind not in DEVICES:
        raise ValueError(f"unknown teleop kind {kind!r}; expected one of {KINDS}")
    module_name, class_name, defaults = DEVICES[kind]
    mapping_keys = {f.name for f in dataclasses.fields(MappingConfig)}
    mapping = MappingConfig(**{**defaults, **{k: v for k, v in config.items() if k in mapping_keys}})
    driver_kwargs = {k: v for k, v in config.items() if k not in mapping_keys}
    if kind == "gamepad" and isinstance(driver_kwargs.get("layout"), dict):
        layout = dict(driver_kwargs["layout"])
        if "twist" in layout:
            layout["twist"] = tuple(None if s is None else tuple(s) for s in layout["twist"])
        try:
            driver_kwargs["layout"] = GamepadLayout(**layout)
        except TypeError as err:
            raise ValueError(f"bad gamepad layout {layout!r}: {err}") from err
    cls = getattr(importlib.import_module(module_name), class_name)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "mapping"}
    unknown = set(driver_kwargs) - accepted
    if unknown:
        raise ValueError(f"unknown {kind} teleop option(s) {sorted(unknown)}; expected mapping options "
                         f"{sorted(mapping_keys)} or driver options {sorted(accepted)}")
    return cls(mapping=mapping, **driver_kwargs)
