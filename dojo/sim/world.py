"""The twin's MuJoCo scene: a Panda-like 7-DoF arm with a parallel gripper on a table, built as MJCF.

The world frame is the robot base frame: the base sits at the origin on the table top (z = 0).
`SimWorld` owns the MjModel/MjData, the precomputed ids, and the optional scene randomisation.
"""

from __future__ import annotations

import dataclasses

import mujoco
import numpy as np

# Joint configuration the arm starts each episode in: the gripper points down, fingers along the
# base y axis, end-effector at about (0.45, 0, 0.30) m. Satisfies q6 = q2 - q4 (vertical hand).
HOME_Q_RAD = np.array([0.0, -0.2614, 0.0, -2.4291, 0.0, 2.1677, np.pi / 4])
# End-effector target box (base frame). Every corner is reachable with the gripper pointing down.
WORKSPACE_MIN_M = (0.35, -0.25, 0.015)
WORKSPACE_MAX_M = (0.65, 0.25, 0.45)
# Largest end-effector rotation from the reset orientation (safety bound, keeps the wrist off its limits).
MAX_TILT_RAD = 0.35
MAX_GRIPPER_WIDTH_M = 0.08
PHYSICS_DT_S = 0.004

# Modified Denavit-Hartenberg parameters of a Franka Panda (a_{i-1}, d_i, alpha_{i-1}), public in
# Franka's documentation; we only take the kinematics, the shapes and masses below are our own.
_DH = [(0.0, 0.333, 0.0), (0.0, 0.0, -np.pi / 2), (0.0, 0.316, np.pi / 2), (0.0825, 0.0, np.pi / 2),
       (-0.0825, 0.384, -np.pi / 2), (0.0, 0.0, np.pi / 2), (0.088, 0.0, np.pi / 2)]
_JOINT_RANGE_RAD = [(-2.8973, 2.8973), (-1.7628, 1.7628), (-2.8973, 2.8973), (-3.0718, -0.0698),
                    (-2.8973, 2.8973), (-0.0175, 3.7525), (-2.8973, 2.8973)]
_LINK_MASS_KG = [4.0, 0.7, 3.0, 3.0, 1.5, 1.5, 0.6]
_TORQUE_LIMIT_NM = [87, 87, 87, 87, 12, 12, 12]


def _fmt(values) -> str:
    return " ".join(f"{float(v):.6g}" for v in values)


def _arm_xml() -> str:
    """The nested body chain link1..link7 + hand + fingers; capsules sized like a Panda's links."""
    # Capsule per link from its joint to the next joint (in the link frame), so the arm's
    # silhouette and mass distribution follow the kinematics.
    child_pos = []
    for a, d, alpha in _DH[1:] + [(0.0, 0.107, 0.0)]:
        child_pos.append(np.array([a, -d * np.sin(alpha), d * np.cos(alpha)]))
    xml, close = [], []
    for i, (a, d, alpha) in enumerate(_DH):
        pos = np.array([a, -d * np.sin(alpha), d * np.cos(alpha)])
        quat = [np.cos(alpha / 2), np.sin(alpha / 2), 0, 0]
        lo, hi = _JOINT_RANGE_RAD[i]
        mass = _LINK_MASS_KG[i]
        xml.append(f'<body name="link{i + 1}" pos="{_fmt(pos)}" quat="{_fmt(quat)}">')
        xml.append(f'<joint name="joint{i + 1}" range="{lo} {hi}"/>')
        # joint housing along the joint axis
        xml.append(f'<geom class="link" fromto="0 0 -0.055 0 0 0.055" size="0.06" mass="{mass * 0.4:.3g}"/>')
        if np.linalg.norm(child_pos[i]) > 1e-6:
            xml.append(f'<geom class="link" fromto="0 0 0 {_fmt(child_pos[i])}" size="0.05" '
                       f'mass="{mass * 0.6:.3g}"/>')
        close.append("</body>")
    # The hand: z is the approach direction, fingers slide along its y axis.
    xml.append(f"""
<body name="hand" pos="0 0 0.107" quat="{_fmt([np.cos(-np.pi / 8), 0, 0, np.sin(-np.pi / 8)])}">
  <geom class="link" type="cylinder" size="0.035 0.01" pos="0 0 0.01" mass="0.1"/>
  <geom class="link" type="box" size="0.025 0.095 0.022" pos="0 0 0.04" mass="0.6" rgba="0.85 0.85 0.88 1"/>
  <camera name="wrist" pos="0.07 0 0.03" xyaxes="0 1 0 0.97 0 0.25" fovy="70"/>
  <!-- ee: between the fingertips, turned so that its frame equals the base frame at home (gripper down):
       the reported quaternion then starts near (1, 0, 0, 0), far from the w = 0 sign flip -->
  <site name="ee" pos="0 0 0.105" quat="0 1 0 0" size="0.006" rgba="1 0 0 0.6" group="4"/>
  <body name="left_finger" pos="0 0 0.062">
    <joint name="finger_left" class="finger" axis="0 1 0"/>
    <geom class="finger" pos="0 0.007 0.025" size="0.011 0.007 0.025"/>
  </body>
  <body name="right_finger" pos="0 0 0.062">
    <joint name="finger_right" class="finger" axis="0 -1 0"/>
    <geom class="finger" pos="0 -0.007 0.025" size="0.011 0.007 0.025"/>
  </body>
</body>""")
    return "\n".join(xml + close[::-1])


