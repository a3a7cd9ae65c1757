"""Real drivers whose vendor libraries are absent fail with a message saying how to install them."""

import importlib.util

import pytest

from dojo.robot.drivers.realsense import RealSenseCamera
from dojo.robot.drivers.ros2_arm import Ros2Arm, Ros2ArmConfig


@pytest.mark.skipif(importlib.util.find_spec("rclpy") is not None, reason="ROS 2 is installed here")
def test_ros2_arm_without_ros_says_how_to_install():
    with pytest.raises(RuntimeError, match="rclpy.*source /opt/ros"):
        Ros2Arm(Ros2ArmConfig(joint_names=("j1",), home_q_rad=(0.0,)))


@pytest.mark.skipif(importlib.util.find_spec("pyrealsense2") is not None, reason="pyrealsense2 is installed")
def test_realsense_without_sdk_says_how_to_install():
    with pytest.raises(RuntimeError, match=r"pyrealsense2.*dojo-robot\[realsense\]"):
        RealSenseCamera("front", serial="000000")
