"""ROS 2 launch file: the controllers of a Franka FR3 station, for dojo's ROS 2 arm driver (arm.driver: ros2).

It includes franka_bringup's franka.launch.py (the robot, its state broadcasters, the gripper), then spawns the
Cartesian impedance controller, active (dojo publishes its targets), and a joint trajectory controller,
inactive (both claim the arm's joints: for a reset dojo switches to it and back, as the station file's
arm.options.cartesian_controller and trajectory_controller say). `controllers_yaml` must define both, under
the names the station file uses (launch/configs/robots/franka_fr3.yaml: its target_pose_topic and
reset_action name them).

    source /opt/ros/jazzy/setup.bash   # and the workspace that builds franka_ros2 and your controller
    ros2 launch dojo/launch/ros2/fr3_bringup.launch.py robot_ip:=172.16.0.2 controllers_yaml:=/path/controllers.yaml

Then run the commands that talk to a person in another terminal (with dojo's virtualenv active):
`dojo robot check --robot my_station.yaml`, `dojo teleop --robot my_station.yaml`,
`dojo record --robot my_station.yaml --out demos.zarr`. fr3_actor.launch.py brings this up and runs `dojo actor`.
Written for franka_ros2's franka.launch.py with `robot_type` (older releases named it `arm_id`).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    arguments = [
        DeclareLaunchArgument("robot_ip", description="the FR3's address (its FCI network interface)"),
        DeclareLaunchArgument("controllers_yaml", description="the ros2_control controllers file that defines "
                              "cartesian_controller and trajectory_controller"),
        DeclareLaunchArgument("cartesian_controller", default_value="cartesian_impedance_controller",
                              description="the Cartesian impedance controller dojo sends targets to"),
        DeclareLaunchArgument("trajectory_controller", default_value="fr3_arm_controller",
                              description="the joint trajectory controller dojo resets the arm with"),
        DeclareLaunchArgument("load_gripper", default_value="true", description="bring up the Franka Hand"),
        DeclareLaunchArgument("use_fake_hardware", default_value="false",
                              description="ros2_control's mock hardware instead of the robot (no state broadcaster: "
                              "dojo's ee pose topic stays silent)"),
    ]
    franka = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution(
            [FindPackageShare("franka_bringup"), "launch", "franka.launch.py"])),
        launch_arguments={
            "robot_type": "fr3",
            "robot_ip": LaunchConfiguration("robot_ip"),
            "load_gripper": LaunchConfiguration("load_gripper"),
            "use_fake_hardware": LaunchConfiguration("use_fake_hardware"),
            "controllers_yaml": LaunchConfiguration("controllers_yaml"),
        }.items(),
    )
    # The spawners wait for the controller manager, which starts with the robot's connection.
    cartesian = Node(package="controller_manager", executable="spawner", output="screen",
                     arguments=[LaunchConfiguration("cartesian_controller"), "--controller-manager-timeout", "60"])
    trajectory = Node(package="controller_manager", executable="spawner", output="screen",
                      arguments=[LaunchConfiguration("trajectory_controller"), "--inactive",
                                 "--controller-manager-timeout", "60"])
    return LaunchDescription(arguments + [franka, cartesian, trajectory])
