"""The RealSense driver through the real SDK: recordings written from frames play back through
pyrealsense2's pipeline, align block and playback device, standing in for cameras on USB."""

import importlib
import logging
import threading
import time

import numpy as np
import pytest

from dojo.robot.drivers.realsense import RealSenseCamera
from dojo.robot.interfaces import DeviceError, Frame
from dojo.sim.realsense_bag import depth_to_z16, twin_frames, write_bag


def importable(module: str) -> bool:
    try:  # find_spec is not enough: pyrealsense2 fails at import when libusb-1.0 is missing
        importlib.import_module(module)
        return True
    except ImportError:
        return False


needs_sdk = pytest.mark.skipif(not (importable("pyrealsense2") and importable("rosbags")),
                               reason="needs pyrealsense2 (x86-64, with libusb-1.0-0) and rosbags: the dev extra")

HEIGHT, WIDTH, FPS = 48, 64, 30
K = np.array([[50.0, 0.0, 32.0], [0.0, 50.0, 24.0], [0.0, 0.0, 1.0]])
START_S = 1.8e9  # a Unix time, as global timestamps are


def synthetic(n_frames: int, tag: int = 0) -> list[Frame]:
    """Frames whose red channel is the frame index and green the camera's tag; depth grows 1 cm a frame."""
    frames = []
    for i in range(n_frames):
        rgb = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        rgb[..., 0], rgb[..., 1] = i, tag
        depth_m = np.full((HEIGHT, WIDTH), 0.5 + 0.01 * i, np.float32)
        frames.append(Frame(rgb=rgb, timestamp_s=START_S + i / FPS, intrinsics=K, depth_m=depth_m))
    return frames


def record(tmp_path, frames, serial="111", **kwargs):
    path = tmp_path / f"{serial}-{kwargs.get('timestamp_domain', 'global_time')}.bag"
    assert write_bag(path, frames, serial=serial, fps=FPS, **kwargs) == len(frames)
    return path


def read_until_stale(*cameras) -> dict[str, list[Frame]]:
    """Every distinct frame each camera's read() returned, polling them all until each goes stale (its
    recording ended)."""
    seen: dict[str, list[Frame]] = {camera.name: [] for camera in cameras}
    live = list(cameras)
    while live:
        for camera in list(live):
            try:
                frame = camera.read()
            except DeviceError:
                live.remove(camera)
                continue
            frames = seen[camera.name]
            if not frames or frame is not frames[-1]:
                frames.append(frame)
        time.sleep(0.002)
    return seen


@needs_sdk
def test_twin_recording_plays_back_with_aligned_depth_and_global_timestamps(tmp_path):
    recorded = list(twin_frames(6, image_size=(96, 128), start_unix_s=START_S))
    path = record(tmp_path, recorded, serial="twin-front")
    camera = RealSenseCamera("front", "twin-front", width=128, height=96, depth=True, playback_file=path)
    try:
        assert camera.shape == (96, 128) and camera.timestamp_domain == "global_time"
        np.testing.assert_allclose(camera.intrinsics, recorded[0].intrinsics, rtol=1e-6)
        seen = read_until_stale(camera)["front"]
    finally:
        camera.close()
    by_time = {round(f.timestamp_s, 3): f for f in recorded}
    stamps = [f.timestamp_s for f in seen]
    assert stamps == sorted(set(stamps)), "timestamps must increase"
    assert seen[-1].timestamp_s == pytest.approx(recorded[-1].timestamp_s, abs=1e-3), "the newest frame is kept"
    for frame in seen:
        source = by_time[round(frame.timestamp_s, 3)]
        assert frame.rgb.dtype == np.uint8 and frame.depth_m.dtype == np.float32
        np.testing.assert_array_equal(frame.rgb, source.rgb)
        expected_m = depth_to_z16(source.depth_m, 0.001).astype(np.float32) * np.float32(0.001)
        # librealsense's align maps each depth pixel's corners into colour and rounds them, which leaves a
        # few holes (0) and one-pixel shifts even between identical cameras; it never invents a depth.
        nearest_error_m = np.full(expected_m.shape, np.inf)
        padded = np.pad(expected_m, 1, constant_values=np.nan)
        for dy in range(3):
            for dx in range(3):
                shifted = padded[dy:dy + expected_m.shape[0], dx:dx + expected_m.shape[1]]
                nearest_error_m = np.fmin(nearest_error_m, np.abs(frame.depth_m - shifted))
        assert np.all(nearest_error_m[frame.depth_m > 0] < 1e-6)
        assert np.mean(frame.depth_m[expected_m > 0] == expected_m[expected_m > 0]) > 0.9
        assert frame.arrival_s is not None and not frame.rgb.flags.writeable