def _look_at_xyaxes(pos, target) -> str:
    """MJCF camera `xyaxes` for a camera at `pos` looking at `target` with the world z up."""
    forward = np.asarray(target, float) - np.asarray(pos, float)
    forward /= np.linalg.norm(forward)
    x = np.cross(forward, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(x, forward)
    return _fmt(np.concatenate([x, y]))


FRONT_CAMERA_POS_M = (1.0, -0.3, 0.5)
FRONT_CAMERA_TARGET_M = (0.48, 0.0, 0.1)


def build_xml(objects_xml: str = "", image_size: tuple[int, int] = (128, 128)) -> str:
    """The full scene: table, arm, cameras, lights, plus a task's object bodies (`objects_xml`)."""
    height, width = image_size
    joints = "\n".join(f'<motor name="torque{i + 1}" joint="joint{i + 1}" ctrlrange="-{t} {t}"/>'
                       for i, t in enumerate(_TORQUE_LIMIT_NM))
    return f"""
<mujoco model="dojo_twin">
  <compiler angle="radian" autolimits="true"/>
  <!-- implicitfast integrates joint damping implicitly: stable at 2 ms with light fingers -->
  <option timestep="{PHYSICS_DT_S}" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <visual>
    <global offwidth="{max(width, 640)}" offheight="{max(height, 480)}"/>
    <quality shadowsize="1024"/>
  </visual>
  <default>
    <joint axis="0 0 1" damping="2" armature="0.1"/>
    <geom contype="1" conaffinity="1" friction="1 0.005 0.0001" solref="0.01 1"/>
    <default class="link">
      <!-- arm links collide with the table and objects but not with each other -->
      <geom type="capsule" contype="1" conaffinity="0" rgba="0.92 0.92 0.95 1"/>
    </default>
    <default class="finger">
      <joint type="slide" range="0 {MAX_GRIPPER_WIDTH_M / 2}" damping="5" armature="0.05"/>
      <!-- high friction and torsional friction so a grasp holds against the object's weight -->
      <geom type="box" contype="1" conaffinity="0" condim="4" friction="1.5 0.02 0.001"
            solimp="0.95 0.99 0.001" mass="0.05" rgba="0.2 0.2 0.22 1"/>
    </default>
    <default class="object">
      <geom condim="4" friction="1.2 0.01 0.001" solimp="0.95 0.99 0.001"/>
    </default>
  </default>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1="0.55 0.45 0.35" rgb2="0.5 0.4 0.3" width="64" height="64"/>
    <material name="table" texture="grid" texrepeat="4 4"/>
  </asset>
  <worldbody>
    <light name="key" pos="0.6 -0.6 1.6" dir="-0.2 0.4 -1" diffuse="0.7 0.7 0.7" specular="0.1 0.1 0.1"/>
    <light name="fill" pos="-0.3 0.5 1.2" dir="0.5 -0.4 -1" diffuse="0.35 0.35 0.35" castshadow="false"/>
    <geom name="table" type="box" pos="0.35 0 -0.025" size="0.55 0.6 0.025" material="table"/>
    <geom name="floor" type="plane" pos="0 0 -0.75" size="3 3 0.1" rgba="0.3 0.3 0.32 1" contype="0" conaffinity="0"/>
    <camera name="front" pos="{_fmt(FRONT_CAMERA_POS_M)}"
            xyaxes="{_look_at_xyaxes(FRONT_CAMERA_POS_M, FRONT_CAMERA_TARGET_M)}" fovy="45"/>
    <body name="link0">
      <geom class="link" type="cylinder" size="0.07 0.07" pos="0 0 0.07" mass="3"/>
      {_arm_xml()}
    </body>
    {objects_xml}
  </worldbody>
  <actuator>
    {joints}
    <!-- fingers: ctrl is each finger's opening (m); the force cap bounds the grasp force -->
    <position name="finger_left" joint="finger_left" kp="1500" dampratio="1"
              ctrlrange="0 {MAX_GRIPPER_WIDTH_M / 2}" forcerange="-40 40"/>
    <position name="finger_right" joint="finger_right" kp="1500" dampratio="1"
              ctrlrange="0 {MAX_GRIPPER_WIDTH_M / 2}" forcerange="-40 40"/>
  </actuator>
</mujoco>"""


@dataclasses.dataclass(frozen=True)
class Randomization:
    """How much `SimWorld.randomize` perturbs the scene's appearance (per episode)."""

    light_pos_m: float = 0.3
    light_diffuse: float = 0.3
    color: float = 0.25
    camera_pos_m: float = 0.03
    camera_rot_rad: float = 0.05


class SimWorld:
    """MjModel + MjData with the ids a controller and tasks need, resolved once."""

    n_arm_joints = 7

    def __init__(self, objects_xml: str = "", image_size: tuple[int, int] = (128, 128),
                 randomization: Randomization | None = None, model: mujoco.MjModel | None = None) -> None:
        # `model`: a scene compiled elsewhere from build_xml's output (the calibration scene adds a board
        # with an MjSpec); objects_xml and image_size are then already in it.
        self.model = model if model is not None else mujoco.MjModel.from_xml_string(build_xml(objects_xml, image_size))
        self.data = mujoco.MjData(self.model)
        m = self.model
        self.ee_site = m.site("ee").id
        self.hand_body = m.body("hand").id
        arm_joints = [m.joint(f"joint{i + 1}") for i in range(self.n_arm_joints)]
        # The builder puts the arm first, so its dofs are 0..6 and its qpos 0..6; the assert keeps it so.
        assert [int(j.dofadr[0]) for j in arm_joints] == list(range(7)), "arm dofs must come first"
        self.finger_qpos = np.array([m.joint("finger_left").qposadr[0], m.joint("finger_right").qposadr[0]])
        self.finger_dof = np.array([m.joint("finger_left").dofadr[0], m.joint("finger_right").dofadr[0]])
        self.finger_act = np.array([m.actuator("finger_left").id, m.actuator("finger_right").id])
        self.randomization = randomization
        # Defaults that randomisation perturbs; restored before each perturbation.
        self._default = {name: getattr(m, name).copy()
                         for name in ("light_pos", "light_diffuse", "geom_rgba", "mat_rgba", "cam_pos", "cam_quat")}

    def body_pose(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        body = self.data.body(name)
        return body.xpos.copy(), body.xquat.copy()

    def reset(self) -> None:
        """Full reset of MjData (mj_resetData), arm at home with the fingers open; no forward pass yet."""
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        d.qpos[:self.n_arm_joints] = HOME_Q_RAD
        d.qpos[self.finger_qpos] = MAX_GRIPPER_WIDTH_M / 2
        d.ctrl[self.finger_act] = MAX_GRIPPER_WIDTH_M / 2

    def finish_reset(self, rng: np.random.Generator) -> None:
        """After a task placed its objects: randomise the appearance (if enabled), then a forward pass."""
        if self.randomization is not None:
            self.randomize(rng)
        mujoco.mj_forward(self.model, self.data)

    def randomize(self, rng: np.random.Generator) -> None:
        """Perturb lights, colours and camera poses around their defaults, drawing from `rng`."""
        m, r = self.model, self.randomization
        for name, value in self._default.items():
            getattr(m, name)[:] = value
        m.light_pos[:] += rng.uniform(-r.light_pos_m, r.light_pos_m, m.light_pos.shape)
        m.light_diffuse[:] = np.clip(m.light_diffuse * rng.uniform(1 - r.light_diffuse, 1 + r.light_diffuse,
                                                                    (m.nlight, 1)), 0.0, 1.0)
        rgb = m.geom_rgba[:, :3] + rng.uniform(-r.color, r.color, (m.ngeom, 3))
        m.geom_rgba[:, :3] = np.clip(rgb, 0.0, 1.0)
        m.mat_rgba[:, :3] = np.clip(m.mat_rgba[:, :3] + rng.uniform(-r.color, r.color, (m.nmat, 3)), 0.0, 1.0)
        m.cam_pos[:] += rng.uniform(-r.camera_pos_m, r.camera_pos_m, m.cam_pos.shape)
        for i in range(m.ncam):
            rotvec = rng.uniform(-r.camera_rot_rad, r.camera_rot_rad, 3)
            angle = np.linalg.norm(rotvec)
            dq = np.concatenate([[np.cos(angle / 2)], np.sin(angle / 2) * rotvec / max(angle, 1e-12)])
            q = np.empty(4)
            mujoco.mju_mulQuat(q, dq, m.cam_quat[i])
            m.cam_quat[i] = q / np.linalg.norm(q)
