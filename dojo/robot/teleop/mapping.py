"""The pure mapping from raw teleop device readings to a `TeleopCommand`, plus the per-device decoders.

Drivers (spacemouse.py, gamepad.py, keyboard.py) only move bytes; everything testable lives here:
SpaceMouse HID report parsing, gamepad axis/button layouts, terminal key decoding with held-key
timeouts, and `TeleopMapper` (deadzone, scaling, mounting permutation/signs, frame, gripper and
button edge semantics).
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Iterable, Mapping, Sequence

import numpy as np

from dojo.robot.interfaces import TeleopCommand

# Logical buttons a device may bind. gripper/intervene are stateful (toggle or hold), estop is
# true while held, the rest are one-shot events reported once per press.
BUTTONS = ("gripper", "intervene", "success", "fail", "rerecord", "discard", "estop")
EVENT_BUTTONS = ("success", "fail", "rerecord", "discard")
TWIST_AXES = ("x", "y", "z", "rx", "ry", "rz")


@dataclasses.dataclass(frozen=True)
class RawInput:
    """One reading of a device in its own frame, normalised but not yet mapped.

    `axes` (6,) in [-1, 1]: linear xyz then angular xyz in the device frame (x right, y forward,
    z up for a SpaceMouse; stick directions for a gamepad). `gripper` is an analogue gripper reading
    in [-1, 1] (-1 closed) or None if the device has none. `buttons` are the logical buttons held now.
    """

    axes: np.ndarray
    gripper: float | None = None
    buttons: frozenset[str] = frozenset()


def _six(name: str, value, lo: float, hi: float) -> np.ndarray:
    """A scalar or 6 numbers as a (6,) array, each within [lo, hi]."""
    arr = np.asarray(value, dtype=np.float64)
    arr = np.full(6, float(arr)) if arr.ndim == 0 else arr
    if arr.shape != (6,) or not np.all(np.isfinite(arr)) or np.any(arr < lo) or np.any(arr > hi):
        raise ValueError(f"{name} must be one number or 6 numbers (x y z rx ry rz) in [{lo}, {hi}], got {value!r}")
    return arr.copy()


@dataclasses.dataclass(frozen=True)
class MappingConfig:
    """How raw device axes and buttons become a command.

    The twist is built as: device axes -> mounting (axis_order, axis_signs) -> deadzone -> scale -> clip.
    `axis_order[i]` is the device axis that drives twist axis i, so a device mounted rotated 90 degrees
    about z is axis_order=(1, 0, 2, 4, 3, 5), axis_signs=(-1, 1, 1, -1, 1, 1).
    """

    frame: str = "base"  # the frame the twist is expressed in: "base" or "ee"
    deadzone: float | Sequence[float] = 0.1  # fraction of full scale, per axis, ignored around zero
    scale: float | Sequence[float] = 1.0  # gain after the deadzone, per axis; the result is clipped to [-1, 1]
    axis_order: Sequence[int] = (0, 1, 2, 3, 4, 5)
    axis_signs: Sequence[float] = (1, 1, 1, 1, 1, 1)
    gripper_mode: str = "toggle"  # "toggle": each press flips; "hold": closed while held; "analog": the reading
    intervene_mode: str = "toggle"  # "toggle": each press flips; "hold": while held; "motion": also while moving
    gripper_open_at_start: bool = True

    def __post_init__(self) -> None:
        if self.frame not in ("base", "ee"):
            raise ValueError(f"teleop frame must be 'base' or 'ee', got {self.frame!r}")
        if self.gripper_mode not in ("toggle", "hold", "analog"):
            raise ValueError(f"gripper_mode must be 'toggle', 'hold' or 'analog', got {self.gripper_mode!r}")
        if self.intervene_mode not in ("toggle", "hold", "motion"):
            raise ValueError(f"intervene_mode must be 'toggle', 'hold' or 'motion', got {self.intervene_mode!r}")
        if sorted(int(i) for i in self.axis_order) != list(range(6)) or len(self.axis_order) != 6:
            raise ValueError(f"axis_order must be a permutation of 0..5 (device axis per twist axis), "
                             f"got {tuple(self.axis_order)!r}")
        if len(self.axis_signs) != 6 or any(s not in (1, -1) for s in self.axis_signs):
            raise ValueError(f"axis_signs must be 6 values of +1 or -1, got {tuple(self.axis_signs)!r}")
        _six("deadzone", self.deadzone, 0.0, 0.99)
        _six("scale", self.scale, 0.0, 100.0)


class TeleopMapper:
    """Turns a stream of `RawInput`s into `TeleopCommand`s, keeping toggle state and latching presses.

    Drivers call `update` for every raw reading (from their reader thread, as often as the device
    reports) and `read` once per control step. A press is a rising edge between consecutive updates;
    one-shot events and e-stop presses are latched until the next `read`, so a tap shorter than a
    control period is still seen exactly once.
    """

    def __init__(self, config: MappingConfig = MappingConfig()) -> None:
        self.config = config
        self._order = np.array([int(i) for i in config.axis_order])
        self._signs = np.array(config.axis_signs, dtype=np.float64)
        self._deadzone = _six("deadzone", config.deadzone, 0.0, 0.99)
        self._scale = _six("scale", config.scale, 0.0, 100.0)
        self._twist = np.zeros(6)
        self._held: frozenset[str] = frozenset()
        self._gripper = 1.0 if config.gripper_open_at_start else -1.0
        self._intervene_toggled = False
        self._latched: set[str] = set()

    def twist(self, axes: np.ndarray) -> np.ndarray:
        """Device axes -> twist in [-1, 1]^6 (mounting, deadzone rescaled to start at 0, scale, clip)."""
        axes = np.asarray(axes, dtype=np.float64)
        if axes.shape != (6,) or not np.all(np.isfinite(axes)):
            raise ValueError(f"raw teleop axes must be 6 finite numbers, got {axes!r}")
        v = np.clip(axes[self._order] * self._signs, -1.0, 1.0)
        # Rescale past the deadzone so the output grows continuously from 0 instead of jumping to dz.
        mag = np.clip((np.abs(v) - self._deadzone) / (1.0 - self._deadzone), 0.0, 1.0)
        return np.clip(np.sign(v) * mag * self._scale, -1.0, 1.0)

    def update(self, raw: RawInput) -> None:
        unknown = set(raw.buttons) - set(BUTTONS)
        if unknown:
            raise ValueError(f"unknown teleop button(s) {sorted(unknown)}; expected some of {BUTTONS}")
        self._twist = self.twist(raw.axes)
        pressed = raw.buttons - self._held
        self._held = frozenset(raw.buttons)
        cfg = self.config
        if cfg.gripper_mode == "toggle" and "gripper" in pressed:
            self._gripper = -self._gripper
        elif cfg.gripper_mode == "hold":
            self._gripper = -1.0 if "gripper" in self._held else 1.0
        elif cfg.gripper_mode == "analog" and raw.gripper is not None:
            if not np.isfinite(raw.gripper):
                raise ValueError(f"analogue gripper reading must be finite, got {raw.gripper!r}")
            self._gripper = float(np.clip(raw.gripper, -1.0, 1.0))
        if "intervene" in pressed:
            self._intervene_toggled = not self._intervene_toggled
        self._latched |= pressed & set(EVENT_BUTTONS + ("estop",))

    def read(self) -> TeleopCommand:
        """The command now; one-shot presses since the last read are reported once and cleared."""
        cfg, held, latched = self.config, self._held, self._latched
        if cfg.intervene_mode == "toggle":
            intervene = self._intervene_toggled
        else:
            intervene = "intervene" in held
            if cfg.intervene_mode == "motion":
                # HIL-SERL style: touching the device takes over; a gripper press counts as touching.
                intervene = intervene or bool(np.any(self._twist != 0)) or "gripper" in held
        self._latched = set()
        return TeleopCommand(
            twist=self._twist.copy(), gripper=self._gripper, intervene=intervene,
            success="success" in latched, fail="fail" in latched, rerecord="rerecord" in latched,
            discard="discard" in latched, estop="estop" in latched or "estop" in held, frame=cfg.frame)


def check_button_map(button_map: Mapping, what: str) -> dict:
    """Validate a {device button -> logical button} map."""
    out = {}
    for key, name in dict(button_map).items():
        if name not in BUTTONS:
            raise ValueError(f"{what} binds {key!r} to unknown button {name!r}; expected one of {BUTTONS}")
        out[key] = name
    return out


# --- SpaceMouse: 3Dconnexion HID reports ---------------------------------------------------------

SPACEMOUSE_VENDOR_IDS = (0x046D, 0x256F)
SPACEMOUSE_FULL_SCALE = 350.0  # counts at full deflection on current models
# HID frame is x right, y toward the user, z down (rotations about those); flip y and z (a 180 degree
# turn about x) to get x right, y forward, z up, rotations about those axes.
SPACEMOUSE_HID_TO_DEVICE_SIGNS = np.array([1, -1, -1, 1, -1, -1], dtype=np.float64)
SPACEMOUSE_DEFAULT_BUTTONS = {0: "gripper", 1: "intervene"}  # left, right button bits


@dataclasses.dataclass(frozen=True)
class SpaceMouseState:
    counts: tuple[int, ...] = (0, 0, 0, 0, 0, 0)  # raw x y z rx ry rz in the HID frame
    button_bits: int = 0


def parse_spacemouse_report(report: bytes, state: SpaceMouseState = SpaceMouseState()) -> SpaceMouseState:
    """Apply one HID input report to the device state.

    Report id 1 carries translation (3 little-endian int16), id 2 rotation (3 int16), id 3 the button
    bitmask; newer models send id 1 with all six axes (a 13-byte report) and no id 2.
    """
    report = bytes(report)
    if not report:
        raise ValueError("empty SpaceMouse HID report")
    rid, body = report[0], report[1:]
    counts = list(state.counts)
    if rid == 1 and len(body) >= 12:
        counts = list(struct.unpack_from("<6h", body))
    elif rid == 1 and len(body) >= 6:
        counts[:3] = struct.unpack_from("<3h", body)
    elif rid == 2 and len(body) >= 6:
        counts[3:] = struct.unpack_from("<3h", body)
    elif rid == 3:
        return SpaceMouseState(state.counts, int.from_bytes(body, "little"))
    elif rid in (1, 2):
        raise ValueError(f"SpaceMouse report id {rid} needs at least 7 bytes, got {len(report)}: {report.hex()}")
    else:
        return state  # other ids (battery, LED state on wireless models) carry nothing we use
    return SpaceMouseState(tuple(counts), state.button_bits)


def spacemouse_raw_input(state: SpaceMouseState, button_map: Mapping[int, str] = SPACEMOUSE_DEFAULT_BUTTONS,
                         full_scale: float = SPACEMOUSE_FULL_SCALE) -> RawInput:
    axes = np.clip(np.asarray(state.counts, dtype=np.float64) / full_scale, -1.0, 1.0)
    held = frozenset(name for bit, name in button_map.items() if state.button_bits >> int(bit) & 1)
    return RawInput(axes * SPACEMOUSE_HID_TO_DEVICE_SIGNS, None, held)


# --- Gamepad: pygame joystick axes, hats and buttons ---------------------------------------------

@dataclasses.dataclass(frozen=True)
class GamepadLayout:
    """Which pad inputs drive which twist axis and button. Defaults: an Xbox-style pad under SDL2.

    `twist[i]` is (source, index, sign) or None, source "axis" or "hat_x"/"hat_y" (a d-pad), for twist
    axis i in x y z rx ry rz. Sticks read +1 right and down, so forward/left/up take sign -1.
    """

    twist: tuple = (("axis", 1, -1), ("axis", 0, -1), ("axis", 4, -1),  # left stick xy, right stick up/down z
                    ("hat_x", 0, 1), ("hat_y", 0, 1), ("axis", 3, -1))  # d-pad roll/pitch, right stick yaw
    gripper_axis: int | None = 5  # right trigger: released -1 -> open, pulled +1 -> closed
    buttons: Mapping[int, str] = dataclasses.field(default_factory=lambda: {
        0: "intervene", 3: "success", 1: "fail", 2: "rerecord", 6: "discard", 4: "estop", 5: "gripper"})

    def __post_init__(self) -> None:
        if len(self.twist) != 6:
            raise ValueError(f"gamepad layout twist needs 6 entries (x y z rx ry rz), got {len(self.twist)}")
        for axis, spec in zip(TWIST_AXES, self.twist):
            if spec is None:
                continue
            if (len(spec) != 3 or spec[0] not in ("axis", "hat_x", "hat_y") or int(spec[1]) < 0
                    or spec[2] not in (1, -1)):
                raise ValueError(f"gamepad layout for {axis} must be None or (source, index, sign) with source "
                                 f"'axis', 'hat_x' or 'hat_y', index >= 0 and sign +1/-1, got {spec!r}")
        check_button_map(self.buttons, "gamepad layout")


def gamepad_raw_input(axes: Sequence[float], buttons: Sequence[int], hats: Sequence[tuple[int, int]],
                      layout: GamepadLayout = GamepadLayout()) -> RawInput:
    """A pad's axes (in [-1, 1]), button states and hats ((x, y) in {-1, 0, 1}, y up) as a RawInput."""
    def read(spec) -> float:
        if spec is None:
            return 0.0
        source, index, sign = spec
        values, what = (axes, "axes") if source == "axis" else (hats, "hats")
        if index >= len(values):
            raise ValueError(f"gamepad layout reads {source} {index} but the pad has {len(values)} {what}")
        value = values[index] if source == "axis" else values[index][0 if source == "hat_x" else 1]
        return sign * float(value)

    twist = np.array([read(spec) for spec in layout.twist])
    gripper = None
    if layout.gripper_axis is not None:
        gripper = -float(read(("axis", layout.gripper_axis, 1)))
    held = frozenset(name for index, name in layout.buttons.items() if index < len(buttons) and buttons[index])
    return RawInput(twist, gripper, held)


