"""Real drivers whose vendor libraries are absent fail with a message saying how to install them."""

import importlib.util
import sys

import pytest

from dojo.robot.drivers.realsense import RealSenseCamera
from dojo.robot.drivers.ros2_arm import make_arm
from dojo.robot.station import load_station


@pytest.mark.skipif(importlib.util.find_spec("rclpy") is not None, reason="ROS 2 is installed here")
def test_ros2_arm_without_ros_says_how_to_install():
    station, _ = load_station("franka_fr3")  # the shipped station: its options pass, then rclpy is missing
    with pytest.raises(RuntimeError, match="rclpy.*source /opt/ros"):
        make_arm(station)


def test_realsense_without_sdk_says_how_to_install(monkeypatch):
    # The dev extra installs pyrealsense2; a None entry in sys.modules makes its import fail as if absent.
    monkeypatch.setitem(sys.modules, "pyrealsense2", None)
    with pytest.raises(RuntimeError, match=r"pyrealsense2.*dojo-robot\[realsense\].*libusb"):
        RealSenseCamera("front", serial="000000")
