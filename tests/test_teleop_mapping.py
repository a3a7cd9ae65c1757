"""Teleop mapping from recorded raw device inputs: HID reports, pad arrays and key bytes to commands."""

import struct

import numpy as np
import pytest

from dojo.robot.teleop.mapping import (GamepadLayout, KeyHoldTracker, MappingConfig, RawInput, SpaceMouseState,
                                       TeleopMapper, decode_keys, gamepad_raw_input, keyboard_raw_input,
                                       parse_spacemouse_report, spacemouse_raw_input)


def report(rid: int, *values: int) -> bytes:
    return bytes([rid]) + struct.pack(f"<{len(values)}h", *values)


def still(buttons=()) -> RawInput:
    return RawInput(np.zeros(6), None, frozenset(buttons))


# --- SpaceMouse HID reports --------------------------------------------------------------------

def test_spacemouse_split_reports_translation_rotation_buttons():
    state = parse_spacemouse_report(report(1, 350, -175, 70))
    assert state.counts == (350, -175, 70, 0, 0, 0)
    state = parse_spacemouse_report(report(2, -350, 35, 0), state)
    assert state.counts == (350, -175, 70, -350, 35, 0)
    state = parse_spacemouse_report(bytes([3, 0b10, 0]), state)
    assert state.button_bits == 0b10 and state.counts == (350, -175, 70, -350, 35, 0)
    raw = spacemouse_raw_input(state)
    # HID frame (x right, y toward user, z down) -> device frame (x right, y forward, z up).
    np.testing.assert_allclose(raw.axes, [1.0, 0.5, -0.2, -1.0, -0.1, 0.0])
    assert raw.buttons == {"intervene"}


def test_spacemouse_combined_13_byte_report_and_clipping():
    data = report(1, 100, 200, -300, 400, -500, 35)
    assert len(data) == 13
    state = parse_spacemouse_report(data, SpaceMouseState(button_bits=1))
    assert state.counts == (100, 200, -300, 400, -500, 35) and state.button_bits == 1
    raw = spacemouse_raw_input(state)
    np.testing.assert_allclose(raw.axes, [100 / 350, -200 / 350, 300 / 350, 1.0, 1.0, -0.1])
    assert raw.buttons == {"gripper"}


def test_spacemouse_ignores_other_reports_and_rejects_truncated_ones():
    state = SpaceMouseState((1, 2, 3, 4, 5, 6), 0)
    assert parse_spacemouse_report(bytes([0x17, 80]), state) == state  # battery level on wireless models
    with pytest.raises(ValueError, match="report id 2 needs at least 7 bytes, got 3"):
        parse_spacemouse_report(bytes([2, 1, 0]), state)
    with pytest.raises(ValueError, match="empty"):
        parse_spacemouse_report(b"", state)


def test_spacemouse_end_to_end_deadzone_scale_and_motion_intervention():
    mapper = TeleopMapper(MappingConfig(deadzone=0.1, scale=(1, 1, 1, 0.5, 0.5, 0.5), intervene_mode="motion"))
    state = SpaceMouseState()
    for data in (report(1, 20, 0, 0), report(2, 0, 0, 0)):  # 20/350 = 0.057 is inside the deadzone
        state = parse_spacemouse_report(data, state)
        mapper.update(spacemouse_raw_input(state))
    cmd = mapper.read()
    assert not cmd.intervene and np.all(cmd.twist == 0)
    for data in (report(1, 350, 0, -350), report(2, 0, 0, 175)):
        state = parse_spacemouse_report(data, state)
        mapper.update(spacemouse_raw_input(state))
    cmd = mapper.read()
    # z pushed down (HID +) is -z up; rotation gets half scale; rz: (0.5 - 0.1) / 0.9 * 0.5.
    np.testing.assert_allclose(cmd.twist, [1, 0, 1, 0, 0, -(0.4 / 0.9) * 0.5])
    assert cmd.intervene  # motion takes over
    mapper.update(spacemouse_raw_input(parse_spacemouse_report(report(1, 0, 0, 0, 0, 0, 0), state)))
    assert not mapper.read().intervene


# --- The mapper: deadzone, scaling, mounting, frame, buttons -----------------------------------

def test_deadzone_is_continuous_and_scale_clips():
    mapper = TeleopMapper(MappingConfig(deadzone=0.2, scale=2.0))
    axes = np.array([0.19, 0.21, -0.6, 1.0, -1.0, 0.0])
    twist = mapper.twist(axes)
    np.testing.assert_allclose(twist, [0.0, 2 * 0.01 / 0.8, -1.0, 1.0, -1.0, 0.0])
    assert 0 < twist[1] < 0.05  # just past the deadzone starts near zero, not at 0.2


