"""Shared test set-up: headless MuJoCo rendering and a quiet JAX on the CPU."""

import os
import pty

import pytest

# Must be set before mujoco is first imported anywhere in the test session.
if not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")


@pytest.fixture(autouse=True)
def collect_garbage_here():
    """Run each test's leftover finalizers (renderers' GL contexts, ZeroMQ contexts) on the main thread at
    its end. Left to chance, the cyclic collector can run one on zarr's I/O thread, and a finalizer that
    blocks there stalls every store read and write in the process."""
    yield
    import gc

    gc.collect()


@pytest.fixture
def terminal():
    """A pseudo-terminal (master, slave) for keyboard teleop and terminal UIs."""
    master, slave = pty.openpty()
    yield master, slave
    os.close(master)
    os.close(slave)


def pytest_unconfigure(config):
    """After the session: if a wedged thread keeps the interpreter from exiting, dump every thread's stack
    and exit non-zero within a minute instead of hanging CI (a leftover non-daemon thread is a bug). Only in the
    main process: a pytest-xdist worker waits there for the others to finish, and xdist ends a worker that does
    not exit when told to."""
    if hasattr(config, "workerinput"):
        return
    import faulthandler
    import sys
    import threading

    def give_up():
        sys.stderr.write("\ntests finished but the process did not exit within 60 s; threads:\n")
        faulthandler.dump_traceback(sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(3)

    timer = threading.Timer(60.0, give_up)
    timer.daemon = True
    timer.start()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A test that pytest-timeout had to stop usually left a wedged thread behind (zarr's I/O loop, a
    socket thread); the tests after it would each wait out the timeout too. Stop the session there."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.excinfo is not None and "from pytest-timeout" in str(call.excinfo.value):
        item.session.shouldstop = f"{item.nodeid} timed out; later tests would hang on what it left running"
