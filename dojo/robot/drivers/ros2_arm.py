"""A ROS 2 arm behind `Arm`: the target topic of a Cartesian impedance controller (e.g. on franka_ros2), its
state topics, and a joint trajectory action for resets. Only the rclpy glue lives here; what the driver
decides (options, conversions, staleness, target checks, the reset goal) is in ros2_logic, tested without ROS.

rclpy is not on PyPI: install ROS 2 Jazzy, `source /opt/ros/jazzy/setup.bash`, and run dojo from a Python 3.12
virtualenv (a distribution's rclpy is built for its own Python: Jazzy's 3.12, Humble's 3.10, older than dojo
needs). The controller runs in ROS 2 at its own rate (1 kHz on a Franka); this driver caches the newest state
and publishes targets at the control rate.
"""

from __future__ import annotations

import threading
import time

from dojo.robot import geometry
from dojo.robot.drivers import require
from dojo.robot.drivers.ros2_logic import (Ros2ArmConfig, StateCache, checked_joint_target, checked_target,
                                           config_from_station, fill_pose_stamped, fill_reset_goal,
                                           fill_switch_request, reset_failure)
from dojo.robot.interfaces import Arm, ArmState, DeviceError

ROS2_HOW = ("install ROS 2 Jazzy, `source /opt/ros/jazzy/setup.bash` and run dojo from a Python 3.12 virtualenv "
            "(rclpy is built for its distribution's Python)")
SERVICE_TIMEOUT_S = 5.0  # the reset action server and the controller manager must answer within this
RESET_MARGIN_S = 10.0  # a reset may end this long after reset_duration_s (the controller's goal tolerance)
CLOSE_TIMEOUT_S = 2.0


def make_arm(station) -> Ros2Arm:
    """The station's arm (dojo.robot.factory calls this). A bad station file says so before ROS is needed."""
    return Ros2Arm(config_from_station(station))


