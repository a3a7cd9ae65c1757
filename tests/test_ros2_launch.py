"""The ROS 2 launch files (dojo/launch/ros2/*.launch.py), read with `ast`: ROS 2's `launch` cannot be installed
here. They parse, declare every launch argument they use, include franka_bringup with arguments it declares,
and what they pass to dojo (command, flags, KEY=VALUE overrides, the controllers they name) exists in dojo and
fits the shipped FR3 station.
"""

import argparse
import ast
import shlex
from pathlib import Path

import pytest

from dojo.launch.cli import build_parser
from dojo.launch.cmd_train import train_config
from dojo.launch.config import OPEN_SECTIONS, load_config
from dojo.robot.drivers.ros2_logic import config_from_station
from dojo.robot.station import ROBOTS_DIR, load_station

LAUNCH_DIR = Path(__file__).resolve().parents[1] / "dojo" / "launch" / "ros2"
LAUNCH_FILES = sorted(LAUNCH_DIR.glob("*.launch.py"))
STATION = ROBOTS_DIR / "franka_fr3.yaml"  # the station these launch files are written for
# The arguments franka_ros2's franka_bringup/launch/franka.launch.py declares (its release with robot_type).
FRANKA_ARGUMENTS = {"robot_type", "arm_prefix", "namespace", "robot_ip", "load_gripper", "use_fake_hardware",
                    "fake_sensor_commands", "joint_state_rate", "load_franka_robot_state_broadcaster",
                    "controllers_yaml"}


def calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == name]


def keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def declared(tree: ast.AST) -> dict[str, str | None]:
    """Launch argument name -> its default value (None: required)."""
    found = {}
    for call in calls(tree, "DeclareLaunchArgument"):
        default = keyword(call, "default_value")
        found[ast.literal_eval(call.args[0])] = None if default is None else ast.literal_eval(default)
    return found


def strings(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def dojo_commands(tree: ast.AST) -> list[list[str]]:
    """The dojo command lines of the ExecuteProcess actions, each launch argument at its default (or, where it
    has none, as <NAME>); a list of parts is one argument, concatenated as launch does."""
    defaults = declared(tree)

    def value(node):
        if isinstance(node, ast.Call) and node.func.id == "LaunchConfiguration":
            name = ast.literal_eval(node.args[0])
            return defaults[name] if defaults[name] is not None else f"<{name}>"
        if isinstance(node, ast.List):
            return "".join(value(part) for part in node.elts)
        return ast.literal_eval(node)

    commands = [[value(part) for part in keyword(call, "cmd").elts] for call in calls(tree, "ExecuteProcess")]
    return [cmd for cmd in commands if cmd[0] == "dojo"]


def subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices[command]


@pytest.fixture(params=LAUNCH_FILES, ids=lambda p: p.name)
def launch_file(request) -> ast.Module:
    return ast.parse(request.param.read_text(), filename=str(request.param))


def test_the_launch_files_are_shipped():
    assert {p.name for p in LAUNCH_FILES} >= {"fr3_bringup.launch.py", "fr3_actor.launch.py"}


def test_a_launch_file_declares_every_argument_it_uses(launch_file):
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in launch_file.body)
    used = {ast.literal_eval(c.args[0]) for c in calls(launch_file, "LaunchConfiguration")}
    assert used <= set(declared(launch_file)), f"used but not declared: {sorted(used - set(declared(launch_file)))}"
    for call in calls(launch_file, "DeclareLaunchArgument"):
        assert keyword(call, "description") is not None, f"{ast.literal_eval(call.args[0])} has no description"


def test_every_dojo_command_a_launch_file_names_exists(launch_file):
    """The docstring's commands too: docs must not name commands or flags that do not exist."""
    docstring = ast.get_docstring(launch_file)
    lines = [s.strip("`") for s in docstring.replace("\n", " ").split("`") if s.startswith("dojo ")]
    for line in lines + [" ".join(cmd) for cmd in dojo_commands(launch_file)]:
        argv = [a for a in shlex.split(line)[1:] if a != "--help"]
        try:
            build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"dojo does not take {line!r}")


def test_the_bringup_includes_franka_bringup_with_arguments_it_declares():
    tree = ast.parse((LAUNCH_DIR / "fr3_bringup.launch.py").read_text())
    (include,) = calls(tree, "IncludeLaunchDescription")
    assert {"franka_bringup", "launch", "franka.launch.py"} <= set(strings(include.args[0]))
    passed = keyword(include, "launch_arguments").func.value  # {...}.items()
    assert {ast.literal_eval(k) for k in passed.keys} <= FRANKA_ARGUMENTS


def test_the_controllers_it_spawns_are_the_ones_the_station_uses():
    defaults = declared(ast.parse((LAUNCH_DIR / "fr3_bringup.launch.py").read_text()))
    options = config_from_station(load_station(STATION)[0]).options
    assert options.target_pose_topic.startswith(f"/{defaults['cartesian_controller']}/")
    assert options.reset_action == f"/{defaults['trajectory_controller']}/follow_joint_trajectory"
    for name in ("cartesian_controller", "trajectory_controller"):
        assert getattr(options, name) in ("", defaults[name])  # "" until the station names it


def test_the_actor_launch_runs_dojo_actor_on_the_station():
    tree = ast.parse((LAUNCH_DIR / "fr3_actor.launch.py").read_text())
    (include,) = calls(tree, "IncludeLaunchDescription")
    assert "fr3_bringup.launch.py" in strings(include)
    (cmd,) = dojo_commands(tree)
    assert cmd[:2] == ["dojo", "actor"]
    flags = {a: cmd[i + 1] for i, a in enumerate(cmd) if a.startswith("--")}
    assert set(flags) <= set(subparser("actor")._option_string_actions)
    assert flags == {"--robot": "<robot>", "--learner": "<learner>", "--keys": "<keys>"}


def test_every_key_the_actor_launch_passes_exists_and_takes_its_value():
    tree = ast.parse((LAUNCH_DIR / "fr3_actor.launch.py").read_text())
    (cmd,) = dojo_commands(tree)
    overrides = [a for a in cmd[2:] if "=" in a and not a.startswith("-")]
    assert overrides, "the actor launch passes no KEY=VALUE (then this test checks nothing)"
    for item in overrides:
        key, _, value = item.partition("=")
        if key.startswith("robot."):  # a station key: the station file with it, and the driver's own options
            station, _ = load_station(STATION, [f"{key.removeprefix('robot.')}={value}"])
            config_from_station(station)
        else:
            load_config("train", [item], open_sections=OPEN_SECTIONS)
            assert not key.startswith(tuple(f"{s}." for s in OPEN_SECTIONS)), f"{key}: an open section takes any key"
    # All of them together, as `dojo actor --robot FILE KEY=VALUE ...` checks them before it starts.
    cfg = train_config(overrides, None, robot=str(STATION))
    assert cfg.env.kind == "robot" and cfg.robot.arm.options.start_timeout_s == 60.0
