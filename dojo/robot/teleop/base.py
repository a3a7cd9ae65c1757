"""Shared plumbing for teleop drivers: a `TeleopMapper` behind a lock, fed by a background reader thread."""

from __future__ import annotations

import threading
from typing import Callable

from dojo.robot.interfaces import Teleop, TeleopCommand
from dojo.robot.teleop.mapping import MappingConfig, RawInput, TeleopMapper


class MappedTeleop(Teleop):
    """A device whose readings go through a `TeleopMapper`.

    Subclasses either override `_poll` (read the device when the control loop asks) or start a
    reader thread with `_start_reader(step)`, where `step()` blocks briefly for input and feeds it.
    If the reader thread fails (device unplugged), the next `read` raises its error rather than
    silently returning a still twist.
    """

    def __init__(self, mapping: MappingConfig) -> None:
        self.mapper = TeleopMapper(mapping)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _feed(self, raw: RawInput) -> None:
        with self._lock:
            self.mapper.update(raw)

    def _poll(self) -> None:
        """Read the device now (polled drivers); threaded drivers leave this empty."""

    def read(self) -> TeleopCommand:
        if self._error is not None:
            raise RuntimeError(f"{type(self).__name__} reader stopped: {self._error}") from self._error
        self._poll()
        with self._lock:
            return self.mapper.read()

    def _start_reader(self, step: Callable[[], None]) -> None:
        def loop() -> None:
            try:
                while not self._stop.is_set():
                    step()
            except BaseException as err:  # surfaced to the control loop by read()
                self._error = err

        self._thread = threading.Thread(target=loop, name=f"{type(self).__name__}-reader", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
