"""Real device drivers, each a thin adapter onto one interface of robot/interfaces.py.

Drivers import their vendor library lazily, so a machine without it can still import dojo and only
fails, with a message naming the missing extra, when that driver is asked for.
"""

from __future__ import annotations

import importlib


def require(module: str, extra: str, how: str = ""):
    """Import a vendor module or fail with a message that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        hint = how or f"pip install 'dojo-robot[{extra}]'"
        raise RuntimeError(f"this driver needs the Python module {module!r}, which is not importable "
                           f"({err}); install it with: {hint}") from err
