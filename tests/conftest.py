"""Shared test set-up: headless MuJoCo rendering and a quiet JAX on the CPU."""

import os
import pty

import pytest

# Must be set before mujoco is first imported anywhere in the test session.
if not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")


@pytest.fixture
def terminal():
    """A pseudo-terminal (master, slave) for keyboard teleop and terminal UIs."""
    master, slave = pty.openpty()
    yield master, slave
    os.close(master)
    os.close(slave)
