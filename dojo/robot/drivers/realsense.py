"""Intel RealSense colour (+ depth aligned to colour) cameras through pyrealsense2, behind `Camera`.

One `RealSenseCamera` per camera, chosen by serial; several run side by side. A capture thread keeps the
newest frame, so `read()` never waits on USB at the control rate; a camera that stops delivering makes
`read()` raise `DeviceError` after `stale_after_s`. Timestamps are the SDK's global time (the camera's
hardware clock mapped onto the host's Unix clock), so frames pair with arm states by time. The same class
plays a recorded .bag through the same SDK pipeline (`playback_file`), e.g. one written from the twin's
frames by dojo.sim.realsense_bag.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np

from dojo.robot.drivers import require
from dojo.robot.interfaces import Camera, DeviceError, Frame

log = logging.getLogger("dojo.robot")

# pyrealsense2 imports libusb at load time: a missing system library fails the import as a missing wheel does.
INSTALL_HINT = "pip install 'dojo-robot[realsense]' (x86-64 Linux or Windows; Linux also needs libusb-1.0-0)"
POLL_S = 0.1  # the capture thread's longest wait on the SDK: how soon it sees close()
STOP_TIMEOUT_S = 2.0  # close() gives up waiting on pipeline.stop() after this (librealsense issue #9184)
CHECK_HINT = "check its USB cable and port (USB 3, bandwidth shared with other cameras on the hub) and its power"


class RealSenseCamera(Camera):
    """A RealSense camera streaming colour (rgb8) and optionally depth aligned to colour, at `fps`.

    `exposure_us` / `white_balance_k` set the colour sensor by hand; None leaves it on auto. Recordings
    (`playback_file`, a .bag whose device has serial `serial`) keep the settings they were recorded with.
    `stale_after_s`: `read()` raises `DeviceError` once the newest frame arrived longer ago than this.
    `start_timeout_s`: how long the constructor waits for the first frame.
    """

    def __init__(self, name: str, serial: str, *, width: int = 640, height: int = 480, fps: int = 30,
                 depth: bool = False, exposure_us: float | None = None, white_balance_k: float | None = None,
                 stale_after_s: float = 0.5, start_timeout_s: float = 5.0,
                 playback_file: str | Path | None = None) -> None:
        check_settings(name=name, serial=serial, width=width, height=height, fps=fps, exposure_us=exposure_us,
                       white_balance_k=white_balance_k, stale_after_s=stale_after_s,
                       start_timeout_s=start_timeout_s, playback_file=playback_file)
        rs = require("pyrealsense2", "realsense", how=INSTALL_HINT)
        self.name, self.serial, self.shape = name, serial, (int(height), int(width))
        self.depth, self.exposure_us, self.white_balance_k = bool(depth), exposure_us, white_balance_k
        self.stale_after_s = float(stale_after_s)
        self.playback_file = None if playback_file is None else Path(playback_file)
        self.timestamp_domain: str | None = None  # the newest frame's, e.g. "global_time"
        self._rs = rs
        self._described = f"RealSense camera {name!r} (serial {serial!r})"

        config = rs.config()
        if self.playback_file is not None:
            # No repeat: a recording that ends is a camera that stopped, not a jump back in time.
            config.enable_device_from_file(str(self.playback_file), repeat_playback=False)
        config.enable_device(serial)  # serials come from the station's config, never from code
        config.enable_stream(rs.stream.color, width, height, rs.format.rgb8, fps)
        if self.depth:  # any depth resolution: depth is aligned (re-projected) onto the colour image
            config.enable_stream(rs.stream.depth, rs.format.z16, fps)
        self._pipeline = rs.pipeline()
        try:
            device = config.resolve(rs.pipeline_wrapper(self._pipeline)).get_device()
            if device.is_playback():
                if exposure_us is not None or white_balance_k is not None:
                    log.info("%s plays %s: exposure / white balance stay as recorded", self._described,
                             self.playback_file)
            else:
                self._configure(device)
            profile = self._pipeline.start(config)
        except RuntimeError as err:
            raise RuntimeError(f"{self._described} did not start: {err}{self._connected_hint()}") from err
        # The SDK's playback device (pause / resume / seek) when reading a recording, else None.
        self.playback = profile.get_device().as_playback() if self.playback_file is not None else None
        color = profile.get_stream(rs.stream.color).as_video_stream_profile().get_intrinsics()
        self.intrinsics = np.array([[color.fx, 0.0, color.ppx], [0.0, color.fy, color.ppy], [0.0, 0.0, 1.0]])
        self._align = rs.align(rs.stream.color) if self.depth else None

        self._lock = threading.Lock()
        self._newest: Frame | None = None
        self._newest_at_s = 0.0  # time.monotonic() when the newest frame arrived: staleness ignores clock jumps
        self._failure: str | None = None
        self._warned_domain = False
        self._first = threading.Event()
        self._stopping = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._capture, name=f"realsense-{name}", daemon=True)
        self._thread.start()
        if not self._first.wait(start_timeout_s) or self._failure is not None:
            failure = self._failure or (f"{self._described} gave no frame within start_timeout_s="
                                        f"{start_timeout_s} s; {CHECK_HINT}")
            self.close()
            raise DeviceError(failure)

    def read(self) -> Frame:
        """The newest frame (arrays read-only; the same object until a newer frame arrives)."""
        with self._lock:
            frame, at_s, failure = self._newest, self._newest_at_s, self._failure
        if failure is not None:
            raise DeviceError(failure)
        if self._closed:
            raise DeviceError(f"{self._described} was read after close()")
        age_s = time.monotonic() - at_s
        if age_s > self.stale_after_s:
            ended = (f"; or the recording {str(self.playback_file)!r} ended or is paused"
                     if self.playback_file is not None else "")
            raise DeviceError(f"{self._described} delivered no frame for {age_s:.2f} s "
                              f"(stale_after_s={self.stale_after_s}); {CHECK_HINT}{ended}")
        return frame

    def close(self) -> None:
        """Stop capturing and release the camera; returns within about POLL_S + STOP_TIMEOUT_S."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        self._thread.join(POLL_S + STOP_TIMEOUT_S)
        stopper = threading.Thread(target=self._stop_pipeline, name=f"realsense-{self.name}-stop", daemon=True)
        stopper.start()
        stopper.join(STOP_TIMEOUT_S)
        if stopper.is_alive():
            log.warning("%s: pipeline.stop() did not return within %s s; left to finish in the background",
                        self._described, STOP_TIMEOUT_S)

    # -- the capture thread -------------------------------------------------------------------------------

    def _capture(self) -> None:
        try:
            while not self._stopping.is_set():
                # The pipeline queues one frameset and drops older ones, so this is always the newest.
                ok, frames = self._pipeline.try_wait_for_frames(int(POLL_S * 1000))
                if not ok:
                    continue
                frame = self._to_frame(frames)
                if frame is None:
                    continue
                with self._lock:
                    self._newest, self._newest_at_s = frame, time.monotonic()
                self._first.set()
        except DeviceError as err:
            self._fail(str(err))
        except Exception as err:  # whatever the SDK raised, the camera is gone: read() says so
            self._fail(f"{self._described} stopped delivering frames: {err}; {CHECK_HINT}")

    def _fail(self, message: str) -> None:
        with self._lock:
            self._failure = message
        self._first.set()  # wakes a constructor still waiting for the first frame

    def _to_frame(self, frames) -> Frame | None:
        arrival_s = time.time()
        if self._align is not None:
            frames = self._align.process(frames)
        color = frames.get_color_frame()
        depth = frames.get_depth_frame() if self.depth else None
        if not color or (self.depth and not depth):
            return None  # an incomplete set; the next one follows within a frame period
        self._check_domain(color.get_frame_timestamp_domain())
        # Copies: the SDK recycles a frame's buffer once the frame object is released.
        rgb = np.asanyarray(color.get_data()).copy()
        rgb.flags.writeable = False
        depth_m = None
        if depth:
            depth_m = np.asanyarray(depth.get_data()).astype(np.float32) * np.float32(depth.get_units())
            depth_m.flags.writeable = False
        # get_timestamp() is in ms; in the global time domain, on the host's Unix clock.
        return Frame(rgb=rgb, timestamp_s=color.get_timestamp() / 1e3, intrinsics=self.intrinsics,
                     depth_m=depth_m, arrival_s=arrival_s)

    def _check_domain(self, domain) -> None:
        self.timestamp_domain = domain.name
        if domain == self._rs.timestamp_domain.global_time:
            return
        if domain == self._rs.timestamp_domain.system_time:
            if not self._warned_domain:  # usable, but stamped on arrival: USB latency is in the timestamp
                log.warning("%s stamps frames with host arrival time (system_time), not global_time: the "
                            "SDK found no hardware timestamp in the frame metadata (see librealsense's notes on "
                            "Linux metadata support); timestamps include the transfer latency", self._described)
                self._warned_domain = True
            return
        raise DeviceError(f"{self._described} stamps frames in the {domain.name} domain, which cannot be paired "
                          f"with arm states by time; expected global_time (dojo enables global_time_enabled: "
                          f"update the camera's firmware and librealsense)")

    # -- setup --------------------------------------------------------------------------------------------

    def _configure(self, device) -> None:
        """Global timestamps on every sensor; colour exposure and white balance, manual or auto."""
        rs = self._rs
        for sensor in device.query_sensors():
            if sensor.supports(rs.option.global_time_enabled):
                sensor.set_option(rs.option.global_time_enabled, 1)
        sensor = device.first_color_sensor()
        # The D400's "RGB Camera" is a UVC camera, whose absolute exposure counts 100 us; the stereo
        # module (colour on a D405) counts microseconds.
        exposure_unit_us = 100.0 if sensor.get_info(rs.camera_info.name) == "RGB Camera" else 1.0
        self._set_manual_or_auto(sensor, rs.option.enable_auto_exposure, rs.option.exposure,
                                 "exposure_us", self.exposure_us, exposure_unit_us)
        self._set_manual_or_auto(sensor, rs.option.enable_auto_white_balance, rs.option.white_balance,
                                 "white_balance_k", self.white_balance_k, 1.0)

    def _set_manual_or_auto(self, sensor, auto_option, option, key: str, value: float | None, unit: float) -> None:
        if value is None:
            if sensor.supports(auto_option):
                sensor.set_option(auto_option, 1)
            return
        if not sensor.supports(option):
            raise ValueError(f"{key}={value!r}: {self._described} has no such colour control; use null (auto)")
        if sensor.supports(auto_option):
            sensor.set_option(auto_option, 0)  # a manual value only holds with auto off
        limits = sensor.get_option_range(option)
        raw = value / unit
        if limits.step > 0:
            raw = limits.min + round((raw - limits.min) / limits.step) * limits.step
        if not limits.min <= raw <= limits.max:
            raise ValueError(f"{key}={value!r} is outside {self._described}'s range "
                             f"{limits.min * unit:g}..{limits.max * unit:g}")
        sensor.set_option(option, raw)

    def _connected_hint(self) -> str:
        if self.playback_file is not None:
            return ""
        try:
            serials = [d.get_info(self._rs.camera_info.serial_number) for d in self._rs.context().query_devices()]
        except RuntimeError:
            return ""
        return f"; connected RealSense serials: {serials or 'none'}"

    def _stop_pipeline(self) -> None:
        try:
            self._pipeline.stop()
        except RuntimeError as err:  # never started, or already gone with the device
            log.debug("%s: pipeline.stop(): %s", self._described, err)


