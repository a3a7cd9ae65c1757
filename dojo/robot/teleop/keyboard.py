"""Terminal keyboard teleop: raw key bytes from a tty (no X needed) read in a thread, behind `Teleop`.

Keys (see mapping.KEYBOARD_MOTION/KEYBOARD_BUTTONS): w/s a/d q/e move x/y/z, u/o roll, up/down pitch,
left/right yaw, space toggles the gripper, i intervene, y success, n fail, r re-record, x discard,
Escape or Backspace e-stop. A terminal reports no key releases, so auto-repeat keeps a key held and a
short silence releases it (mapping.KeyHoldTracker). The tty is put in cbreak mode, so Ctrl-C still works.
"""

from __future__ import annotations

import os
import select
import sys
import termios
import time
import tty
from typing import Mapping

from dojo.robot.teleop.base import MappedTeleop
from dojo.robot.teleop.mapping import (KEYBOARD_BUTTONS, KEYBOARD_MOTION, TWIST_AXES, KeyHoldTracker, MappingConfig,
                                       check_button_map, decode_keys, keyboard_raw_input)


class KeyboardTeleop(MappedTeleop):
    def __init__(self, mapping: MappingConfig = MappingConfig(scale=0.5), fd: int | None = None,
                 motion: Mapping[str, tuple[int, int]] = KEYBOARD_MOTION,
                 buttons: Mapping[str, str] = KEYBOARD_BUTTONS,
                 first_hold_s: float = 0.55, release_timeout_s: float = 0.12) -> None:
        super().__init__(mapping)
        self._fd = sys.stdin.fileno() if fd is None else fd
        if not os.isatty(self._fd):
            raise RuntimeError(f"keyboard teleop needs a terminal, but file descriptor {self._fd} is not a tty "
                               "(run it in a terminal, not with stdin redirected)")
        for key, spec in dict(motion).items():
            if len(spec) != 2 or not 0 <= int(spec[0]) < 6 or spec[1] not in (1, -1):
                raise ValueError(f"keyboard motion binding {key!r} must be (axis 0-5 of {TWIST_AXES}, sign +1/-1), "
                                 f"got {spec!r}")
        self._motion = {k: (int(a), int(s)) for k, (a, s) in dict(motion).items()}
        self._buttons = check_button_map(buttons, "keyboard buttons")
        self._tracker = KeyHoldTracker(first_hold_s, release_timeout_s)
        self._saved_tty = termios.tcgetattr(self._fd)
        tty.setcbreak(self._fd)  # no line buffering, no echo; signals (Ctrl-C) still delivered
        self._start_reader(self._read_keys)

    def _update(self, data: bytes = b"") -> None:
        # One lock over tracker and mapper: the reader thread and read() both update, and their
        # held-key sets must reach the mapper in time order or a stale set would fake a press.
        with self._lock:
            now_s = time.monotonic()
            self._tracker.press(decode_keys(data), now_s)
            self.mapper.update(keyboard_raw_input(self._tracker.held(now_s), self._motion, self._buttons))

    def _read_keys(self) -> None:
        ready, _, _ = select.select([self._fd], [], [], 0.02)
        data = os.read(self._fd, 1024) if ready else b""
        if ready and not data:
            raise EOFError(f"terminal on fd {self._fd} closed")
        self._update(data)  # also on silence, so released keys stop the motion

    def _poll(self) -> None:
        self._update()

    def close(self) -> None:
        super().close()
        termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved_tty)
