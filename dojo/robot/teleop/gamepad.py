"""A gamepad (Xbox-style by default, layout configurable) through pygame's joystick module, behind `Teleop`.

Polled from the control loop; button events queued since the last read are replayed in order, so a
tap shorter than a control period still counts. Runs without a display (SDL dummy video driver).
"""

from __future__ import annotations

import os

from dojo.robot.drivers import require
from dojo.robot.teleop.base import MappedTeleop
from dojo.robot.teleop.mapping import GamepadLayout, MappingConfig, gamepad_raw_input


class GamepadTeleop(MappedTeleop):
    def __init__(self, mapping: MappingConfig = MappingConfig(gripper_mode="analog"),
                 layout: GamepadLayout = GamepadLayout(), index: int = 0) -> None:
        if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
            os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        os.environ.setdefault("SDL_JOYSTICK_ALLOW_BACKGROUND_EVENTS", "1")  # no window focus needed
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        pygame = require("pygame", "teleop")
        super().__init__(mapping)
        self._pygame, self.layout = pygame, layout
        pygame.display.init()  # the event queue lives in the video subsystem
        pygame.joystick.init()
        count = pygame.joystick.get_count()
        if not 0 <= index < count:
            raise RuntimeError(f"gamepad index {index} not available: pygame sees {count} joystick(s); "
                               "is the pad connected and /dev/input/js*/event* readable?")
        self._pad = pygame.joystick.Joystick(index)
        self._pad.init()
        self.name = self._pad.get_name()
        self._buttons = [0] * self._pad.get_numbuttons()

    def _raw(self):
        pad = self._pad
        axes = [pad.get_axis(i) for i in range(pad.get_numaxes())]
        hats = [pad.get_hat(i) for i in range(pad.get_numhats())]
        return gamepad_raw_input(axes, self._buttons, hats, self.layout)

    def _poll(self) -> None:
        pg = self._pygame
        for event in pg.event.get():
            if event.type in (pg.JOYBUTTONDOWN, pg.JOYBUTTONUP) and event.instance_id == self._pad.get_instance_id():
                self._buttons[event.button] = int(event.type == pg.JOYBUTTONDOWN)
                self._feed(self._raw())
            elif event.type == pg.JOYDEVICEREMOVED and event.instance_id == self._pad.get_instance_id():
                raise RuntimeError(f"gamepad {self.name!r} was disconnected")
        self._buttons = [self._pad.get_button(i) for i in range(len(self._buttons))]
        self._feed(self._raw())

    def close(self) -> None:
        super().close()
        self._pygame.joystick.quit()
