"""ROS 2 launch file: a Franka FR3 station acting for a dojo learner. It brings up the station's controllers
(fr3_bringup.launch.py, whose arguments it takes too) and runs `dojo actor` on the station file, streaming to
the learner at `learner` with this actor's keys; the launch ends when the actor does.

    source /opt/ros/jazzy/setup.bash && source .venv/bin/activate   # dojo's virtualenv, Python 3.12
    ros2 launch dojo/launch/ros2/fr3_actor.launch.py robot_ip:=172.16.0.2 controllers_yaml:=/path/controllers.yaml \
        robot:=/path/my_station.yaml learner:=workstation:5570 keys:=/path/keys actor_id:=actor-0

`keys` holds this actor's key pair and the learner's learner.key (see `dojo actor --help`); `actor_id` is one
of the learner's learner.actors. The station file names the same controllers as fr3_bringup.launch.py.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription, Shutdown
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, ThisLaunchFileDir


def generate_launch_description():
    arguments = [
        DeclareLaunchArgument("robot", description="the station's config file (copied from dojo's "
                              "launch/configs/robots/franka_fr3.yaml and filled in)"),
        DeclareLaunchArgument("learner", description="the learner's HOST:PORT"),
        DeclareLaunchArgument("keys", description="folder with this actor's key pair and learner.key"),
        DeclareLaunchArgument("actor_id", default_value="actor-0", description="this actor's id at the learner"),
        DeclareLaunchArgument("start_timeout_s", default_value="60.0",
                              description="how long dojo waits for the arm's state topics while the controllers "
                              "come up"),
    ]
    bringup = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([ThisLaunchFileDir(), "fr3_bringup.launch.py"])))
    # dojo starts with the controllers and waits for their topics (start_timeout_s), rather than after a
    # fixed delay that is too short on one day and wasted on the next.
    actor = ExecuteProcess(
        cmd=["dojo", "actor", "--robot", LaunchConfiguration("robot"), "--learner", LaunchConfiguration("learner"),
             "--keys", LaunchConfiguration("keys"),
             ["actor.id=", LaunchConfiguration("actor_id")],
             ["robot.arm.options.start_timeout_s=", LaunchConfiguration("start_timeout_s")]],
        output="screen",
        # Once the actor has gone nothing sends the arm targets: end the launch, and the robot's connection, too.
        on_exit=Shutdown(reason="dojo actor ended"),
    )
    return LaunchDescription(arguments + [bringup, actor])