def test_mounting_permutation_and_signs():
    # Device turned 90 degrees about z on the table: its forward (+y) is the robot's -x.
    config = MappingConfig(deadzone=0.0, axis_order=(1, 0, 2, 4, 3, 5), axis_signs=(-1, 1, 1, -1, 1, 1))
    mapper = TeleopMapper(config)
    np.testing.assert_allclose(mapper.twist(np.array([0.3, 0.8, 0.1, 0.0, 0.5, 0.2])),
                               [-0.8, 0.3, 0.1, -0.5, 0.0, 0.2])


def test_frame_is_passed_on():
    for frame in ("base", "ee"):
        mapper = TeleopMapper(MappingConfig(frame=frame))
        mapper.update(still())
        assert mapper.read().frame == frame


def test_gripper_toggle_hold_and_analog():
    toggle = TeleopMapper(MappingConfig(gripper_mode="toggle"))
    widths = []
    for buttons in ([], ["gripper"], ["gripper"], [], ["gripper"], []):
        toggle.update(still(buttons))
        widths.append(toggle.read().gripper)
    assert widths == [1.0, -1.0, -1.0, -1.0, 1.0, 1.0]  # flips on each press, not while held

    hold = TeleopMapper(MappingConfig(gripper_mode="hold"))
    for buttons, want in (([], 1.0), (["gripper"], -1.0), ([], 1.0)):
        hold.update(still(buttons))
        assert hold.read().gripper == want

    analog = TeleopMapper(MappingConfig(gripper_mode="analog"))
    analog.update(RawInput(np.zeros(6), -0.4))
    assert analog.read().gripper == -0.4
    analog.update(RawInput(np.zeros(6), None))  # no reading keeps the last one
    assert analog.read().gripper == -0.4


def test_intervene_toggle_and_hold():
    toggle = TeleopMapper(MappingConfig(intervene_mode="toggle"))
    states = []
    for buttons in ([], ["intervene"], ["intervene"], [], [], ["intervene"], []):
        toggle.update(still(buttons))
        states.append(toggle.read().intervene)
    assert states == [False, True, True, True, True, False, False]

    hold = TeleopMapper(MappingConfig(intervene_mode="hold"))
    states = []
    for buttons in ([], ["intervene"], ["intervene"], []):
        hold.update(still(buttons))
        states.append(hold.read().intervene)
    assert states == [False, True, True, False]


def test_event_buttons_report_each_press_once_even_between_reads():
    mapper = TeleopMapper()
    mapper.update(still(["success"]))
    mapper.update(still([]))  # a tap shorter than a control period: pressed and released before read
    cmd = mapper.read()
    assert cmd.success and not (cmd.fail or cmd.rerecord or cmd.discard or cmd.estop)
    assert not mapper.read().success  # reported once
    mapper.update(still(["fail", "rerecord", "discard"]))
    cmd = mapper.read()
    assert cmd.fail and cmd.rerecord and cmd.discard
    mapper.update(still(["fail", "rerecord", "discard"]))  # still held: no new press
    cmd = mapper.read()
    assert not (cmd.fail or cmd.rerecord or cmd.discard)


def test_estop_latches_a_tap_and_holds_while_pressed():
    mapper = TeleopMapper()
    mapper.update(still(["estop"]))
    mapper.update(still([]))
    assert mapper.read().estop  # the tap is not lost
    assert not mapper.read().estop
    mapper.update(still(["estop"]))
    assert mapper.read().estop and mapper.read().estop  # held: every read


@pytest.mark.parametrize("kwargs, message", [
    (dict(frame="world"), "frame must be 'base' or 'ee', got 'world'"),
    (dict(deadzone=1.0), r"deadzone must be .* in \[0.0, 0.99\], got 1.0"),
    (dict(scale=(1, 1, 1)), "scale must be one number or 6 numbers"),
    (dict(axis_order=(0, 0, 1, 2, 3, 4)), "axis_order must be a permutation of 0..5"),
    (dict(axis_signs=(1, 1, 1, 1, 1, 0)), r"axis_signs must be 6 values of \+1 or -1"),
    (dict(gripper_mode="analogue"), "gripper_mode must be .* got 'analogue'"),
    (dict(intervene_mode="auto"), "intervene_mode must be .* got 'auto'"),
])
def test_bad_mapping_config_names_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MappingConfig(**kwargs)


def test_bad_raw_input_is_refused():
    mapper = TeleopMapper()
    with pytest.raises(ValueError, match="6 finite numbers"):
        mapper.update(RawInput(np.array([0, 0, np.nan, 0, 0, 0])))
    with pytest.raises(ValueError, match=r"unknown teleop button\(s\) \['jump'\]"):
        mapper.update(still(["jump"]))


# --- Gamepad arrays ------------------------------------------------------------------------------

