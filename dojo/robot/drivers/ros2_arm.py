"""A ROS 2 arm behind `Arm`: topics to and from a Cartesian impedance controller (e.g. franka_ros2).

rclpy is not on PyPI: install ROS 2 (Humble or Jazzy), `source /opt/ros/<distro>/setup.bash`, then run
`dojo ... arm.driver=ros2`. Topic names come from the config; the controller itself runs in ROS 2 at
its own rate (1 kHz on a Franka), so this driver only publishes targets and caches the latest state.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np

from dojo.robot.drivers import require
from dojo.robot.interfaces import Arm, ArmState

ROS2_HOW = "install ROS 2 (Humble/Jazzy) and `source /opt/ros/<distro>/setup.bash` before running dojo"


@dataclasses.dataclass(frozen=True)
class Ros2ArmConfig:
    joint_names: tuple[str, ...]
    home_q_rad: tuple[float, ...]
    base_frame: str = "base"
    joint_states_topic: str = "/joint_states"
    ee_pose_topic: str = "/ee_pose"  # geometry_msgs/PoseStamped, base frame
    ee_twist_topic: str = "/ee_twist"  # geometry_msgs/TwistStamped, base frame
    wrench_topic: str = ""  # geometry_msgs/WrenchStamped at the flange; "" if the arm has none
    target_pose_topic: str = "/cartesian_impedance_controller/target_pose"
    gripper_topic: str = "/gripper/target_width"  # std_msgs/Float64, metres
    gripper_width_topic: str = "/gripper/width"  # std_msgs/Float64, metres
    reset_action: str = "/joint_trajectory_controller/follow_joint_trajectory"
    max_gripper_width_m: float = 0.08
    reset_duration_s: float = 4.0
    state_timeout_s: float = 1.0


class Ros2Arm(Arm):
    def __init__(self, config: Ros2ArmConfig) -> None:
        rclpy = require("rclpy", "ros2", ROS2_HOW)
        geometry_msgs = require("geometry_msgs.msg", "ros2", ROS2_HOW)
        sensor_msgs = require("sensor_msgs.msg", "ros2", ROS2_HOW)
        std_msgs = require("std_msgs.msg", "ros2", ROS2_HOW)
        self._control_msgs = require("control_msgs.action", "ros2", ROS2_HOW)
        self._trajectory_msgs = require("trajectory_msgs.msg", "ros2", ROS2_HOW)
        self._action = require("rclpy.action", "ros2", ROS2_HOW)
        self.config = config
        self.n_joints = len(config.joint_names)
        self.home_q_rad = np.asarray(config.home_q_rad, dtype=np.float64)
        self.max_gripper_width_m = config.max_gripper_width_m
        self._geometry_msgs, self._std_msgs = geometry_msgs, std_msgs
        self._lock = threading.Lock()
        self._latest: dict[str, object] = {}

        if not rclpy.ok():
            rclpy.init()
        self._node = rclpy.create_node("dojo_arm")
        sub = self._node.create_subscription
        sub(sensor_msgs.JointState, config.joint_states_topic, self._store("joints"), 10)
        sub(geometry_msgs.PoseStamped, config.ee_pose_topic, self._store("pose"), 10)
        sub(geometry_msgs.TwistStamped, config.ee_twist_topic, self._store("twist"), 10)
        sub(std_msgs.Float64, config.gripper_width_topic, self._store("gripper"), 10)
        if config.wrench_topic:
            sub(geometry_msgs.WrenchStamped, config.wrench_topic, self._store("wrench"), 10)
        self._target_pub = self._node.create_publisher(geometry_msgs.PoseStamped, config.target_pose_topic, 10)
        self._gripper_pub = self._node.create_publisher(std_msgs.Float64, config.gripper_topic, 10)
        self._reset_client = self._action.ActionClient(
            self._node, self._control_msgs.FollowJointTrajectory, config.reset_action)
        self._executor = rclpy.executors.SingleThreadedExecutor()
        self._executor.add_node(self._node)
        threading.Thread(target=self._executor.spin, daemon=True, name="dojo-ros2-spin").start()

    def _store(self, key: str):
        def callback(msg) -> None:
            with self._lock:
                self._latest[key] = (time.monotonic(), msg)
        return callback

    def _get(self, key: str):
        with self._lock:
            stamp, msg = self._latest.get(key, (None, None))
        if stamp is None or time.monotonic() - stamp > self.config.state_timeout_s:
            raise TimeoutError(f"no fresh {key!r} message from ROS 2 within {self.config.state_timeout_s} s; "
                               "is the arm's controller running and are the topic names right?")
        return msg

    def state(self) -> ArmState:
        joints, pose, twist = self._get("joints"), self._get("pose"), self._get("twist")
        order = [list(joints.name).index(n) for n in self.config.joint_names]
        p, o = pose.pose.position, pose.pose.orientation
        lin, ang = twist.twist.linear, twist.twist.angular
        wrench = None
        if self.config.wrench_topic:
            f, t = self._get("wrench").wrench.force, self._get("wrench").wrench.torque
            wrench = np.array([f.x, f.y, f.z, t.x, t.y, t.z])
        return ArmState(
            joint_q_rad=np.asarray(joints.position)[order], joint_dq_rad_s=np.asarray(joints.velocity)[order],
            ee_pos_m=np.array([p.x, p.y, p.z]), ee_quat_wxyz=np.array([o.w, o.x, o.y, o.z]),
            ee_vel=np.array([lin.x, lin.y, lin.z, ang.x, ang.y, ang.z]),
            gripper_width_m=float(self._get("gripper").data), wrench=wrench, timestamp_s=time.monotonic())

    def command(self, target_pos_m, target_quat_wxyz, gripper_width_m) -> None:
        msg = self._geometry_msgs.PoseStamped()
        msg.header.frame_id = self.config.base_frame
        msg.header.stamp = self._node.get_clock().now().to_msg()
        (msg.pose.position.x, msg.pose.position.y, msg.pose.position.z) = map(float, target_pos_m)
        (msg.pose.orientation.w, msg.pose.orientation.x, msg.pose.orientation.y,
         msg.pose.orientation.z) = map(float, target_quat_wxyz)
        self._target_pub.publish(msg)
        self._gripper_pub.publish(self._std_msgs.Float64(data=float(gripper_width_m)))

    def reset_to(self, joint_q_rad) -> None:
        if not self._reset_client.wait_for_server(timeout_sec=5.0):
            raise TimeoutError(f"joint trajectory action {self.config.reset_action!r} is not available")
        point = self._trajectory_msgs.JointTrajectoryPoint()
        point.positions = [float(q) for q in joint_q_rad]
        point.time_from_start.sec = int(self.config.reset_duration_s)
        goal = self._control_msgs.FollowJointTrajectory.Goal()
        goal.trajectory.joint_names = list(self.config.joint_names)
        goal.trajectory.points = [point]
        done = threading.Event()
        self._reset_client.send_goal_async(goal).add_done_callback(
            lambda f: f.result().get_result_async().add_done_callback(lambda _: done.set()))
        if not done.wait(self.config.reset_duration_s + 10.0):
            raise TimeoutError(f"arm did not reach the reset pose within {self.config.reset_duration_s + 10.0} s")

    def stop(self) -> None:
        # Holding the measured pose as the target stops the impedance controller from pulling anywhere.
        state = self.state()
        self.command(state.ee_pos_m, state.ee_quat_wxyz, state.gripper_width_m)

    def close(self) -> None:
        self._executor.shutdown()
        self._node.destroy_node()
