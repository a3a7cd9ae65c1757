"""The ROS 2 arm driver's logic (dojo.robot.drivers.ros2_logic), without rclpy.

rclpy cannot be installed here, so the messages are built from the real ROS 2 Jazzy message definitions (the
rosbags type store of the dev extra): every field of the definition with rclpy's defaults and nothing else, and
each assignment checked as rclpy's generated setters check it. A misspelt field or a numpy number where ROS
wants a Python float or int fails here as it would on the robot.
"""

import array
import dataclasses
import math
import threading

import numpy as np
import pytest

from dojo.robot import geometry
from dojo.robot.drivers.ros2_logic import (STEP_SLACK, StateCache, checked_joint_target, checked_target,
                                           config_from_station, fill_pose_stamped, fill_reset_goal,
                                           fill_switch_request, parse_options, reset_failure)
from dojo.robot.interfaces import DeviceError
from dojo.robot.station import load_station

typesys = pytest.importorskip("rosbags.typesys", reason="the ROS message definitions come with the dev extra")

STORE = typesys.get_typestore(typesys.Stores.ROS2_JAZZY)
# The action and service dojo uses are not in the store: their definitions as in ROS 2 Jazzy (control_msgs 5,
# controller_manager_msgs 4), reduced to the fields a default-constructed message has and dojo touches.
STORE.register(typesys.get_types_from_msg(
    "string name\nfloat64 position\nfloat64 velocity\nfloat64 acceleration", "control_msgs/msg/JointTolerance"))
STORE.register(typesys.get_types_from_msg(
    "trajectory_msgs/JointTrajectory trajectory\ntrajectory_msgs/MultiDOFJointTrajectory multi_dof_trajectory\n"
    "control_msgs/JointTolerance[] path_tolerance\ncontrol_msgs/JointTolerance[] goal_tolerance\n"
    "builtin_interfaces/Duration goal_time_tolerance", "control_msgs/action/FollowJointTrajectory_Goal"))
STORE.register(typesys.get_types_from_msg(
    "int32 error_code\nstring error_string", "control_msgs/action/FollowJointTrajectory_Result"))
STORE.register(typesys.get_types_from_msg(  # (rosbags files a service's parts under "srv/msg/")
    "int32 BEST_EFFORT=1\nint32 STRICT=2\nstring[] activate_controllers\nstring[] deactivate_controllers\n"
    "int32 strictness\nbool activate_asap\nbuiltin_interfaces/Duration timeout",
    "controller_manager_msgs/srv/SwitchController_Request"))
SWITCH_REQUEST = "controller_manager_msgs/srv/msg/SwitchController_Request"

FLOATS, INTS = ("float32", "float64"), ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64")


class RosMessage:
    """A message as rclpy makes it: `RosMessage("geometry_msgs/msg/PoseStamped")` has every field of the
    definition at its default, refuses other attributes, and type-checks assignments."""

    def __init__(self, msgtype: str, **values) -> None:
        object.__setattr__(self, "_msgtype", msgtype)
        object.__setattr__(self, "_fields", dict(STORE.fielddefs[msgtype][1]))
        for name, field in self._fields.items():
            object.__setattr__(self, name, _default(field))
        for name, value in values.items():
            setattr(self, name, value)

    def __setattr__(self, name, value) -> None:
        if name not in self._fields:
            raise AttributeError(f"{self._msgtype} has no field {name!r}")
        if not _fits(self._fields[name], value):
            raise AssertionError(f"{self._msgtype}.{name} cannot take {value!r}")
        object.__setattr__(self, name, value)


def _default(field):
    kind, detail = field
    if kind.name == "BASE":
        return {"string": "", "bool": False}.get(detail[0], 0.0 if detail[0] in FLOATS else 0)
    if kind.name == "NAME":
        return RosMessage(detail)
    if kind.name == "ARRAY":
        return [_default(detail[0]) for _ in range(detail[1])]
    return []  # SEQUENCE


def _fits(field, value) -> bool:
    kind, detail = field
    if kind.name == "BASE":
        base = detail[0]
        if base in FLOATS:
            return isinstance(value, float)
        if base in INTS:
            return isinstance(value, int) and not isinstance(value, bool) and (value >= 0 or base[0] != "u")
        return isinstance(value, {"string": str, "bool": bool}[base])
    if kind.name == "NAME":
        return isinstance(value, RosMessage) and value._msgtype == detail
    return isinstance(value, (list, tuple, array.array)) and all(_fits(detail[0], v) for v in value)


