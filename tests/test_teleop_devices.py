"""Teleop drivers for real: the keyboard through a pseudo-terminal, device discovery and factory errors."""

import os
import pty
import subprocess
import sys
import termios
import time

import numpy as np
import pytest

from dojo.robot.teleop import make_teleop
from dojo.robot.teleop.keyboard import KeyboardTeleop


def wait_for(teleop, predicate, what: str, timeout_s: float = 3.0):
    """Read the teleop until `predicate(cmd)` holds; returns that command."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        cmd = teleop.read()
        if predicate(cmd):
            return cmd
        time.sleep(0.01)
    raise AssertionError(f"keyboard teleop never {what}")


def test_keyboard_through_a_pty(terminal):
    master, slave = terminal
    before = termios.tcgetattr(slave)
    keyboard = make_teleop("keyboard", fd=slave, scale=1.0, release_timeout_s=0.1, first_hold_s=0.3)
    assert isinstance(keyboard, KeyboardTeleop)
    try:
        assert not termios.tcgetattr(slave)[3] & termios.ICANON  # cbreak: keys arrive one by one
        cmd = keyboard.read()
        assert np.all(cmd.twist == 0) and cmd.gripper == 1.0 and not cmd.intervene

        os.write(master, b"w\x1b[D")  # forward + yaw left
        wait_for(keyboard, lambda c: c.twist[0] == 1.0 and c.twist[5] == 1.0, "moved forward and yawed left")
        wait_for(keyboard, lambda c: np.all(c.twist == 0), "stopped once the keys stopped repeating")

        os.write(master, b" i")  # gripper toggle + intervene toggle
        wait_for(keyboard, lambda c: c.gripper == -1.0 and c.intervene, "closed the gripper and intervened")

        os.write(master, b"y")
        seen = []
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            seen.append(keyboard.read().success)
            time.sleep(0.01)
        assert sum(seen) == 1  # one press, reported once

        os.write(master, b"\x1b")
        wait_for(keyboard, lambda c: c.estop, "saw the Escape e-stop")
    finally:
        keyboard.close()
    assert termios.tcgetattr(slave) == before  # terminal restored


def test_keyboard_reader_failure_surfaces_in_read():
    master, slave = pty.openpty()
    keyboard = KeyboardTeleop(fd=slave)
    os.close(master)  # the terminal goes away: the reader sees EOF or an I/O error
    try:
        with pytest.raises(RuntimeError, match="KeyboardTeleop reader stopped"):
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                keyboard.read()
                time.sleep(0.01)
    finally:
        keyboard._stop.set()
        os.close(slave)


def test_keyboard_refuses_a_non_tty():
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(RuntimeError, match=f"file descriptor {read_end} is not a tty"):
            KeyboardTeleop(fd=read_end)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_factory_rejects_unknown_kind_and_options(terminal):
    with pytest.raises(ValueError, match=r"unknown teleop kind 'joystick'; expected one of \('spacemouse'"):
        make_teleop("joystick")
    with pytest.raises(ValueError, match=r"unknown keyboard teleop option\(s\) \['speed'\]"):
        make_teleop("keyboard", fd=terminal[1], speed=2)
    with pytest.raises(ValueError, match="deadzone must be"):
        make_teleop("keyboard", fd=terminal[1], deadzone=2.0)


def test_spacemouse_and_gamepad_without_a_device_say_so():
    pytest.importorskip("hid")
    pytest.importorskip("pygame")
    import hid

    from dojo.robot.teleop.spacemouse import find_spacemice
    if find_spacemice(hid):
        pytest.skip("a SpaceMouse is connected here")
    with pytest.raises(RuntimeError, match="no 3Dconnexion SpaceMouse found"):
        make_teleop("spacemouse")
    with pytest.raises(RuntimeError, match=r"gamepad index 3 not available: pygame sees \d+ joystick"):
        make_teleop("gamepad", index=3)


@pytest.mark.parametrize("kind, module", [("spacemouse", "hid"), ("gamepad", "pygame")])
def test_missing_vendor_module_says_how_to_install(kind, module):
    # A fresh interpreter where the vendor module cannot be imported (sys.modules[name] = None).
    code = (f"import sys; sys.modules[{module!r}] = None\n"
            "from dojo.robot.teleop import make_teleop\n"
            f"make_teleop({kind!r})\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert f"needs the Python module {module!r}" in result.stderr
    assert "dojo-robot[teleop]" in result.stderr
