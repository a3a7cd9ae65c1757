"""The ROS 2 arm driver's logic, apart from rclpy so that it is tested without ROS: the station's options, ROS
message <-> array conversion, the state cache and its staleness, the checks on every target, and the reset goal.
dojo.robot.drivers.ros2_arm is the thin rclpy glue around it.

Messages are read and filled through their ROS field names alone (duck typing): rclpy's message objects and
plain objects of the same shape both work.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Mapping

import numpy as np

from dojo.robot import geometry
from dojo.robot.interfaces import ArmState, DeviceError

# A target may lie at most this many of the safety layer's steps from the measured pose. The safety layer
# limits each step from the state it read; by the time the driver checks, the arm may have moved about one
# more step (towards the previous target), so two steps is the furthest a filtered target can be.
STEP_SLACK = 2.0
QUAT_NORM_TOLERANCE = 1e-3  # a target orientation further from unit norm is a bug upstream, not rounding

# control_msgs/action/FollowJointTrajectory result codes, and action_msgs/msg/GoalStatus values.
TRAJECTORY_ERRORS = {0: "SUCCESSFUL", -1: "INVALID_GOAL", -2: "INVALID_JOINTS", -3: "OLD_HEADER_TIMESTAMP",
                     -4: "PATH_TOLERANCE_VIOLATED", -5: "GOAL_TOLERANCE_VIOLATED"}
GOAL_STATUS = {0: "UNKNOWN", 1: "ACCEPTED", 2: "EXECUTING", 3: "CANCELING", 4: "SUCCEEDED", 5: "CANCELED",
               6: "ABORTED"}
GOAL_SUCCEEDED = 4
SWITCH_STRICT = 2  # controller_manager_msgs/srv/SwitchController: all switches happen, or none

STATE_HINT = ("check that the controller and its state broadcasters run (`ros2 topic hz TOPIC`), that the topic "
              "names in robot.arm.options match them (`ros2 topic list`; same ROS_DOMAIN_ID), and that they stamp "
              "messages with this host's clock")


@dataclasses.dataclass(frozen=True)
class Ros2ArmOptions:
    """`arm.options` of a station with `arm.driver: ros2` (launch/configs/robots/franka_fr3.yaml sets them).
    Topics have no defaults: a made-up name would match nothing and show only as stale state at run time."""

    joint_names: tuple[str, ...]  # the arm's joints, in the order of home_q_rad; other joints are ignored
    base_frame: str  # frame of every pose, twist and wrench (e.g. fr3_link0)
    joint_states_topic: str  # sensor_msgs/JointState
    ee_pose_topic: str  # geometry_msgs/PoseStamped in base_frame: the measured end-effector pose
    ee_twist_topic: str  # geometry_msgs/TwistStamped in base_frame
    target_pose_topic: str  # geometry_msgs/PoseStamped in base_frame: the controller's target, published
    gripper_topic: str  # std_msgs/Float64: the gripper's target width in m, published
    gripper_width_topic: str  # std_msgs/Float64: the measured width in m
    reset_action: str  # control_msgs/action/FollowJointTrajectory of a joint trajectory controller
    wrench_topic: str = ""  # geometry_msgs/WrenchStamped in base_frame; "": the arm measures none
    reset_duration_s: float = 4.0  # how long the reset trajectory takes
    joint_min_rad: tuple[float, ...] | None = None  # joint limits: reset_to refuses targets outside them
    joint_max_rad: tuple[float, ...] | None = None
    # Two controllers that claim the same joints cannot both be active (the controller manager refuses). Name
    # both and reset_to switches to the trajectory controller and back; "" for both: the reset action's
    # controller runs beside the Cartesian one.
    cartesian_controller: str = ""
    trajectory_controller: str = ""
    controller_manager: str = "/controller_manager"
    start_timeout_s: float = 10.0  # how long the driver waits for the first message on every state topic


@dataclasses.dataclass(frozen=True)
class Ros2ArmConfig:
    """Everything the driver needs from a station: its options, and the arm and safety settings it checks."""

    options: Ros2ArmOptions
    home_q_rad: np.ndarray
    max_gripper_width_m: float
    stale_after_s: float  # an arm state older than this raises DeviceError
    max_step_m: float  # the safety layer's step limits (robot.safety)
    max_step_rad: float


def parse_options(options: Mapping, where: str = "robot.arm.options") -> Ros2ArmOptions:
    """The driver's options from a station's `arm.options`, each key and value checked (ValueError naming it)."""
    from dojo.robot.station import build_section  # the station file's own type checks, so both say the same

    fields = {f.name: f for f in dataclasses.fields(Ros2ArmOptions)}
    known = sorted(fields)
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ValueError(f"{where} has unknown key(s) {unknown} for arm.driver=ros2; known: {known}")
    missing = [name for name, f in fields.items() if f.default is dataclasses.MISSING and name not in options]
    if missing:
        raise ValueError(f"{where} is missing {missing}, needed with arm.driver=ros2; known: {known}")
    parsed = build_section(Ros2ArmOptions, options, where)

    names = parsed.joint_names
    if not names or len(set(names)) != len(names) or not all(names):
        raise ValueError(f"{where}.joint_names must be distinct non-empty names, one per arm joint, got {list(names)}")
    for name in ("base_frame", "joint_states_topic", "ee_pose_topic", "ee_twist_topic", "target_pose_topic",
                 "gripper_topic", "gripper_width_topic", "reset_action", "controller_manager"):
        if not getattr(parsed, name).strip():
            raise ValueError(f"{where}.{name} must be a non-empty ROS name, got {getattr(parsed, name)!r}")
    topics = [t for t in (parsed.joint_states_topic, parsed.ee_pose_topic, parsed.ee_twist_topic,
                          parsed.gripper_width_topic, parsed.wrench_topic) if t]
    if len(set(topics)) != len(topics):
        raise ValueError(f"{where}: each state topic carries one kind of message, got the same name twice in {topics}")
    for name in ("reset_duration_s", "start_timeout_s"):
        if not getattr(parsed, name) > 0:
            raise ValueError(f"{where}.{name} must be > 0 seconds, got {getattr(parsed, name)}")
    if (parsed.joint_min_rad is None) != (parsed.joint_max_rad is None):
        raise ValueError(f"{where}: give both joint_min_rad and joint_max_rad, or neither")
    if parsed.joint_min_rad is not None:
        lo, hi = np.asarray(parsed.joint_min_rad), np.asarray(parsed.joint_max_rad)
        if lo.shape != (len(names),) or hi.shape != (len(names),) or not np.all(lo < hi):
            raise ValueError(f"{where}: joint_min_rad and joint_max_rad must be {len(names)} numbers each (one per "
                             f"joint of joint_names) with min < max, got {lo.tolist()} and {hi.tolist()}")
    if bool(parsed.cartesian_controller) != bool(parsed.trajectory_controller):
        raise ValueError(f"{where}: name both cartesian_controller and trajectory_controller (reset_to switches "
                         f"between them), or neither; got {parsed.cartesian_controller!r} and "
                         f"{parsed.trajectory_controller!r}")
    return parsed


def config_from_station(station) -> Ros2ArmConfig:
    """The driver's config from a loaded station (dojo.robot.station.Station); ValueError on what does not fit."""
    options = parse_options(station.arm.options)
    if station.arm.home_q_rad is None:
        raise ValueError("robot.arm.home_q_rad is needed with arm.driver=ros2: the joint positions (rad) reset_to "
                         f"drives to, one per joint of {list(options.joint_names)}")
    home = checked_joint_target(station.arm.home_q_rad, options, "robot.arm.home_q_rad")
    width = station.arm.max_gripper_width_m
    if width is None or not width > 0:
        raise ValueError(f"robot.arm.max_gripper_width_m must be > 0 m with arm.driver=ros2 (the gripper's fully "
                         f"open width), got {width}")
    return Ros2ArmConfig(options=options, home_q_rad=home, max_gripper_width_m=float(width),
                         stale_after_s=station.arm.stale_after_s, max_step_m=station.safety.max_step_m,
                         max_step_rad=station.safety.max_step_rad)