# --- Keyboard: raw terminal bytes ----------------------------------------------------------------

# Terminal escape sequences for the keys we bind; a lone ESC byte is the Escape key.
_ESCAPES = {b"\x1b[A": "up", b"\x1b[B": "down", b"\x1b[C": "right", b"\x1b[D": "left",
            b"\x1bOA": "up", b"\x1bOB": "down", b"\x1bOC": "right", b"\x1bOD": "left"}
_NAMED_BYTES = {b" ": "space", b"\x7f": "backspace", b"\x08": "backspace", b"\r": "enter", b"\n": "enter",
                b"\t": "tab"}

# Key -> (twist axis index, sign) in the base frame seen from behind the robot: x forward, y left, z up.
KEYBOARD_MOTION = {"w": (0, 1), "s": (0, -1), "a": (1, 1), "d": (1, -1), "q": (2, 1), "e": (2, -1),
                   "u": (3, 1), "o": (3, -1), "up": (4, -1), "down": (4, 1), "left": (5, 1), "right": (5, -1)}
KEYBOARD_BUTTONS = {"space": "gripper", "i": "intervene", "y": "success", "n": "fail", "r": "rerecord",
                    "x": "discard", "escape": "estop", "backspace": "estop"}


def decode_keys(data: bytes) -> list[str]:
    """Key names in a chunk read from a terminal in cbreak mode ('w', 'up', 'space', 'escape', ...).

    Escape sequences that are not bound (function keys, ...) are skipped whole.
    """
    keys, i = [], 0
    while i < len(data):
        if data[i] == 0x1B:
            seq = data[i:i + 3]
            if seq in _ESCAPES:
                keys.append(_ESCAPES[seq])
                i += 3
                continue
            if len(data) > i + 1 and data[i + 1] in b"[O":  # some other CSI/SS3 sequence: skip to its final byte
                j = i + 2
                while j < len(data) and not 0x40 <= data[j] <= 0x7E:
                    j += 1
                i = j + 1
                continue
            keys.append("escape")
            i += 1
            continue
        byte = data[i:i + 1]
        keys.append(_NAMED_BYTES.get(byte) or byte.decode("latin-1").lower())
        i += 1
    return keys