def stamped(msgtype: str, t_s: float, frame_id: str = "fr3_link0") -> RosMessage:
    msg = RosMessage(msgtype)
    msg.header.frame_id = frame_id
    msg.header.stamp.sec, msg.header.stamp.nanosec = int(t_s), int(round((t_s % 1) * 1e9))
    return msg


def vector3(msgtype: str, values) -> RosMessage:
    return RosMessage(msgtype, **dict(zip("xyz", map(float, values))))


# --- what the state topics of a franka_ros2 station carry at time T (Unix seconds) -----------------------
T = 1_760_000_000.25
Q = [0.1, -0.7, 0.2, -2.3, 0.05, 1.6, 0.8]
JOINTS = [f"fr3_joint{i}" for i in range(1, 8)]


def joint_state(t_s=T, names=None, q=None, dq=None) -> RosMessage:
    # /joint_states merges the arm and the gripper, in the publisher's own order.
    names = names or ["fr3_finger_joint1"] + JOINTS[::-1] + ["fr3_finger_joint2"]
    by_name = dict(zip(JOINTS, q or Q), fr3_finger_joint1=0.02, fr3_finger_joint2=0.02)
    msg = stamped("sensor_msgs/msg/JointState", t_s, "")
    msg.name = names
    msg.position = array.array("d", [by_name[n] for n in names])
    msg.velocity = array.array("d", [0.01 * i for i in range(len(names))] if dq is None else dq)
    return msg


def pose(t_s=T, pos=(0.5, 0.0, 0.3), quat_wxyz=(0.0, 1.0, 0.0, 0.0), frame_id="fr3_link0") -> RosMessage:
    msg = stamped("geometry_msgs/msg/PoseStamped", t_s, frame_id)
    msg.pose.position = vector3("geometry_msgs/msg/Point", pos)
    w, x, y, z = map(float, quat_wxyz)
    msg.pose.orientation = RosMessage("geometry_msgs/msg/Quaternion", x=x, y=y, z=z, w=w)
    return msg


def twist(t_s=T) -> RosMessage:
    msg = stamped("geometry_msgs/msg/TwistStamped", t_s)
    msg.twist.linear, msg.twist.angular = (vector3("geometry_msgs/msg/Vector3", [0.1, 0.2, 0.3]),
                                           vector3("geometry_msgs/msg/Vector3", [0.4, 0.5, 0.6]))
    return msg


def wrench(t_s=T) -> RosMessage:
    msg = stamped("geometry_msgs/msg/WrenchStamped", t_s)
    msg.wrench.force, msg.wrench.torque = (vector3("geometry_msgs/msg/Vector3", [1.0, 2.0, 3.0]),
                                           vector3("geometry_msgs/msg/Vector3", [0.1, 0.2, 0.3]))
    return msg


def width(value=0.04) -> RosMessage:
    return RosMessage("std_msgs/msg/Float64", data=float(value))


@pytest.fixture
def config():
    station, _ = load_station("franka_fr3")  # the shipped example station
    return config_from_station(station)


def filled(config, arrival_s=100.0, **messages) -> StateCache:
    """A cache holding one message per state topic (the defaults above, or `messages` by kind)."""
    cache = StateCache(config)
    made = {"joints": joint_state, "pose": pose, "twist": twist, "gripper": width, "wrench": wrench}
    for kind in cache.topics:
        cache.put(kind, messages[kind] if kind in messages else made[kind](), arrival_s)
    return cache


# --- options ---------------------------------------------------------------------------------------------
def test_the_shipped_station_gives_the_driver_its_settings(config):
    o = config.options
    assert o.joint_names == tuple(JOINTS) and o.base_frame == "fr3_link0"
    assert o.ee_pose_topic == "/franka_robot_state_broadcaster/current_pose"
    assert o.reset_action == "/fr3_arm_controller/follow_joint_trajectory"
    assert config.home_q_rad.shape == (7,) and config.max_gripper_width_m == 0.08
    assert (config.stale_after_s, config.max_step_m, config.max_step_rad) == (0.2, 0.03, 0.2)


def franka_options() -> dict:
    return dict(load_station("franka_fr3")[1]["arm"]["options"])


