"""The safety layer between every action and the arm: workspace box, per-step limits, e-stop.

Every end-effector target passes through `SafetyLayer.filter` before `Arm.command`; a non-finite
action is refused with a ValueError before anything is commanded.
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np

from dojo.robot import geometry


@dataclasses.dataclass(frozen=True)
class SafetyConfig:
    workspace_min_m: tuple[float, float, float]
    workspace_max_m: tuple[float, float, float]
    max_step_m: float = 0.05  # largest end-effector translation per control step
    max_step_rad: float = 0.3  # largest end-effector rotation per control step
    # Orientation bound: the target stays within this angle of the reference (reset) orientation,
    # so rotation actions cannot wind the wrist into its joint limits. None: unbounded.
    max_tilt_rad: float | None = None

    def __post_init__(self) -> None:
        lo, hi = np.asarray(self.workspace_min_m, float), np.asarray(self.workspace_max_m, float)
        if lo.shape != (3,) or hi.shape != (3,) or not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise ValueError(f"workspace box bounds must be 3 finite numbers, got min={self.workspace_min_m} "
                             f"max={self.workspace_max_m}")
        if np.any(lo >= hi):
            raise ValueError(f"workspace_box.min_m must be < max_m on every axis, got min={lo.tolist()} "
                             f"max={hi.tolist()}")
        for name in ("max_step_m", "max_step_rad") + (("max_tilt_rad",) if self.max_tilt_rad is not None else ()):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")


class EStop:
    """A latched emergency stop. Any thread (teleop, a watchdog, a person) may trigger it."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def trigger(self, reason: str = "e-stop") -> None:
        self.reason = reason
        self._event.set()

    def release(self) -> None:
        self.reason = ""
        self._event.clear()

    @property
    def engaged(self) -> bool:
        return self._event.is_set()


class SafetyLayer:
    def __init__(self, config: SafetyConfig) -> None:
        self.config = config
        self.box_min_m = np.asarray(config.workspace_min_m, dtype=np.float64)
        self.box_max_m = np.asarray(config.workspace_max_m, dtype=np.float64)
        self.estop = EStop()
        self.reference_quat_wxyz: np.ndarray | None = None  # set by the env at reset; centre of max_tilt_rad

    @staticmethod
    def check_finite(name: str, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{name} must be finite, got {np.array2string(values, precision=4)}; "
                             "nothing was commanded")
        return values

    def filter(self, pos_m: np.ndarray, quat_wxyz: np.ndarray,
               target_pos_m: np.ndarray, target_quat_wxyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Limit a target to one step from the current pose and clip its position into the box."""
        target_pos_m = self.check_finite("target position", target_pos_m)
        target_quat_wxyz = self.check_finite("target orientation", target_quat_wxyz)
        step = target_pos_m - pos_m
        norm = np.linalg.norm(step)
        if norm > self.config.max_step_m:
            step *= self.config.max_step_m / norm
        safe_pos = np.clip(pos_m + step, self.box_min_m, self.box_max_m)
        safe_quat = geometry.quat_limit_step(quat_wxyz, target_quat_wxyz, self.config.max_step_rad)
        if self.config.max_tilt_rad is not None and self.reference_quat_wxyz is not None:
            safe_quat = geometry.quat_limit_step(self.reference_quat_wxyz, safe_quat, self.config.max_tilt_rad)
        return safe_pos, safe_quat