class Ros2Arm(Arm):
    def __init__(self, config: Ros2ArmConfig) -> None:
        rclpy = require("rclpy", "ros2", ROS2_HOW)
        action = require("rclpy.action", "ros2", ROS2_HOW)
        context = require("rclpy.context", "ros2", ROS2_HOW)
        executors = require("rclpy.executors", "ros2", ROS2_HOW)
        qos = require("rclpy.qos", "ros2", ROS2_HOW)
        signals = require("rclpy.signals", "ros2", ROS2_HOW)
        geometry_msgs = require("geometry_msgs.msg", "ros2", ROS2_HOW)
        sensor_msgs = require("sensor_msgs.msg", "ros2", ROS2_HOW)
        std_msgs = require("std_msgs.msg", "ros2", ROS2_HOW)
        control_msgs = require("control_msgs.action", "ros2", ROS2_HOW)
        trajectory_msgs = require("trajectory_msgs.msg", "ros2", ROS2_HOW)
        options = config.options
        self.config = config
        self.n_joints = len(options.joint_names)
        self.home_q_rad = config.home_q_rad.copy()
        self.max_gripper_width_m = config.max_gripper_width_m  # the factory may set it from the station
        self.cache = StateCache(config)
        self._PoseStamped, self._Float64 = geometry_msgs.PoseStamped, std_msgs.Float64
        self._FollowJointTrajectory, self._JointTrajectoryPoint = control_msgs.FollowJointTrajectory, \
            trajectory_msgs.JointTrajectoryPoint
        self._closed = False

        # An own context: close() ends it without touching other rclpy users in the process. No signal
        # handlers: dojo's Ctrl-C stops the actor cleanly (arm held, journal drained), and rclpy's would shut
        # the context under it. No arguments: topics come from the station file, and dojo's argv is not ROS's.
        self._context = context.Context()
        rclpy.init(args=[], context=self._context, signal_handler_options=signals.SignalHandlerOptions.NO)
        self._node = rclpy.create_node("dojo_arm", context=self._context)
        types = {"joints": sensor_msgs.JointState, "pose": geometry_msgs.PoseStamped,
                 "twist": geometry_msgs.TwistStamped, "gripper": std_msgs.Float64,
                 "wrench": geometry_msgs.WrenchStamped}
        for kind, topic in self.cache.topics.items():
            # Best effort takes messages from reliable and best-effort publishers alike (franka's state
            # broadcaster publishes best effort: a reliable subscription would receive nothing).
            self._node.create_subscription(types[kind], topic, self._receiver(kind), qos.qos_profile_sensor_data)
        # Depth 1: only the newest target matters; reliable, so any controller's subscription matches.
        self._target_pub = self._node.create_publisher(geometry_msgs.PoseStamped, options.target_pose_topic, 1)
        self._gripper_pub = self._node.create_publisher(std_msgs.Float64, options.gripper_topic, 1)
        self._reset_client = action.ActionClient(self._node, control_msgs.FollowJointTrajectory, options.reset_action)
        self._switch_client = None
        if options.cartesian_controller:
            srv = require("controller_manager_msgs.srv", "ros2", ROS2_HOW)
            self._SwitchController = srv.SwitchController
            self._switch_client = self._node.create_client(
                srv.SwitchController, f"{options.controller_manager.rstrip('/')}/switch_controller")
        self._executor = executors.SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self._node)
        self._spin = threading.Thread(target=self._executor.spin, daemon=True, name="dojo-ros2-spin")
        self._spin.start()
        try:
            self.cache.wait_for_all(options.start_timeout_s)
            self.state()  # joint names, frames and freshness checked once, before anyone moves the arm
        except BaseException:
            self.close()
            raise

    def _receiver(self, kind: str):
        def receive(msg) -> None:
            self.cache.put(kind, msg, time.monotonic())
        return receive

    def state(self) -> ArmState:
        return self.cache.state(time.time(), time.monotonic())

    def command(self, target_pos_m, target_quat_wxyz, gripper_width_m) -> None:
        pos, quat, width = checked_target(target_pos_m, target_quat_wxyz, gripper_width_m, self.state(), self.config,
                                          self.max_gripper_width_m)
        self._publish_pose(pos, quat)
        self._gripper_pub.publish(self._Float64(data=width))

    def stop(self) -> None:
        # Hold the measured pose: the impedance controller then pulls nowhere. The gripper keeps its last
        # target: stopping the arm must not open a closed gripper (nor let go of what it holds).
        measured = self.state()
        self._publish_pose(measured.ee_pos_m, geometry.quat_normalize(measured.ee_quat_wxyz))

    def reset_to(self, joint_q_rad) -> None:
        options = self.config.options
        q = checked_joint_target(joint_q_rad, options, "reset_to's joint_q_rad")
        goal = self._FollowJointTrajectory.Goal()
        fill_reset_goal(goal, self._JointTrajectoryPoint, options.joint_names, q, options.reset_duration_s)
        if self._switch_client is None:
            self._follow(goal, q)
            return
        self._switch([options.trajectory_controller], [options.cartesian_controller])
        try:
            self._follow(goal, q)
        finally:  # back to the Cartesian controller whatever happened, so the arm is never left without it
            self._switch([options.cartesian_controller], [options.trajectory_controller])

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(timeout_sec=CLOSE_TIMEOUT_S)
        self._spin.join(CLOSE_TIMEOUT_S)
        self._node.destroy_node()
        self._context.try_shutdown()

    # -- internals --------------------------------------------------------------------------------------

    def _publish_pose(self, pos_m, quat_wxyz) -> None:
        msg = self._PoseStamped()
        now_s = self._node.get_clock().now().nanoseconds * 1e-9
        fill_pose_stamped(msg, self.config.options.base_frame, now_s, pos_m, quat_wxyz)
        self._target_pub.publish(msg)

    def _follow(self, goal, q) -> None:
        action = self.config.options.reset_action
        if not self._reset_client.wait_for_server(timeout_sec=SERVICE_TIMEOUT_S):
            raise DeviceError(f"the reset action {action} did not answer within {SERVICE_TIMEOUT_S} s: is the joint "
                              "trajectory controller loaded (`ros2 action list`), and is robot.arm.options."
                              "reset_action its follow_joint_trajectory action?")
        handle = self._wait(self._reset_client.send_goal_async(goal), SERVICE_TIMEOUT_S, f"{action} to accept a goal")
        if not handle.accepted:
            raise DeviceError(f"{action} refused the reset goal: is its controller active (`ros2 control "
                              "list_controllers`)? One that shares the arm's joints with the Cartesian controller "
                              "needs robot.arm.options.cartesian_controller and trajectory_controller")
        limit_s = self.config.options.reset_duration_s + RESET_MARGIN_S
        try:
            response = self._wait(handle.get_result_async(), limit_s, f"the arm to reach {q.round(3).tolist()} rad")
        except DeviceError:
            handle.cancel_goal_async()
            raise
        failure = reset_failure(response.status, response.result)
        if failure:
            raise DeviceError(f"reset to {q.round(3).tolist()} rad through {action} failed: {failure}")

    def _switch(self, activate: list[str], deactivate: list[str]) -> None:
        manager = self.config.options.controller_manager
        if not self._switch_client.wait_for_service(timeout_sec=SERVICE_TIMEOUT_S):
            raise DeviceError(f"the controller manager {manager} did not answer within {SERVICE_TIMEOUT_S} s: is "
                              "ros2_control running, and is robot.arm.options.controller_manager its name?")
        request = self._SwitchController.Request()
        fill_switch_request(request, activate, deactivate, SERVICE_TIMEOUT_S)
        response = self._wait(self._switch_client.call_async(request), 2 * SERVICE_TIMEOUT_S,
                               f"{manager} to switch controllers")
        if not response.ok:
            raise DeviceError(f"{manager} did not activate {activate} and deactivate {deactivate}: are both loaded "
                              "(`ros2 control list_controllers`) and named as in robot.arm.options?")

    @staticmethod
    def _wait(future, timeout_s: float, what: str):
        """The future's result once rclpy's executor thread completes it; DeviceError after `timeout_s`."""
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        if not done.wait(timeout_s):
            raise DeviceError(f"waited {timeout_s:g} s for {what}, in vain")
        return future.result()