def test_an_unknown_option_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['state_timeout_s'\].*known: \[.*'base_frame'"):
        parse_options({**franka_options(), "state_timeout_s": 1.0})


def test_a_missing_option_is_named_with_the_known_ones():
    options = franka_options()
    del options["ee_pose_topic"]
    with pytest.raises(ValueError, match=r"missing \['ee_pose_topic'\].*known: \[.*'joint_names'"):
        parse_options(options)


@pytest.mark.parametrize("change, message", [
    ({"joint_names": "fr3_joint1"}, r"joint_names must be a list"),
    ({"joint_names": ["a", "a"]}, r"distinct"),
    ({"reset_duration_s": 0}, r"reset_duration_s must be > 0"),
    ({"ee_twist_topic": "/joint_states"}, r"same name twice"),
    ({"target_pose_topic": " "}, r"target_pose_topic must be a non-empty ROS name"),
    ({"joint_min_rad": [-1.0] * 7, "joint_max_rad": None}, r"both joint_min_rad and joint_max_rad"),
    ({"joint_min_rad": [-1.0] * 6, "joint_max_rad": [1.0] * 6}, r"must be 7 numbers each"),
    ({"cartesian_controller": "cartesian_impedance_controller", "trajectory_controller": ""},
     r"name both cartesian_controller"),
])
def test_bad_option_values_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        parse_options({**franka_options(), **change})


@pytest.mark.parametrize("override, message", [
    ("arm.home_q_rad=null", r"home_q_rad is needed with arm.driver=ros2"),
    ("arm.home_q_rad=[0.0,0.0]", r"home_q_rad must be 7 finite joint positions"),
    ("arm.max_gripper_width_m=null", r"max_gripper_width_m must be > 0"),
    ("arm.options.joint_max_rad=null", r"both joint_min_rad and joint_max_rad"),
])
def test_a_station_that_does_not_fit_the_driver_is_refused(override, message):
    station, _ = load_station("franka_fr3", [override])
    with pytest.raises(ValueError, match=message):
        config_from_station(station)


def test_a_home_pose_outside_the_joint_limits_is_refused():
    station, _ = load_station("franka_fr3", ["arm.options.joint_min_rad=[-2,-2,-2,-2,-2,-2,-2]",
                                             "arm.options.joint_max_rad=[2,2,2,2,2,2,2]"])
    with pytest.raises(ValueError, match=r"puts \['fr3_joint4'\] outside the joint limits"):
        config_from_station(station)  # the FR3's home has joint 4 at -2.356 rad


# --- state -----------------------------------------------------------------------------------------------
def test_state_from_the_messages_in_the_configured_joint_order(config):
    state = filled(config).state(T + 0.05, 100.05)
    np.testing.assert_allclose(state.joint_q_rad, Q)
    # The velocities went out in the publisher's order: finger1, joint7 .. joint1, finger2 -> 0.01 * index.
    np.testing.assert_allclose(state.joint_dq_rad_s, [0.01 * (8 - i) for i in range(1, 8)])
    np.testing.assert_allclose(state.ee_pos_m, [0.5, 0.0, 0.3])
    np.testing.assert_allclose(state.ee_quat_wxyz, [0.0, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(state.ee_vel, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    np.testing.assert_allclose(state.wrench, [1.0, 2.0, 3.0, 0.1, 0.2, 0.3])
    assert state.gripper_width_m == 0.04
    assert state.timestamp_s == pytest.approx(T, abs=1e-6)  # Unix seconds from the pose's header stamp


def test_positions_without_velocities_give_zero_velocities(config):
    state = filled(config, joints=joint_state(dq=array.array("d"))).state(T, 100.0)
    np.testing.assert_array_equal(state.joint_dq_rad_s, np.zeros(7))


def test_a_station_without_a_wrench_topic_has_no_wrench():
    station, _ = load_station("franka_fr3", ["arm.options.wrench_topic=''"])
    config = config_from_station(station)
    state = filled(config).state(T, 100.0)
    assert "wrench" not in StateCache(config).topics and state.wrench is None


def test_a_missing_joint_is_named_with_what_the_topic_has(config):
    names = ["fr3_finger_joint1"] + JOINTS[:6] + ["fr3_finger_joint2"]
    msg = joint_state(names=names, dq=array.array("d", [0.0] * 8))
    with pytest.raises(DeviceError, match=r"/joint_states has no joint\(s\) \['fr3_joint7'\].*it has \['fr3_finger"):
        filled(config, joints=msg).state(T, 100.0)


def test_no_state_yet_names_every_silent_topic(config):
    cache = StateCache(config)
    cache.put("pose", pose(), 100.0)
    with pytest.raises(DeviceError, match=r"no message on /joint_states yet; .*no message on /fr3_gripper/width yet"):
        cache.state(T, 100.0)
    with pytest.raises(DeviceError) as err:
        cache.state(T, 100.0)
    assert "current_pose" not in str(err.value) and "ros2 topic list" in str(err.value)


def test_a_stream_that_stopped_is_stale(config):
    cache = filled(config, arrival_s=100.0)
    cache.state(T + 0.19, 100.19)  # younger than stale_after_s = 0.2: fresh
    cache.put("twist", twist(T + 0.21), 100.21)
    with pytest.raises(DeviceError, match=r"stale_after_s=0.2\): the newest message on /joint_states is 0.210 s old"
                                          r".*/franka_robot_state_broadcaster/current_pose is 0.210 s old"):
        cache.state(T + 0.21, 100.21)


def test_a_message_stamped_long_ago_is_stale_on_arrival(config):
    cache = filled(config, pose=pose(t_s=T - 1.0), arrival_s=100.0)
    with pytest.raises(DeviceError, match=r"current_pose is 1.000 s old"):
        cache.state(T, 100.0)


def test_a_message_stamped_in_the_future_names_the_clocks(config):
    cache = filled(config, twist=twist(t_s=T + 5.0), arrival_s=100.0)
    with pytest.raises(DeviceError, match=r"desired_end_effector_twist is stamped 5.000 s in the future: .*clock"):
        cache.state(T, 100.0)


def test_a_pose_in_another_frame_is_refused(config):
    cache = filled(config, pose=pose(frame_id="fr3_hand_tcp"))
    with pytest.raises(DeviceError, match=r"current_pose is in frame 'fr3_hand_tcp', expected .*'fr3_link0'"):
        cache.state(T, 100.0)
    filled(config, pose=pose(frame_id="")).state(T, 100.0)  # a publisher that names no frame is trusted


def test_non_finite_state_is_a_device_error(config):
    with pytest.raises(DeviceError, match=r"/fr3_gripper/width sent non-finite values \[nan\]"):
        filled(config, gripper=width(math.nan)).state(T, 100.0)


def test_waiting_for_the_first_messages(config):
    cache = StateCache(config)
    with pytest.raises(DeviceError, match=r"no message within .*start_timeout_s=0.01 s on \['/joint_states', "):
        cache.wait_for_all(0.01)
    # rclpy's executor thread delivers them while the driver waits.
    sender = threading.Thread(target=lambda: [cache.put(k, None, 0.0) for k in cache.topics])
    sender.start()
    cache.wait_for_all(60.0)
    sender.join()


# --- targets ---------------------------------------------------------------------------------------------
def measured(config):
    return filled(config).state(T, 100.0)


def test_a_target_within_a_step_is_published_as_the_controller_wants_it(config):
    state = measured(config)
    target = state.ee_pos_m + [config.max_step_m, 0.0, 0.0]
    pos, quat, grip = checked_target(target, np.float32([0.0, 1.0, 0.0, 0.0]), 0.05, state, config, 0.08)
    msg = RosMessage("geometry_msgs/msg/PoseStamped")
    fill_pose_stamped(msg, config.options.base_frame, T + 0.5, pos, quat)
    assert msg.header.frame_id == "fr3_link0"
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (int(T), 750_000_000)
    p, o = msg.pose.position, msg.pose.orientation
    assert (p.x, p.y, p.z) == pytest.approx((0.53, 0.0, 0.3))
    assert (o.x, o.y, o.z, o.w) == pytest.approx((1.0, 0.0, 0.0, 0.0))  # ROS orders a quaternion x, y, z, w
    assert grip == 0.05


@pytest.mark.parametrize("asked, published", [(-0.01, 0.0), (0.2, 0.08), (0.03, 0.03)])
def test_the_gripper_target_is_clamped_to_its_range(config, asked, published):
    state = measured(config)
    assert checked_target(state.ee_pos_m, state.ee_quat_wxyz, asked, state, config, 0.08)[2] == published


def test_a_jump_is_refused_not_shortened(config):
    state = measured(config)
    limit_m = STEP_SLACK * config.max_step_m
    checked_target(state.ee_pos_m + [0.0, 0.0, limit_m * 0.99], state.ee_quat_wxyz, 0.0, state, config, 0.08)
    with pytest.raises(ValueError, match=r"is 0.0606 m from the measured .* 2 x robot.safety.max_step_m = 0.0600 m"
                                         r".*nothing was published"):
        checked_target(state.ee_pos_m + [0.0, 0.0, limit_m * 1.01], state.ee_quat_wxyz, 0.0, state, config, 0.08)
    turned = geometry.quat_mul(geometry.rotvec_to_quat([0.0, 0.0, STEP_SLACK * config.max_step_rad * 1.01]),
                               state.ee_quat_wxyz)
    with pytest.raises(ValueError, match=r"orientation is 0.4040 rad from the measured one"):
        checked_target(state.ee_pos_m, turned, 0.0, state, config, 0.08)


@pytest.mark.parametrize("pos, quat, grip, message", [
    ([0.5, np.nan, 0.3], [0, 1, 0, 0], 0.0, r"target_pos_m must be 3 finite"),
    ([0.5, 0.0], [0, 1, 0, 0], 0.0, r"target_pos_m must be 3 finite"),
    ([0.5, 0.0, 0.3], [0, 1, 0, np.inf], 0.0, r"target_quat_wxyz must be 4 finite"),
    ([0.5, 0.0, 0.3], [0, 2, 0, 0], 0.0, r"must be a unit quaternion.*norm 2.0000"),
    ([0.5, 0.0, 0.3], [0, 1, 0, 0], np.nan, r"gripper_width_m must be 1 finite"),
])
def test_non_finite_or_malformed_targets_are_refused(config, pos, quat, grip, message):
    with pytest.raises(ValueError, match=message):
        checked_target(pos, quat, grip, measured(config), config, 0.08)


# --- reset -----------------------------------------------------------------------------------------------
def test_the_reset_goal_drives_every_joint_to_rest_at_the_target(config):
    goal = RosMessage("control_msgs/action/FollowJointTrajectory_Goal")
    point_type = lambda: RosMessage("trajectory_msgs/msg/JointTrajectoryPoint")  # noqa: E731 (rclpy's class)
    q = checked_joint_target(np.float32(Q), config.options)
    fill_reset_goal(goal, point_type, config.options.joint_names, q, 4.25)
    assert goal.trajectory.joint_names == JOINTS
    (point,) = goal.trajectory.points
    assert point.positions == pytest.approx(Q) and point.velocities == [0.0] * 7
    assert (point.time_from_start.sec, point.time_from_start.nanosec) == (4, 250_000_000)
    assert (goal.trajectory.header.stamp.sec, goal.trajectory.header.stamp.nanosec) == (0, 0)  # start on receipt


def test_a_reset_target_of_the_wrong_length_or_outside_the_limits_is_refused(config):
    with pytest.raises(ValueError, match=r"joint_q_rad must be 7 finite joint positions.*\['fr3_joint1'"):
        checked_joint_target(Q[:6], config.options)
    with pytest.raises(ValueError, match=r"must be 7 finite"):
        checked_joint_target(Q[:6] + [np.nan], config.options)
    limited = dataclasses.replace(config.options, joint_min_rad=(-2.0,) * 7, joint_max_rad=(2.0,) * 7)
    with pytest.raises(ValueError, match=r"puts \['fr3_joint4'\] outside the joint limits"):
        checked_joint_target(Q, limited)


def test_the_reset_outcome_says_why_it_failed():
    result = RosMessage("control_msgs/action/FollowJointTrajectory_Result")
    assert reset_failure(4, result) is None
    result.error_code, result.error_string = -4, "joint 4 left its path"
    assert reset_failure(6, result) == "the goal ended ABORTED with PATH_TOLERANCE_VIOLATED: joint 4 left its path"
    assert reset_failure(5, RosMessage("control_msgs/action/FollowJointTrajectory_Result")) == \
        "the goal ended CANCELED with SUCCESSFUL"


def test_switching_controllers_is_one_strict_request():
    request = RosMessage(SWITCH_REQUEST)
    fill_switch_request(request, ["fr3_arm_controller"], ["cartesian_impedance_controller"], 5.0)
    assert request.activate_controllers == ["fr3_arm_controller"]
    assert request.deactivate_controllers == ["cartesian_impedance_controller"]
    assert request.strictness == 2  # STRICT: both switches, or neither
    assert (request.timeout.sec, request.timeout.nanosec) == (5, 0)


def test_the_test_messages_refuse_what_rclpy_refuses():
    """The check on this file's messages: without it, the tests above could not fail on a field name."""
    msg = RosMessage("geometry_msgs/msg/PoseStamped")
    with pytest.raises(AttributeError, match="has no field 'postion'"):
        msg.pose.postion = None
    with pytest.raises(AssertionError):
        msg.pose.position.x = np.float32(1.0)  # rclpy: "The 'x' field must be of type 'float'"
    with pytest.raises(AssertionError):
        msg.header.stamp.sec = np.int64(1)
