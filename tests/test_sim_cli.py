"""`dojo sim run` as a real subprocess: the last stdout line is the JSON summary."""

import json
import subprocess
import sys


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "dojo.launch.cli", "sim", "run", *args],
                          capture_output=True, text=True, timeout=300)


def test_sim_run_expert_prints_a_json_summary_last():
    result = run_cli("--task", "reach", "--policy", "expert", "--episodes", "4", "--seed", "3")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["task"] == "reach" and summary["episodes"] == 4
    assert summary["success_rate"] == 1.0 and 1 <= summary["mean_steps"] < 30
    assert "episode" in result.stderr  # the progress bar goes to stderr


def test_sim_run_random_policy_with_pixels():
    result = run_cli("--task", "pick_cube", "--policy", "random", "--episodes", "1", "--obs-mode", "both")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["success_rate"] == 0.0 and summary["mean_steps"] == 100


def test_sim_run_rejects_bad_arguments_by_name():
    result = run_cli("--task", "stack")
    assert result.returncode == 2 and "stack" in result.stderr
    result = run_cli("--episodes", "0")
    assert result.returncode == 2 and "--episodes must be a positive integer, got 0" in result.stderr
