"""`dojo teleop` in a real subprocess: keys typed into a pseudo-terminal drive the twin; Ctrl-C exits cleanly."""

import json
import os
import select
import signal
import subprocess
import sys
import termios
import time

import pytest

DOJO = [sys.executable, "-m", "dojo.launch.cli", "teleop"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def last_status(text: str) -> str:
    lines = [part for part in text.replace("\n", "\r").split("\r") if part.startswith("ep ")]
    return lines[-1] if lines else ""


def ee_x_m(status: str) -> float:
    return float(status.split("ee [")[1].split()[0])


def test_keyboard_drives_the_twin_and_ctrl_c_exits_cleanly(terminal):
    master, slave = terminal
    before = termios.tcgetattr(slave)
    proc = subprocess.Popen(DOJO + ["--sim", "reach", "--device", "keyboard", "--control-hz", "20"],
                            stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    out = b""
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            os.write(master, b"w")  # hold w: forward (+x in the base frame)
            ready, _, _ = select.select([proc.stdout], [], [], 0.03)
            if ready:
                out += os.read(proc.stdout.fileno(), 1 << 16)
            status = last_status(out.decode())
            if status and ee_x_m(status) > 0.55:
                break
        else:
            pytest.fail(f"the arm never moved forward; output tail: {out[-500:]!r}")
        assert "twist [+0.5 +0.0 +0.0" in status  # keyboard scale 0.5, forward only
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()
    summary = json.loads((out + rest).decode().strip().splitlines()[-1])
    assert summary["steps"] > 0 and summary["final_ee_pos_m"][0] > 0.55  # home is at x = 0.45 m
    assert termios.tcgetattr(slave) == before  # the terminal is given back as it was


def test_sim_operator_drives_reach_to_success():
    result = subprocess.run(DOJO + ["--sim", "reach", "--device", "sim-operator", "--steps", "60", "--fast"],
                            capture_output=True, text=True, timeout=120, env=ENV)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 60 and summary["episodes_finished"] >= 2
    assert summary["successes"] == summary["episodes_finished"]  # the expert reaches every goal
    assert "buttons: intervene" in last_status(result.stdout)


def test_bad_arguments_are_named():
    result = subprocess.run(DOJO + ["--sim", "fly", "--device", "sim-operator"], capture_output=True, text=True,
                            timeout=60, env=ENV)
    assert result.returncode == 2 and "unknown sim task 'fly'" in result.stderr
    result = subprocess.run(DOJO + ["--sim", "reach", "--device", "sim-operator", "--opt", "skil=0.5"],
                            capture_output=True, text=True, timeout=60, env=ENV)
    assert result.returncode == 2 and "unknown" in result.stderr and "skil" in result.stderr
    result = subprocess.run(DOJO + ["--sim", "reach", "--device", "spacemouse"], capture_output=True, text=True,
                            timeout=60, env=ENV)
    assert result.returncode == 2 and "dojo teleop: error:" in result.stderr and "Traceback" not in result.stderr
