"""Joining worker threads without hanging the process that closes them."""

from __future__ import annotations

import sys
import threading
import traceback


def join_thread(thread: threading.Thread, timeout_s: float, what: str) -> None:
    """Join `thread`; if it has not stopped within `timeout_s`, raise saying where it is stuck
    (a wedged thread must fail loudly, not hang the process that closes it)."""
    thread.join(timeout_s)
    if thread.is_alive():
        frame = sys._current_frames().get(thread.ident)
        where = "".join(traceback.format_stack(frame)[-6:]) if frame is not None else "(no frame)"
        raise RuntimeError(f"{what} did not stop within {timeout_s:g} s; it is stuck at:\n{where}")