@needs_sdk
def test_a_frozen_camera_raises_device_error_naming_it_then_recovers(tmp_path):
    camera = RealSenseCamera("wrist", "111", width=WIDTH, height=HEIGHT, playback_file=record(tmp_path, synthetic(150)))
    try:
        before = camera.read()
        camera.playback.pause()  # the camera stops delivering, as when its cable comes loose
        with pytest.raises(DeviceError, match=r"'wrist' \(serial '111'\).*stale_after_s=0.5.*USB"):
            for _ in range(3000):  # bounded, so a driver that never notices fails instead of hanging
                camera.read()
                time.sleep(0.01)
        camera.playback.resume()
        after = None
        for _ in range(3000):
            try:
                after = camera.read()
                break
            except DeviceError:
                time.sleep(0.01)
        assert after is not None and after.timestamp_s > before.timestamp_s
    finally:
        camera.close()


@needs_sdk
def test_two_cameras_by_serial_stream_side_by_side(tmp_path):
    front = RealSenseCamera("front", "111", width=WIDTH, height=HEIGHT, depth=True,
                            playback_file=record(tmp_path, synthetic(30, tag=1), serial="111"))
    wrist = RealSenseCamera("wrist", "222", width=WIDTH, height=HEIGHT, depth=True,
                            playback_file=record(tmp_path, synthetic(30, tag=2), serial="222"))
    try:
        seen = read_until_stale(front, wrist)
    finally:
        front.close()
        wrist.close()
    tags = {name: {int(f.rgb[0, 0, 1]) for f in frames} for name, frames in seen.items()}
    assert tags == {"front": {1}, "wrist": {2}}
    assert [int(frames[-1].rgb[0, 0, 0]) for frames in seen.values()] == [29, 29], "each keeps its newest frame"


@needs_sdk
def test_a_recording_of_another_serial_is_refused(tmp_path):
    with pytest.raises(RuntimeError, match=r"'front' \(serial '333'\) did not start.*different serial.*111"):
        RealSenseCamera("front", "333", width=WIDTH, height=HEIGHT, playback_file=record(tmp_path, synthetic(5)))


@needs_sdk
def test_hardware_clock_timestamps_are_refused(tmp_path):
    path = record(tmp_path, synthetic(30), timestamp_domain="hardware_clock")
    with pytest.raises(DeviceError, match="hardware_clock domain.*expected global_time"):
        RealSenseCamera("front", "111", width=WIDTH, height=HEIGHT, playback_file=path)


@needs_sdk
def test_system_time_timestamps_are_used_with_a_warning(tmp_path, caplog):
    path = record(tmp_path, synthetic(30), timestamp_domain="system_time")
    with caplog.at_level(logging.WARNING, logger="dojo.robot"):
        camera = RealSenseCamera("front", "111", width=WIDTH, height=HEIGHT, playback_file=path)
        try:
            assert camera.read().timestamp_s >= START_S
            assert camera.timestamp_domain == "system_time"
        finally:
            camera.close()
    assert "host arrival time (system_time)" in caplog.text


@needs_sdk
def test_close_stops_the_capture_thread_and_later_reads_fail(tmp_path):
    camera = RealSenseCamera("front", "111", width=WIDTH, height=HEIGHT, playback_file=record(tmp_path, synthetic(150)))
    camera.read()
    camera.close()
    camera.close()  # twice is harmless
    assert "realsense-front" not in [t.name for t in threading.enumerate()]
    with pytest.raises(DeviceError, match="after close"):
        camera.read()


@pytest.mark.parametrize("override, message", [
    ({"serial": 12345678901}, r"serial must be a non-empty string \(quote it in YAML\), got 12345678901"),
    ({"width": 0}, "width must be a positive integer, got 0"),
    ({"exposure_us": -5}, r"exposure_us must be a positive number or null \(auto\), got -5"),
    ({"stale_after_s": 0}, "stale_after_s must be a positive number of seconds, got 0"),
    ({"fps": 6, "stale_after_s": 0.3}, r"stale_after_s must exceed two frame periods \(2 / fps = 0.333333 s\)"),
    ({"playback_file": "/nonexistent/front.bag"}, "playback_file '/nonexistent/front.bag' is not a file"),
])
def test_bad_settings_name_the_value(override, message):
    settings = {"name": "front", "serial": "111"} | override
    with pytest.raises(ValueError, match=message):
        RealSenseCamera(**settings)


@needs_sdk
def test_write_bag_refuses_frames_it_cannot_record(tmp_path):
    frames = synthetic(3)
    with pytest.raises(ValueError, match="timestamps must increase"):
        write_bag(tmp_path / "a.bag", [frames[1], frames[0]], serial="111", fps=FPS)
    with pytest.raises(ValueError, match="must carry intrinsics"):
        write_bag(tmp_path / "b.bag", [Frame(rgb=frames[0].rgb, timestamp_s=START_S)], serial="111", fps=FPS)
    with pytest.raises(ValueError, match="frame 1 lacks depth_m"):
        write_bag(tmp_path / "c.bag", [frames[0], Frame(rgb=frames[1].rgb, timestamp_s=START_S + 1)],
                  serial="111", fps=FPS)
    assert list(tmp_path.iterdir()) == [], "no half-written recordings are left behind"


def test_depth_outside_z16_becomes_no_data():
    counts = depth_to_z16(np.array([np.nan, -1.0, 0.0, 0.25, 65.535, 70.0]), 0.001)
    np.testing.assert_array_equal(counts, [0, 0, 0, 250, 65535, 0])
