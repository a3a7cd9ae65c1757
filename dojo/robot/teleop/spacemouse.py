"""3Dconnexion SpaceMouse over hidapi (`hid` module), read in a background thread, behind `Teleop`.

Report parsing and the mapping to a twist live in mapping.py; this only finds, opens and reads the device.
On Linux the user needs read access to the hidraw node (a udev rule for vendor 046d/256f).
"""

from __future__ import annotations

from typing import Mapping

from dojo.robot.drivers import require
from dojo.robot.teleop.base import MappedTeleop
from dojo.robot.teleop.mapping import (SPACEMOUSE_DEFAULT_BUTTONS, SPACEMOUSE_FULL_SCALE, SPACEMOUSE_VENDOR_IDS,
                                       MappingConfig, SpaceMouseState, check_button_map, parse_spacemouse_report,
                                       spacemouse_raw_input)

# 3Dconnexion products sold under Logitech's vendor id (the newer 0x256f id is 3Dconnexion's alone).
LOGITECH_ERA_PRODUCT_IDS = {0xC603, 0xC605, 0xC606, 0xC621, 0xC623, 0xC625, 0xC626, 0xC627, 0xC628, 0xC629,
                            0xC62B, 0xC640}


def find_spacemice(hid) -> list[dict]:
    """hidapi device records of connected SpaceMice, the multi-axis interface of each first."""
    found = []
    for vendor_id in SPACEMOUSE_VENDOR_IDS:
        for info in hid.enumerate(vendor_id, 0):
            if vendor_id == 0x046D and info["product_id"] not in LOGITECH_ERA_PRODUCT_IDS:
                continue  # another Logitech device (mouse, keyboard receiver)
            found.append(info)
    # Usage page 1 / usage 8 is the HID "multi-axis controller"; receivers also expose other interfaces.
    return sorted(found, key=lambda d: (d.get("usage_page"), d.get("usage")) != (1, 8))


class SpaceMouseTeleop(MappedTeleop):
    def __init__(self, mapping: MappingConfig = MappingConfig(intervene_mode="motion"),
                 button_map: Mapping[int, str] = SPACEMOUSE_DEFAULT_BUTTONS, path: bytes | str | None = None,
                 full_scale: float = SPACEMOUSE_FULL_SCALE, read_timeout_ms: int = 50) -> None:
        hid = require("hid", "teleop", "pip install 'dojo-robot[teleop]' (the hidapi package)")
        if not hasattr(hid, "device"):
            raise RuntimeError(f"the 'hid' module at {getattr(hid, '__file__', '?')} is not hidapi's (no "
                               "hid.device); uninstall the 'hid' package and install 'hidapi'")
        super().__init__(mapping)
        if not full_scale > 0:
            raise ValueError(f"full_scale must be a positive count, got {full_scale!r}")
        self._button_map = check_button_map({int(k): v for k, v in button_map.items()}, "SpaceMouse button_map")
        self._full_scale, self._timeout_ms = float(full_scale), int(read_timeout_ms)
        if path is None:
            devices = find_spacemice(hid)
            if not devices:
                raise RuntimeError("no 3Dconnexion SpaceMouse found (looked for HID vendor ids "
                                   f"{', '.join(hex(v) for v in SPACEMOUSE_VENDOR_IDS)}); is it plugged in and "
                                   "readable (udev rule for /dev/hidraw*)?")
            path = devices[0]["path"]
        self._device = hid.device()
        try:
            self._device.open_path(path.encode() if isinstance(path, str) else path)
        except OSError as err:
            raise RuntimeError(f"could not open SpaceMouse at {path!r}: {err}; check /dev/hidraw* permissions") from err
        self.product = self._device.get_product_string()
        self._state = SpaceMouseState()
        self._start_reader(self._read_report)

    def _read_report(self) -> None:
        report = self._device.read(64, self._timeout_ms)
        if report:
            self._state = parse_spacemouse_report(bytes(report), self._state)
            self._feed(spacemouse_raw_input(self._state, self._button_map, self._full_scale))

    def close(self) -> None:
        super().close()
        self._device.close()
