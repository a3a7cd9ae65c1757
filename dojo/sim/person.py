"""The twin's person at the station: asked to reset the scene, done after `delay_s` (the twin task's own reset
then stands for what they did), and counted, as a real station counts its human resets."""

from __future__ import annotations

import time


class SimPerson:
    def __init__(self, delay_s: float = 0.0) -> None:
        if not delay_s >= 0:
            raise ValueError(f"the simulated person's delay_s must be >= 0, got {delay_s!r}")
        self.delay_s = delay_s
        self.resets = 0
        self._done_at: float | None = None

    def request(self, rng=None) -> None:
        self.resets += 1
        self._done_at = time.monotonic() + self.delay_s

    def ready(self) -> bool:
        return self._done_at is not None and time.monotonic() >= self._done_at