class KeyHoldTracker:
    """Turns key presses (a terminal never reports releases) into a set of held keys.

    A key counts as held for `first_hold_s` after its first press (long enough to bridge the
    terminal's auto-repeat delay, typically 250-500 ms) and `release_timeout_s` after each repeat.
    """

    def __init__(self, first_hold_s: float = 0.55, release_timeout_s: float = 0.12) -> None:
        for name, value in (("first_hold_s", first_hold_s), ("release_timeout_s", release_timeout_s)):
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        self.first_hold_s, self.release_timeout_s = first_hold_s, release_timeout_s
        self._until_s: dict[str, float] = {}

    def press(self, keys: Iterable[str], now_s: float) -> None:
        for key in keys:
            repeat = self._until_s.get(key, -np.inf) > now_s
            hold_s = self.release_timeout_s if repeat else self.first_hold_s
            self._until_s[key] = max(self._until_s.get(key, -np.inf), now_s + hold_s)

    def held(self, now_s: float) -> frozenset[str]:
        self._until_s = {k: t for k, t in self._until_s.items() if t > now_s}
        return frozenset(self._until_s)


def keyboard_raw_input(held_keys: Iterable[str], motion: Mapping[str, tuple[int, int]] = KEYBOARD_MOTION,
                       buttons: Mapping[str, str] = KEYBOARD_BUTTONS) -> RawInput:
    """Held keys -> full-scale axes (opposite keys cancel) and logical buttons."""
    axes = np.zeros(6)
    held = set(held_keys)
    for key, (axis, sign) in motion.items():
        if key in held:
            axes[axis] += sign
    return RawInput(np.clip(axes, -1.0, 1.0), None, frozenset(buttons[k] for k in held if k in buttons))