# --- message <-> array -----------------------------------------------------------------------------------
def stamp_to_s(stamp) -> float:
    """A builtin_interfaces/Time (ROS time: Unix seconds on the host clock) in seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def fill_time(stamp, t_s: float) -> None:
    """Set a builtin_interfaces/Time or Duration to `t_s` seconds (>= 0), as the ints rclpy insists on."""
    sec = math.floor(t_s)
    nanosec = round((t_s - sec) * 1e9)
    if nanosec >= 1_000_000_000:
        sec, nanosec = sec + 1, nanosec - 1_000_000_000
    stamp.sec, stamp.nanosec = int(sec), int(nanosec)


def xyz(vector) -> np.ndarray:
    return np.array([vector.x, vector.y, vector.z], dtype=np.float64)


def pose_to_arrays(pose) -> tuple[np.ndarray, np.ndarray]:
    """(position m, quaternion w, x, y, z) of a geometry_msgs/Pose (whose quaternion is x, y, z, w)."""
    o = pose.orientation
    return xyz(pose.position), np.array([o.w, o.x, o.y, o.z], dtype=np.float64)


def joints_to_arrays(msg, joint_names, topic: str) -> tuple[np.ndarray, np.ndarray]:
    """(q rad, dq rad/s) of `joint_names` from a sensor_msgs/JointState, whose joints may come in any order
    and include others (a gripper's). An empty velocity (a publisher of positions only) gives zeros."""
    names = list(msg.name)
    missing = [n for n in joint_names if n not in names]
    if missing:
        raise DeviceError(f"{topic} has no joint(s) {missing} of robot.arm.options.joint_names; it has {names}")
    position, velocity = np.asarray(msg.position, np.float64), np.asarray(msg.velocity, np.float64)
    if len(position) != len(names) or len(velocity) not in (0, len(names)):
        raise DeviceError(f"{topic} sent {len(names)} joint names with {len(position)} positions and "
                          f"{len(velocity)} velocities; expected one of each per name")
    order = [names.index(n) for n in joint_names]
    return position[order], velocity[order] if len(velocity) else np.zeros(len(order))


def fill_pose_stamped(msg, frame_id: str, stamp_s: float, pos_m, quat_wxyz) -> None:
    """Set a geometry_msgs/PoseStamped: the pose (w, x, y, z quaternion in) in `frame_id` at `stamp_s`."""
    msg.header.frame_id = frame_id
    fill_time(msg.header.stamp, stamp_s)
    p, o = msg.pose.position, msg.pose.orientation
    p.x, p.y, p.z = (float(v) for v in pos_m)
    o.w, o.x, o.y, o.z = (float(v) for v in quat_wxyz)


# --- the state cache -------------------------------------------------------------------------------------
class StateCache:
    """The newest message of each state topic and when it arrived (time.monotonic(), s). rclpy's executor
    thread puts; the control loop reads, through a lock, one consistent set of messages per state (rclpy
    delivers a new object per message, so a message is never changed once put)."""

    def __init__(self, config: Ros2ArmConfig) -> None:
        self.config = config
        o = config.options
        # kind -> topic; the glue subscribes each with the message type of its kind.
        self.topics = {"joints": o.joint_states_topic, "pose": o.ee_pose_topic, "twist": o.ee_twist_topic,
                       "gripper": o.gripper_width_topic}
        if o.wrench_topic:
            self.topics["wrench"] = o.wrench_topic
        self._changed = threading.Condition()
        self._newest: dict[str, tuple[object, float]] = {}

    def put(self, kind: str, msg, arrival_s: float) -> None:
        with self._changed:
            self._newest[kind] = (msg, arrival_s)
            self._changed.notify_all()

    def wait_for_all(self, timeout_s: float) -> None:
        """Return once every state topic has delivered a message; DeviceError naming the silent ones after
        `timeout_s`."""
        with self._changed:
            if self._changed.wait_for(lambda: len(self._newest) == len(self.topics), timeout_s):
                return
            silent = [topic for kind, topic in self.topics.items() if kind not in self._newest]
        raise DeviceError(f"no message within robot.arm.options.start_timeout_s={timeout_s} s on {silent}; "
                          f"{STATE_HINT}")

    def state(self, now_unix_s: float, now_monotonic_s: float) -> ArmState:
        """The arm's state from the newest messages. DeviceError if one is missing, older than
        arm.stale_after_s, stamped in another frame than base_frame, or malformed."""
        with self._changed:
            newest = dict(self._newest)
        problems = [p for p in (self._staleness(kind, newest.get(kind), now_unix_s, now_monotonic_s)
                                for kind in self.topics) if p]
        if problems:
            raise DeviceError(f"arm state not fresh (robot.arm.stale_after_s={self.config.stale_after_s}): "
                              f"{'; '.join(problems)}; {STATE_HINT}")
        msgs = {kind: newest[kind][0] for kind in self.topics}
        for kind in ("pose", "twist", "wrench"):
            if kind in msgs:
                self._check_frame(kind, msgs[kind])
        q, dq = joints_to_arrays(msgs["joints"], self.config.options.joint_names, self.topics["joints"])
        pose = msgs["pose"]
        pos, quat = pose_to_arrays(pose.pose)
        twist = msgs["twist"].twist
        wrench = msgs["wrench"].wrench if "wrench" in msgs else None
        state = ArmState(joint_q_rad=q, joint_dq_rad_s=dq, ee_pos_m=pos, ee_quat_wxyz=quat,
                         ee_vel=np.concatenate([xyz(twist.linear), xyz(twist.angular)]),
                         gripper_width_m=float(msgs["gripper"].data),
                         wrench=None if wrench is None else np.concatenate([xyz(wrench.force), xyz(wrench.torque)]),
                         # The pose's capture time: what the policy and the safety layer act on, and what camera
                         # frames (RealSense global time, the same host clock) pair with.
                         timestamp_s=stamp_to_s(pose.header.stamp))
        self._check_finite(state)
        return state

    def _staleness(self, kind: str, entry, now_unix_s: float, now_monotonic_s: float) -> str | None:
        topic, limit_s = self.topics[kind], self.config.stale_after_s
        if entry is None:
            return f"no message on {topic} yet"
        msg, arrival_s = entry
        # Arrival catches a stream that stopped whatever its stamps say; the stamp catches data that was
        # already old when it arrived (std_msgs/Float64 has none: arrival alone).
        age_s = now_monotonic_s - arrival_s
        if hasattr(msg, "header"):
            stamp_age_s = now_unix_s - stamp_to_s(msg.header.stamp)
            if stamp_age_s < -limit_s:
                return (f"{topic} is stamped {-stamp_age_s:.3f} s in the future: its publisher's clock is not this "
                        "host's (use_sim_time, or another machine's clock not synchronised)")
            age_s = max(age_s, stamp_age_s)
        if age_s > limit_s:
            return f"the newest message on {topic} is {age_s:.3f} s old"
        return None

    def _check_frame(self, kind: str, msg) -> None:
        frame, base = msg.header.frame_id, self.config.options.base_frame
        if frame and frame != base:  # an empty frame_id: the publisher does not say; the topic is trusted
            raise DeviceError(f"{self.topics[kind]} is in frame {frame!r}, expected robot.arm.options.base_frame "
                              f"{base!r}: choose a topic in the base frame, or correct base_frame")

    def _check_finite(self, state: ArmState) -> None:
        parts = {"joints": state.joint_q_rad, "pose": np.concatenate([state.ee_pos_m, state.ee_quat_wxyz]),
                 "gripper": np.array([state.gripper_width_m])}
        for kind, values in parts.items():
            if not np.all(np.isfinite(values)):
                raise DeviceError(f"{self.topics[kind]} sent non-finite values {values.tolist()}")


# --- targets ---------------------------------------------------------------------------------------------
def checked_target(target_pos_m, target_quat_wxyz, gripper_width_m: float, measured: ArmState,
                   config: Ros2ArmConfig, max_gripper_width_m: float) -> tuple[np.ndarray, np.ndarray, float]:
    """(position, unit quaternion, gripper width) to publish, or ValueError with nothing published.

    The gripper width is clamped to [0, max_gripper_width_m]. A pose target further than STEP_SLACK of the
    safety layer's steps from the measured pose is refused, not clamped: whatever reaches the driver has
    passed the safety layer (dojo.robot.safety), so a jump means a caller bypassed it, and a shortened jump
    would still move the arm somewhere no check chose. Refusing leaves the controller on its last target.
    """
    pos = np.asarray(target_pos_m, dtype=np.float64).reshape(-1)
    quat = np.asarray(target_quat_wxyz, dtype=np.float64).reshape(-1)
    width = np.asarray(gripper_width_m, dtype=np.float64).reshape(-1)
    for name, values, size in (("target_pos_m", pos, 3), ("target_quat_wxyz", quat, 4), ("gripper_width_m", width, 1)):
        if values.shape != (size,) or not np.all(np.isfinite(values)):
            raise ValueError(f"{name} must be {size} finite number(s), got {values.tolist()}; nothing was published")
    norm = float(np.linalg.norm(quat))
    if abs(norm - 1.0) > QUAT_NORM_TOLERANCE:
        raise ValueError(f"target_quat_wxyz must be a unit quaternion, got {quat.tolist()} (norm {norm:.4f}); "
                         "nothing was published")
    quat = quat / norm
    step_m = float(np.linalg.norm(pos - measured.ee_pos_m))
    limit_m = STEP_SLACK * config.max_step_m
    if step_m > limit_m:
        raise ValueError(f"target {pos.round(4).tolist()} m is {step_m:.4f} m from the measured "
                         f"{measured.ee_pos_m.round(4).tolist()} m, more than {STEP_SLACK:g} x robot.safety.max_step_m "
                         f"= {limit_m:.4f} m: targets must pass the safety layer; nothing was published")
    step_rad = float(np.linalg.norm(geometry.quat_to_rotvec(
        geometry.quat_mul(quat, geometry.quat_conj(geometry.quat_normalize(measured.ee_quat_wxyz))))))
    limit_rad = STEP_SLACK * config.max_step_rad
    if step_rad > limit_rad:
        raise ValueError(f"target orientation is {step_rad:.4f} rad from the measured one, more than {STEP_SLACK:g} x "
                         f"robot.safety.max_step_rad = {limit_rad:.4f} rad: targets must pass the safety layer; "
                         "nothing was published")
    return pos, quat, float(np.clip(width[0], 0.0, max_gripper_width_m))


def checked_joint_target(joint_q_rad, options: Ros2ArmOptions, name: str = "joint_q_rad") -> np.ndarray:
    """Joint positions for a reset, one per joint and inside the joint limits where they are known."""
    q = np.asarray(joint_q_rad, dtype=np.float64).reshape(-1)
    n = len(options.joint_names)
    if q.shape != (n,) or not np.all(np.isfinite(q)):
        raise ValueError(f"{name} must be {n} finite joint positions in rad (one per joint of "
                         f"{list(options.joint_names)}), got {q.tolist()}")
    if options.joint_min_rad is not None:
        lo, hi = np.asarray(options.joint_min_rad), np.asarray(options.joint_max_rad)
        outside = [options.joint_names[i] for i in np.flatnonzero((q < lo) | (q > hi))]
        if outside:
            raise ValueError(f"{name} {q.round(4).tolist()} puts {outside} outside the joint limits "
                             f"robot.arm.options.joint_min_rad {lo.tolist()} .. joint_max_rad {hi.tolist()}")
    return q


# --- the reset -------------------------------------------------------------------------------------------
def fill_reset_goal(goal, point_type, joint_names, joint_q_rad, duration_s: float) -> None:
    """Set a control_msgs/action/FollowJointTrajectory goal: one point, `joint_q_rad` at rest after
    `duration_s`. The controller interpolates from where the arm is; the header stamp stays 0, which starts
    the trajectory on receipt."""
    point = point_type()
    point.positions = [float(v) for v in joint_q_rad]
    point.velocities = [0.0] * len(point.positions)
    fill_time(point.time_from_start, duration_s)
    goal.trajectory.joint_names = [str(n) for n in joint_names]
    goal.trajectory.points = [point]


def reset_failure(status: int, result) -> str | None:
    """None if a FollowJointTrajectory goal ended at its target, else why not (status: action_msgs GoalStatus;
    result: the action's result, with error_code and error_string)."""
    if status == GOAL_SUCCEEDED and result.error_code == 0:
        return None
    why = f"the goal ended {GOAL_STATUS.get(status, status)} with " \
          f"{TRAJECTORY_ERRORS.get(result.error_code, result.error_code)}"
    return f"{why}: {result.error_string}" if result.error_string else why


def fill_switch_request(request, activate: list[str], deactivate: list[str], timeout_s: float) -> None:
    """Set a controller_manager_msgs/srv/SwitchController request: both switches in one step, or neither."""
    request.activate_controllers = [str(c) for c in activate]
    request.deactivate_controllers = [str(c) for c in deactivate]
    request.strictness = SWITCH_STRICT
    fill_time(request.timeout, timeout_s)