def check_settings(*, name, serial, width, height, fps, exposure_us, white_balance_k, stale_after_s,
                   start_timeout_s, playback_file) -> None:
    """Refuse bad config values with one line naming the value and what was expected (no SDK needed)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"camera name must be a non-empty string, got {name!r}")
    if not isinstance(serial, str) or not serial:
        # YAML reads an unquoted serial such as 012345678901 as a number and drops its leading zero.
        raise ValueError(f"camera {name!r}: serial must be a non-empty string (quote it in YAML), got {serial!r}")
    for key, value in (("width", width), ("height", height), ("fps", fps)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"camera {name!r}: {key} must be a positive integer, got {value!r}")
    for key, value in (("exposure_us", exposure_us), ("white_balance_k", white_balance_k)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise ValueError(f"camera {name!r}: {key} must be a positive number or null (auto), got {value!r}")
    for key, value in (("stale_after_s", stale_after_s), ("start_timeout_s", start_timeout_s)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"camera {name!r}: {key} must be a positive number of seconds, got {value!r}")
    if stale_after_s <= 2.0 / fps:  # a single late frame must not stop the episode
        raise ValueError(f"camera {name!r}: stale_after_s must exceed two frame periods (2 / fps = "
                         f"{2.0 / fps:g} s), got {stale_after_s!r}")
    if playback_file is not None and not Path(playback_file).is_file():
        raise ValueError(f"camera {name!r}: playback_file {str(playback_file)!r} is not a file")


CAMERA_OPTIONS = ("serial", "exposure_us", "white_balance_k", "start_timeout_s", "playback_file")


def make_camera(name: str, section, arm=None) -> RealSenseCamera:
    """The device factory's entry: a station's `cameras.NAME` section with `driver: realsense`; `options`
    holds the serial, exposure_us, white_balance_k (None: auto), start_timeout_s and, to play a recording
    instead of a live camera, playback_file."""
    options = dict(section.options)
    unknown = sorted(set(options) - set(CAMERA_OPTIONS))
    if unknown:
        raise ValueError(f"robot.cameras.{name}.options has unknown key(s) {unknown}; known: {list(CAMERA_OPTIONS)}")
    if "serial" not in options:
        raise ValueError(f"robot.cameras.{name}.options.serial is missing: the camera's serial number, in quotes "
                         "(rs-enumerate-devices -s lists them)")
    return RealSenseCamera(name, options.pop("serial"), width=section.width, height=section.height, fps=section.fps,
                           depth=section.depth, stale_after_s=section.stale_after_s, **options)