def test_gamepad_xbox_layout_sticks_dpad_trigger_buttons():
    axes = [-0.5, -1.0, -1.0, 0.25, 0.6, 1.0]  # LX left, LY forward, LT released, RX, RY down, RT pulled
    buttons = [1, 0, 0, 0, 0, 0, 0, 0]  # A
    raw = gamepad_raw_input(axes, buttons, [(1, -1)])
    np.testing.assert_allclose(raw.axes, [1.0, 0.5, -0.6, 1.0, -1.0, -0.25])
    assert raw.gripper == -1.0 and raw.buttons == {"intervene"}

    mapper = TeleopMapper(MappingConfig(gripper_mode="analog", deadzone=0.1))
    mapper.update(raw)
    cmd = mapper.read()
    assert cmd.intervene and cmd.gripper == -1.0
    np.testing.assert_allclose(cmd.twist, [1.0, 4 / 9, -5 / 9, 1.0, -1.0, -(0.15 / 0.9)])
    released = gamepad_raw_input([0.05, -0.08, -1, 0, 0, -1], [0] * 8, [(0, 0)])
    mapper.update(released)  # stick drift within the deadzone, trigger released
    cmd = mapper.read()
    assert np.all(cmd.twist == 0) and cmd.gripper == 1.0 and cmd.intervene  # toggled on stays on


def test_gamepad_custom_layout_and_errors():
    layout = GamepadLayout(twist=(("axis", 0, 1), None, None, None, None, None), gripper_axis=None,
                           buttons={2: "success"})
    raw = gamepad_raw_input([0.7], [0, 0, 1], [], layout)
    np.testing.assert_allclose(raw.axes, [0.7, 0, 0, 0, 0, 0])
    assert raw.gripper is None and raw.buttons == {"success"}
    with pytest.raises(ValueError, match="reads axis 4 but the pad has 2 axes"):
        gamepad_raw_input([0.0, 0.0], [], [], GamepadLayout(twist=(("axis", 4, 1),) + (None,) * 5, gripper_axis=None))
    with pytest.raises(ValueError, match="layout for y must be None or"):
        GamepadLayout(twist=(None, ("trigger", 2, 1), None, None, None, None))
    with pytest.raises(ValueError, match="binds 9 to unknown button 'turbo'"):
        GamepadLayout(buttons={9: "turbo"})


# --- Keyboard bytes ------------------------------------------------------------------------------

def test_decode_keys_letters_arrows_escape_backspace():
    data = b"wW \x1b[A\x1bOD\x1b\x7f\x08i\x1b[15~y"  # F5 (CSI 15~) is not bound and skipped whole
    assert decode_keys(data) == ["w", "w", "space", "up", "left", "escape", "backspace", "backspace", "i", "y"]
    assert decode_keys(b"\x1b") == ["escape"]


def test_key_hold_tracker_bridges_repeat_delay_then_releases():
    tracker = KeyHoldTracker(first_hold_s=0.5, release_timeout_s=0.1)
    tracker.press(["w"], 0.0)
    assert tracker.held(0.45) == {"w"}  # waiting for auto-repeat to start
    tracker.press(["w"], 0.45)  # repeats every 33 ms from here
    tracker.press(["w"], 0.48)
    assert tracker.held(0.55) == {"w"}  # the first hold still covers it
    tracker.press(["w"], 0.56)
    assert tracker.held(0.65) == {"w"}
    assert tracker.held(0.67) == frozenset()  # released: no repeat within 0.1 s
    tracker.press(["a"], 1.0)
    assert tracker.held(1.49) == {"a"} and tracker.held(1.51) == frozenset()
    with pytest.raises(ValueError, match="release_timeout_s must be a positive number of seconds, got 0"):
        KeyHoldTracker(release_timeout_s=0)


def test_keyboard_keys_to_command_with_repeats_not_retoggling():
    mapper = TeleopMapper(MappingConfig(scale=0.5))
    tracker = KeyHoldTracker(first_hold_s=0.5, release_timeout_s=0.1)
    # Hold w + q and the up arrow; press i once with auto-repeat (one press, not three toggles).
    t = 0.0
    for chunk in (b"wq\x1b[Ai", b"wq\x1b[Ai", b"wq\x1b[Ai"):
        tracker.press(decode_keys(chunk), t)
        mapper.update(keyboard_raw_input(tracker.held(t)))
        t += 0.03
    cmd = mapper.read()
    np.testing.assert_allclose(cmd.twist, [0.5, 0, 0.5, 0, -0.5, 0])
    assert cmd.intervene
    tracker.press(decode_keys(b"ws"), t)  # opposite keys cancel
    mapper.update(keyboard_raw_input(tracker.held(t)))
    assert mapper.read().twist[0] == 0
    mapper.update(keyboard_raw_input(tracker.held(t + 1.0)))  # all released
    cmd = mapper.read()
    assert np.all(cmd.twist == 0) and cmd.intervene  # toggle stays on
    tracker.press(decode_keys(b" y\x7f"), t + 2.0)
    mapper.update(keyboard_raw_input(tracker.held(t + 2.0)))
    cmd = mapper.read()
    assert cmd.gripper == -1.0 and cmd.success and cmd.estop
