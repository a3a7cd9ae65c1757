"""Write frames (e.g. the twin's renders) as a RealSense recording that librealsense plays back like a camera.

The file is a ROS1 bag (format 2.0) laid out as librealsense's own recorder lays it out (file version 4, see
librealsense src/media/ros/ros_file_format.h and ros_writer.cpp), so `RealSenseCamera(playback_file=...)`
drives the real SDK, pipeline, align block and timestamps included, without a camera attached. Layout:

    /file_version                                   std_msgs/UInt32 = 4
    /device_0/info                                  diagnostic_msgs/KeyValue: Name, Serial Number
    /device_0/sensor_<s>/info                       KeyValue Name: "Stereo Module" (depth) or "RGB Camera"
    /device_0/sensor_<s>/option/<Name>/value        std_msgs/Float32 (+ .../description, std_msgs/String)
    /device_0/sensor_<s>/<Stream>_0/info            realsense_msgs/StreamInfo (fps, encoding)
    /device_0/sensor_<s>/<Stream>_0/info/camera_info sensor_msgs/CameraInfo (size, K, distortion)
    /device_0/sensor_<s>/<Stream>_0/tf/0            geometry_msgs/Transform (extrinsics to group 0)
    /device_0/sensor_<s>/<Stream>_0/image/data      sensor_msgs/Image, one per frame
    /device_0/sensor_<s>/<Stream>_0/image/metadata  KeyValue per frame: timestamp_domain, system_time

Description messages carry the bag time 1 ns (ROS's TIME_MIN, librealsense's "static" time); frames carry
their offset from the first frame, which paces real-time playback. Each image's header stamp is the frame's
capture time, which the SDK reports as the frame timestamp.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from dojo.robot.interfaces import Frame

FILE_VERSION = 4  # librealsense's ROS_FILE_WITH_RECOMMENDED_PROCESSING_BLOCKS
STATIC_NS = 1  # rs2rosinternal::TIME_MIN: librealsense reads device descriptions at this bag time
FIRST_FRAME_NS = 1_000_000  # frames start 1 ms in, after every description message

# librealsense's names for rs2_timestamp_domain values, as its writer puts them in frame metadata.
TIMESTAMP_DOMAINS = {"global_time": "Global Time", "system_time": "System Time", "hardware_clock": "Hardware Clock"}

# realsense_msgs/StreamInfo is librealsense's own message (md5 311d7e24eac31bb87271d041bf70ff7d).
_STREAM_INFO_MSG = "uint32 fps\nstring encoding\nbool is_recommended\n"
COLOR, DEPTH = "/device_0/sensor_1/Color_0", "/device_0/sensor_0/Depth_0"  # sensor order as on a D400


def write_bag(path: str | Path, frames: Iterable[Frame], *, serial: str, fps: int,
              depth_units_m: float = 0.001, timestamp_domain: str = "global_time",
              device_name: str = "dojo twin recording") -> int:
    """Write `frames` as one RealSense device's recording at `path` (replaced if it exists); return the count.

    Colour comes from `Frame.rgb` (stream rgb8) and, when the first frame has `depth_m`, depth from it
    (stream z16 in units of `depth_units_m`, registered to colour: same intrinsics, identity extrinsics;
    depths that are not finite, not positive or beyond the z16 range become 0, RealSense's "no data").
    `Frame.timestamp_s` is the capture time the SDK will report (Unix seconds for a global-time recording)
    and must increase; `Frame.intrinsics` of the first frame gives the streams' K. Needs `rosbags`.
    """
    if timestamp_domain not in TIMESTAMP_DOMAINS:
        raise ValueError(f"timestamp_domain must be one of {sorted(TIMESTAMP_DOMAINS)}, got {timestamp_domain!r}")
    if not isinstance(serial, str) or not serial:
        raise ValueError(f"serial must be a non-empty string, got {serial!r}")
    if isinstance(fps, bool) or not isinstance(fps, int) or fps <= 0:
        raise ValueError(f"fps must be a positive integer, got {fps!r}")
    if not depth_units_m > 0:
        raise ValueError(f"depth_units_m must be > 0, got {depth_units_m!r}")
    path = Path(path)
    if path.suffix != ".bag":
        raise ValueError(f"a RealSense recording's name must end in .bag, got {str(path)!r}")

    path.unlink(missing_ok=True)  # rosbags refuses to overwrite
    count = 0  # frames written
    with _Bag(path) as bag:
        first_ns = previous_ns = shape = None
        has_depth = False
        for frame in frames:
            rgb = np.ascontiguousarray(frame.rgb)
            stamp_ns = round(frame.timestamp_s * 1e9)
            if first_ns is None:  # the first frame fixes the device's description
                if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
                    raise ValueError(f"frame rgb must be HxWx3 uint8, got {rgb.dtype} {rgb.shape}")
                if frame.intrinsics is None:
                    raise ValueError("the first frame must carry intrinsics (3x3 K) for the recording's streams")
                shape, has_depth, first_ns = rgb.shape[:2], frame.depth_m is not None, stamp_ns
                bag.describe_device(serial, device_name, fps, shape, np.asarray(frame.intrinsics),
                                    depth_units_m if has_depth else None)
            elif rgb.shape[:2] != shape or rgb.dtype != np.uint8:
                raise ValueError(f"frame {count} has rgb {rgb.dtype} {rgb.shape}, the first had uint8 {shape}")
            elif stamp_ns <= previous_ns:
                raise ValueError(f"frame timestamps must increase: frame {count} has {frame.timestamp_s!r} s "
                                 f"after {previous_ns / 1e9!r} s")
            if (frame.depth_m is not None) != has_depth:
                raise ValueError(f"frame {count} {'lacks' if has_depth else 'has'} depth_m, unlike the first frame")
            if has_depth and np.shape(frame.depth_m) != shape:
                raise ValueError(f"frame {count} has depth_m {np.shape(frame.depth_m)}, expected its rgb's {shape}")
            previous_ns = stamp_ns
            time_ns = FIRST_FRAME_NS + stamp_ns - first_ns  # playback paces frames by these offsets
            domain = TIMESTAMP_DOMAINS[timestamp_domain]
            bag.image(COLOR, count, time_ns, stamp_ns, domain, "rgb8", rgb, 0.0)
            if has_depth:
                bag.image(DEPTH, count, time_ns, stamp_ns, domain, "mono16",
                          depth_to_z16(frame.depth_m, depth_units_m), depth_units_m)
            count += 1
    if count == 0:
        path.unlink(missing_ok=True)
        raise ValueError("no frames to record")
    return count


class _Bag:
    """The ROS1 bag and librealsense's messages in it (rosbags imported lazily: only recording needs it)."""

    def __init__(self, path: Path) -> None:
        from rosbags.rosbag1 import Writer
        from rosbags.typesys import Stores, get_types_from_msg, get_typestore

        self._store = get_typestore(Stores.ROS1_NOETIC)
        self._store.register(get_types_from_msg(_STREAM_INFO_MSG, "realsense_msgs/msg/StreamInfo"))
        self._msgs = self._store.types
        self._path, self._writer = path, Writer(path)
        self._connections: dict[str, object] = {}

    def __enter__(self) -> _Bag:
        self._writer.open()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self._writer.close()
        if exc_type is not None:  # no half-written recordings
            self._path.unlink(missing_ok=True)

    def put(self, topic: str, msgtype: str, time_ns: int, msg, tail: bytes = b"") -> None:
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=self._store)
        self._writer.write(self._connections[topic], time_ns, bytes(self._store.serialize_ros1(msg, msgtype)) + tail)

    def key_value(self, topic: str, time_ns: int, key: str, value: str) -> None:
        msgtype = "diagnostic_msgs/msg/KeyValue"
        self.put(topic, msgtype, time_ns, self._msgs[msgtype](key=key, value=value))

    def option(self, sensor: str, name: str, value: float, description: str) -> None:
        prefix = f"{sensor}/option/{name.replace(' ', '_')}"
        self.put(f"{prefix}/value", "std_msgs/msg/Float32", STATIC_NS, self._msgs["std_msgs/msg/Float32"](data=value))
        self.put(f"{prefix}/description", "std_msgs/msg/String", STATIC_NS,
                 self._msgs["std_msgs/msg/String"](data=description))

    def header(self, seq: int, stamp_ns: int, frame_id: str = ""):
        stamp = self._msgs["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
        return self._msgs["std_msgs/msg/Header"](seq=seq, stamp=stamp, frame_id=frame_id)

    def describe_device(self, serial: str, name: str, fps: int, shape: tuple[int, int], K: np.ndarray,
                        depth_units_m: float | None) -> None:
        """Everything librealsense reads before streaming: version, device, sensors, options, streams."""
        version = self._msgs["std_msgs/msg/UInt32"](data=FILE_VERSION)
        self.put("/file_version", "std_msgs/msg/UInt32", STATIC_NS, version)
        self.key_value("/device_0/info", STATIC_NS, "Name", name)
        self.key_value("/device_0/info", STATIC_NS, "Serial Number", serial)
        self.key_value("/device_0/sensor_0/info", STATIC_NS, "Name", "Stereo Module")
        self.key_value("/device_0/sensor_1/info", STATIC_NS, "Name", "RGB Camera")
        for sensor in ("/device_0/sensor_0", "/device_0/sensor_1"):  # as a real recording has them
            self.option(sensor, "Global Time Enabled", 1.0, "Enable/Disable global timestamp")
        self.stream(COLOR, "rgb8", fps, shape, K)
        if depth_units_m is not None:
            self.option("/device_0/sensor_0", "Depth Units", depth_units_m,
                        "Number of meters represented by a single depth unit")
            self.stream(DEPTH, "mono16", fps, shape, K)

    def stream(self, prefix: str, encoding: str, fps: int, shape: tuple[int, int], K: np.ndarray) -> None:
        msgs = self._msgs
        self.put(f"{prefix}/info", "realsense_msgs/msg/StreamInfo", STATIC_NS,
                 msgs["realsense_msgs/msg/StreamInfo"](fps=fps, encoding=encoding, is_recommended=True))
        roi = msgs["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        camera_info = msgs["sensor_msgs/msg/CameraInfo"](
            header=self.header(0, 0), height=shape[0], width=shape[1], distortion_model="Brown Conrady",
            D=np.zeros(5), K=np.asarray(K, dtype=np.float64).ravel(), R=np.eye(3).ravel(), P=np.zeros(12),
            binning_x=0, binning_y=0, roi=roi)
        self.put(f"{prefix}/info/camera_info", "sensor_msgs/msg/CameraInfo", STATIC_NS, camera_info)
        # Both streams sit at the origin of extrinsics group 0: depth is already registered to colour.
        self.put(f"{prefix}/tf/0", "geometry_msgs/msg/Transform", STATIC_NS, msgs["geometry_msgs/msg/Transform"](
            translation=msgs["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0),
            rotation=msgs["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)))

    def image(self, prefix: str, seq: int, time_ns: int, stamp_ns: int, domain: str, encoding: str,
              pixels: np.ndarray, units_m: float) -> None:
        height, width = pixels.shape[:2]
        msg = self._msgs["sensor_msgs/msg/Image"](
            header=self.header(seq, stamp_ns, frame_id="1"), height=height, width=width, encoding=encoding,
            is_bigendian=0, step=pixels.strides[0], data=pixels.reshape(-1).view(np.uint8))
        # librealsense's Image carries one float32 more than ROS's, the depth units, when the header's
        # frame_id is "1"; its own writer always adds it (0 for colour).
        self.put(f"{prefix}/image/data", "sensor_msgs/msg/Image", time_ns, msg, tail=struct.pack("<f", units_m))
        self.key_value(f"{prefix}/image/metadata", time_ns, "timestamp_domain", domain)
        self.key_value(f"{prefix}/image/metadata", time_ns, "system_time", str(stamp_ns // 10**6))


def depth_to_z16(depth_m: np.ndarray, depth_units_m: float) -> np.ndarray:
    """Metres -> RealSense z16 counts; missing or out-of-range depths become 0 ("no data")."""
    counts = np.round(np.asarray(depth_m, dtype=np.float64) / depth_units_m)
    valid = np.isfinite(counts) & (counts > 0) & (counts <= np.iinfo(np.uint16).max)
    return np.where(valid, counts, 0).astype(np.uint16)


def twin_frames(n_frames: int, *, task: str = "pick_cube", camera: str = "front",
                image_size: tuple[int, int] = (480, 640), fps: int = 30, start_unix_s: float | None = None,
                depth: bool = True, seed: int = 0) -> Iterator[Frame]:
    """Render `n_frames` of the twin's `camera` while the arm moves under random actions.

    Frames are stamped `start_unix_s + i / fps` (default: from now), the capture clock of a global-time
    recording, not the twin's simulated time; they carry the camera's depth in metres when `depth`.
    """
    import mujoco

    from dojo.sim import make_env

    env = make_env(task, obs_mode="pixels", image_size=image_size)
    try:
        if camera not in env.cameras:
            raise ValueError(f"the twin has no camera {camera!r}; expected one of {sorted(env.cameras)}")
        cam = env.cameras[camera]
        rng = np.random.default_rng(seed)
        start_unix_s = time.time() if start_unix_s is None else start_unix_s
        env.reset(seed=seed)
        depth_renderer = None
        if depth:
            depth_renderer = mujoco.Renderer(cam.world.model, *cam.shape)
            depth_renderer.enable_depth_rendering()
        try:
            for i in range(n_frames):
                if i:
                    action = rng.uniform(-1.0, 1.0, env.action_space.shape).astype(np.float32)
                    _, _, terminated, truncated, _ = env.step(action)
                    if terminated or truncated:  # the recording runs on through a fresh episode
                        env.reset()
                rendered = cam.read()
                depth_m = None
                if depth_renderer is not None:
                    depth_renderer.update_scene(cam.world.data, camera=camera)
                    depth_m = depth_renderer.render().astype(np.float32)
                yield Frame(rgb=rendered.rgb, timestamp_s=start_unix_s + i / fps,
                            intrinsics=rendered.intrinsics, depth_m=depth_m)
        finally:
            if depth_renderer is not None:
                depth_renderer.close()
    finally:
        env.close()
