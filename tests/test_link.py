"""The actor/learner link over real authenticated sockets on loopback, with real learner processes killed.

Run as a script (`python tests/test_link.py serve KEYS PORT RECORD [DIE_AFTER_SEQ]`) it is the learner
process the fault tests start and SIGKILL: it appends every stored step to RECORD (fsync'd) before the link
acks it, and with DIE_AFTER_SEQ it SIGKILLs itself once that step is stored but before it is acked.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq

from dojo.link import (
    LinkClient, LinkServer, MemoryJournal, create_keys, decode_message, encode_steps, LinkProtocolError,
)
from dojo.link.wire import PROTOCOL_VERSION, make_schema

FAST = dict(heartbeat_s=0.2, timeout_s=1.0)  # short link timeouts keep the fault tests quick
CUT_S = float(os.environ.get("DOJO_LINK_CUT_S", "3"))  # the 30 s cut: DOJO_LINK_CUT_S=30


def wait_for(cond, timeout_s=20.0, what="condition"):
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


def make_step(i: int) -> dict:
    """A step whose contents are derived from `i`, so the learner side can check it arrived intact."""
    rng = np.random.default_rng(i)
    return {"wrist": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
            "state": rng.standard_normal(9).astype(np.float32), "i": i, "episode_id": i // 20}


def digest(step: dict) -> str:
    return hashlib.sha1(np.ascontiguousarray(step["wrist"]).tobytes() + step["state"].tobytes()).hexdigest()[:12]


class Recorder:
    """An in-process on_steps hook that keeps what it was given."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rows: list[tuple[str, int, dict]] = []

    def __call__(self, actor_id, first_seq, steps):
        with self.lock:
            self.rows += [(actor_id, first_seq + k, {key: np.array(v) if isinstance(v, np.ndarray) else v
                                                      for key, v in s.items()}) for k, s in enumerate(steps)]

    def seqs(self, actor_id):
        with self.lock:
            return [seq for a, seq, _ in self.rows if a == actor_id]


@pytest.fixture
def ctx():
    """A raw ZeroMQ context for misbehaving peers, destroyed even when the test fails."""
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def keys(tmp_path):
    return create_keys(tmp_path / "run", ["actor-0", "actor-1"])


# ------------------------------------------------------------------------------------ the learner process


def serve(keys_dir: str, port: str, record: str, die_after_seq: str = "0") -> None:
    """Learner process: durable record file first, ack second; resumes from the record after a restart."""
    last: dict[str, int] = {}
    if os.path.exists(record):
        for line in Path(record).read_text().splitlines():
            parts = line.split()
            if len(parts) == 4:  # a torn last line from a SIGKILL is not a stored step
                last[parts[0]] = max(last.get(parts[0], 0), int(parts[1]))
    fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def on_steps(actor_id, first_seq, steps):
        lines = "".join(f"{actor_id} {first_seq + k} {s['i']} {digest(s)}\n" for k, s in enumerate(steps))
        os.write(fd, lines.encode())
        os.fsync(fd)
        if 0 < int(die_after_seq) < first_seq + len(steps):
            os.kill(os.getpid(), signal.SIGKILL)  # stored durably, never acked: the worst moment to die

    server = LinkServer(on_steps, keys_dir, port=int(port), last_seq_by_actor=last, **FAST)
    print("READY", server.port, flush=True)
    while True:
        server.poll(0.05)


def start_learner(keys, port, record, die_after_seq=0) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, __file__, "serve", str(keys), str(port), str(record), str(die_after_seq)],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("READY"), f"learner process did not start: {line!r}"
    return proc


def read_record(record: Path) -> list[tuple[str, int, int, str]]:
    rows = [line.split() for line in record.read_text().splitlines()]
    return [(a, int(seq), int(i), d) for a, seq, i, d in rows]


def check_exactly_once(record: Path, actor: str, n: int) -> None:
    rows = [r for r in read_record(record) if r[0] == actor]
    assert [r[1] for r in rows] == list(range(1, n + 1)), "every step exactly once, in order"
    for _, seq, i, d in rows:
        assert i == seq and d == digest(make_step(seq)), f"step {seq} arrived corrupted"


def free_port() -> int:
    with zmq.Context() as ctx, ctx.socket(zmq.REP) as s:
        return s.bind_to_random_port("tcp://127.0.0.1")


# ------------------------------------------------------------------------------------------------ tests


def test_create_keys_permissions_and_errors(tmp_path, keys):
    assert oct(keys.stat().st_mode & 0o777) == "0o700"
    for name in ["learner", "actor-0", "actor-1"]:
        assert (keys / f"{name}.key_secret").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in (keys / "authorized").iterdir()) == ["actor-0.key", "actor-1.key"]
    with pytest.raises(FileExistsError, match="already exists"):
        create_keys(tmp_path / "run", ["actor-0"])
    with pytest.raises(ValueError, match="key name"):
        create_keys(tmp_path / "other", ["bad name"])
    with pytest.raises(FileNotFoundError, match="actor-7.key_secret"):
        LinkClient(MemoryJournal(), "127.0.0.1:5", keys, actor="actor-7")
    with pytest.raises(ValueError, match="HOST:PORT"):
        LinkClient(MemoryJournal(), "localhost", keys, actor="actor-0")
    os.chmod(keys / "learner.key_secret", 0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        LinkServer(Recorder(), keys, port=0)
    os.chmod(keys / "learner.key_secret", 0o600)
    for p in (keys / "authorized").iterdir():
        p.unlink()
    with pytest.raises(FileNotFoundError, match="no actor keys"):
        LinkServer(Recorder(), keys, port=0)


def test_port_in_use_is_a_clear_error(keys):
    with LinkServer(Recorder(), keys, port=0) as first:
        with pytest.raises(OSError, match=f"cannot bind .*:{first.port}.*another learner"):
            LinkServer(Recorder(), keys, port=first.port)


def test_round_trip_dtypes_and_shapes(keys):
    steps = []
    for i in range(50):
        rng = np.random.default_rng(i)
        steps.append({
            "cam0": rng.integers(0, 256, (128, 128, 3), dtype=np.uint8),
            "depth": rng.random((4, 6)).astype(np.float16),
            "state": rng.standard_normal(7),  # float64
            "joint_ids": np.arange(i % 5, dtype=np.int16).reshape(-1, 1),  # includes an empty (0, 1) array
            "counts": np.array([i, -i], dtype=np.int64), "big": np.array(2**40 + i, dtype=np.uint64),
            "mask": rng.random((2, 3, 2)) > 0.5, "strided": np.arange(20, dtype=np.int32)[::3],
            "swapped": np.arange(3, dtype=">f4"),  # big-endian input arrives little-endian, same values
            "reward": float(i) / 3, "done": i % 7 == 0, "episode_id": i // 10, "task": "pick_cube",
        })
    rec = Recorder()
    journal = MemoryJournal()
    with LinkServer(rec, keys, port=0, **FAST).start() as server, \
            LinkClient(journal, server.address, keys, "actor-0", batch_steps=8, **FAST) as client:
        for s in steps:
            journal.append(s)
        wait_for(lambda: client.status().acked_seq == 50, what="all 50 steps acked")
        assert len(journal) == 0, "acked steps are released from the journal"
        stats = server.stats()
    assert rec.seqs("actor-0") == list(range(1, 51))
    assert stats["steps_stored"] == 50 and not any(k.startswith("rejected") for k in stats)
    for (_, _, got), sent in zip(rec.rows, steps):
        assert got.keys() == sent.keys()
        for key, value in sent.items():
            if isinstance(value, np.ndarray):
                assert got[key].dtype == value.dtype.newbyteorder("<") and got[key].shape == value.shape, key
                np.testing.assert_array_equal(got[key], value)
            else:
                assert got[key] == value and type(got[key]) is type(value), key


def test_bad_steps_are_refused_on_the_actor_side():
    with pytest.raises(ValueError, match="dtype object"):
        encode_steps(1, 0, [{"x": np.array([{"a": 1}], dtype=object)}])
    with pytest.raises(ValueError, match="dtype <U"):
        encode_steps(1, 0, [{"x": np.array(["text"])}])


def stream(journal, n_total, rate_hz, stop_when=None):
    """The actor's control loop: append steps at about `rate_hz` regardless of the link."""
    while journal.last_seq() < n_total:
        journal.append(make_step(journal.last_seq() + 1))
        time.sleep(1 / rate_hz)
        if stop_when is not None and stop_when():
            return


@pytest.mark.parametrize("when", ["from_outside", "between_store_and_ack"])
def test_exactly_once_across_learner_sigkill_and_restart(tmp_path, keys, when):
    record, port = tmp_path / "record.txt", free_port()
    learner = start_learner(keys, port, record, die_after_seq=40 if when == "between_store_and_ack" else 0)
    journal = MemoryJournal()
    client = LinkClient(journal, f"127.0.0.1:{port}", keys, "actor-0", batch_steps=4, **FAST)
    try:
        if when == "from_outside":
            stream(journal, 10_000, 100, stop_when=lambda: client.status().acked_seq >= 40)
            learner.send_signal(signal.SIGKILL)
        else:
            stream(journal, 10_000, 100, stop_when=lambda: learner.poll() is not None)
            assert client.status().acked_seq < 40 <= read_record(record)[-1][1], "stored but not acked"
        assert learner.wait() == -signal.SIGKILL
        killed_at = journal.last_seq()
        # The actor goes on acting; the link notices the learner is gone and the journal grows.
        stream(journal, killed_at + 10_000, 100, stop_when=lambda: not client.status().connected)
        assert client.status().silent_for_s >= FAST["timeout_s"]
        stream(journal, journal.last_seq() + 30, 100)
        assert len(journal) == journal.last_seq() - client.status().acked_seq >= journal.last_seq() - killed_at, \
            "unacked steps stay in the journal"
        learner = start_learner(keys, port, record)
        stream(journal, journal.last_seq() + 30, 100)
        n = journal.last_seq()
        wait_for(lambda: client.status().acked_seq == n, what=f"{n} steps acked after the restart")
        assert client.status().connected
    finally:
        client.close()
        learner.kill()
        learner.wait()
    check_exactly_once(record, "actor-0", n)


def test_link_cut_then_exactly_once(tmp_path, keys):
    """The learner freezes (SIGSTOP: no packets answered) for CUT_S seconds while the actor streams."""
    record, port = tmp_path / "record.txt", free_port()
    learner = start_learner(keys, port, record)
    journal = MemoryJournal()
    client = LinkClient(journal, f"127.0.0.1:{port}", keys, "actor-1", batch_steps=4, **FAST)
    try:
        stream(journal, 10_000, 50, stop_when=lambda: client.status().acked_seq >= 20)
        learner.send_signal(signal.SIGSTOP)
        cut_end = time.monotonic() + CUT_S
        stream(journal, 10_000, 50, stop_when=lambda: time.monotonic() > cut_end)
        assert not client.status().connected, "a cut longer than timeout_s is reported"
        learner.send_signal(signal.SIGCONT)
        stream(journal, journal.last_seq() + 20, 50)
        n = journal.last_seq()
        wait_for(lambda: client.status().acked_seq == n, what=f"{n} steps acked after the cut")
        assert client.status().connected
    finally:
        client.close()
        learner.kill()
        learner.wait()
    rows = read_record(record)
    assert {r[0] for r in rows} == {"actor-1"}
    check_exactly_once(record, "actor-1", n)


def test_unauthenticated_and_wrong_key_clients_are_rejected(tmp_path, keys, ctx):
    rec = Recorder()
    rogue = create_keys(tmp_path / "rogue", ["actor-0"])  # same actor name, a key the learner never saw
    (rogue / "learner.key").write_bytes((keys / "learner.key").read_bytes())
    with LinkServer(rec, keys, port=0, **FAST).start() as server:
        plain = ctx.socket(zmq.DEALER)  # no CURVE at all
        plain.linger = 0
        plain.connect(f"tcp://{server.address}")
        for _ in range(3):
            plain.send_multipart(encode_steps(1, 0, [make_step(1)]))
        wrong_journal, good_journal = MemoryJournal(), MemoryJournal()
        with LinkClient(wrong_journal, server.address, rogue, "actor-0", **FAST) as wrong, \
                LinkClient(good_journal, server.address, keys, "actor-1", **FAST) as good:
            for i in range(1, 21):
                wrong_journal.append(make_step(i))
                good_journal.append(make_step(i))
            wait_for(lambda: good.status().acked_seq == 20, what="the authorized actor's steps acked")
            wait_for(lambda: wrong.status().refused is not None, what="the wrong-key actor told it was rejected")
            assert "does not authorise this actor's key (actor-0)" in wrong.status().refused
            # libzmq reports the mechanism mismatch as a protocol error, or without detail when the peer
            # hangs up first (seen under load); either way it is refused before any message is read.
            wait_for(lambda: server.stats().get("handshake_failed_protocol", 0)
                     + server.stats().get("handshake_failed_other", 0) >= 1, what="the keyless peer counted")
            assert server.stats()["auth_denied"] >= 1
            assert wrong.status().acked_seq == 0 and not wrong.status().connected
    assert {a for a, _, _ in rec.rows} == {"actor-1"} and rec.seqs("actor-1") == list(range(1, 21))


def test_a_wrong_learner_key_is_named_not_reported_as_unreachable(tmp_path, keys):
    other = create_keys(tmp_path / "other-run", ["actor-0"])  # another learner's key pair
    (other / "actor-0.key_secret").write_bytes((keys / "actor-0.key_secret").read_bytes())
    with LinkServer(Recorder(), keys, port=0, **FAST).start() as server:
        journal = MemoryJournal()
        with LinkClient(journal, server.address, other, "actor-0", **FAST) as client:
            journal.append(make_step(1))
            wait_for(lambda: client.status().refused is not None, what="the wrong learner key named")
            assert "not that learner's key" in client.status().refused
            assert client.status().acked_seq == 0


STEP_SCHEMA = make_schema({"wrist": ((32, 32, 3), np.uint8), "state": ((9,), np.float32)})


def test_an_actor_whose_steps_do_not_fit_the_run_is_refused_before_anything_is_stored(tmp_path, keys):
    rec = Recorder()
    with LinkServer(rec, keys, port=0, schema=STEP_SCHEMA, **FAST).start() as server:
        # It announces arrays of another shape: refused at its first sync, naming the key and both shapes.
        wrong = make_schema({"wrist": ((32, 32, 3), np.uint8), "state": ((17,), np.float32)})
        journal = MemoryJournal()
        with LinkClient(journal, server.address, keys, "actor-0", schema=wrong, **FAST) as client:
            journal.append(make_step(1))
            wait_for(lambda: client.status().refused is not None, what="the mismatched actor refused")
            assert "state is (17,) float32 on actor actor-0, the run expects (9,) float32" in client.status().refused
        # One that announces nothing but sends steps with an extra array: those steps are refused too.
        journal = MemoryJournal()
        with LinkClient(journal, server.address, keys, "actor-1", **FAST) as client:
            journal.append({**make_step(1), "depth": np.zeros((4, 4), np.float32)})
            wait_for(lambda: client.status().refused is not None, what="the extra array refused")
            assert "has ['depth'] as well" in client.status().refused
        # A matching actor is served.
        journal = MemoryJournal()
        with LinkClient(journal, server.address, keys, "actor-1", schema=STEP_SCHEMA, **FAST) as client:
            for i in range(1, 6):
                journal.append(make_step(i))
            wait_for(lambda: client.status().acked_seq == 5, what="the matching actor's steps")
    assert rec.seqs("actor-0") == [] and rec.seqs("actor-1") == [1, 2, 3, 4, 5]


def test_an_actor_whose_id_differs_from_its_key_is_refused(tmp_path, keys):
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    (renamed / "learner.key").write_bytes((keys / "learner.key").read_bytes())
    (renamed / "actor-0.key_secret").write_bytes((keys / "actor-1.key_secret").read_bytes())  # actor-1's key
    os.chmod(renamed / "actor-0.key_secret", 0o600)
    with LinkServer(Recorder(), keys, port=0, **FAST).start() as server:
        with LinkClient(MemoryJournal(), server.address, renamed, "actor-0", **FAST) as client:
            wait_for(lambda: client.status().refused is not None, what="the renamed key refused")
            assert "calls itself 'actor-0' but its key is the learner's 'actor-1'" in client.status().refused


def test_ports_outside_the_tcp_range_are_refused(keys):
    for port in (99999, -1):
        with pytest.raises(ValueError, match=f"port must be in 1..65535.*got {port}"):
            LinkServer(Recorder(), keys, port=port)


def curve_dealer(ctx, server, keys, actor):
    """A raw authenticated socket, to send what a LinkClient never would."""
    import zmq.auth
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.curve_publickey, sock.curve_secretkey = zmq.auth.load_certificate(keys / f"{actor}.key_secret")
    sock.curve_serverkey, _ = zmq.auth.load_certificate(keys / "learner.key")
    sock.connect(f"tcp://{server.address}")
    return sock


def test_malformed_and_oversized_messages_are_rejected_and_counted(keys, ctx):
    rec = Recorder()
    limit = 1 << 20
    pack = lambda h: msgpack.packb(h, use_bin_type=True)  # noqa: E731
    good_frames = encode_steps(1, 0, [make_step(1)])
    header = msgpack.unpackb(good_frames[0])
    def with_first_array(**change):
        h = msgpack.unpackb(good_frames[0])
        key = h["steps"][0]["a"][0][0]
        h["steps"][0]["a"][0] = [key, change.get("dtype", "|u1"), change.get("shape", [32, 32, 3])]
        return [pack(h), *good_frames[1:]]
    bad = {
        "bad_header": [[b"\xc1 not msgpack"], [pack([1, 2, 3])], [pack({**header, "v": 99}), *good_frames[1:]],
                       [pack({**header, "first_seq": -3}), *good_frames[1:]]],
        "frame_count": [good_frames[:-1], [pack({"v": PROTOCOL_VERSION, "kind": "sync", "params_version": 0}), b"extra"]],
        "bad_dtype": [with_first_array(dtype="|O"), with_first_array(dtype=">f4"), with_first_array(dtype="<U4")],
        "bad_shape": [with_first_array(shape=[-1, 3]), with_first_array(shape=[1] * 9)],
        "size_mismatch": [with_first_array(shape=[32, 32, 4]), with_first_array(shape=[2**62, 2**62])],
        "unknown_kind": [[pack({"v": PROTOCOL_VERSION, "kind": "evaluate", "code": "import os"})]],
        # every frame under the per-frame limit, the whole message over it
        "oversized": [[pack({"v": PROTOCOL_VERSION, "kind": "steps", "first_seq": 1, "epoch": 0,
                             "steps": [{"a": [[f"x{k}", "|u1", [400_000]] for k in range(3)], "s": {}}]}),
                       *[bytes(400_000)] * 3]],
    }
    with LinkServer(rec, keys, port=0, max_message_bytes=limit, **FAST).start() as server:
        raw = curve_dealer(ctx, server, keys, "actor-1")
        for reason, messages in bad.items():
            for frames in messages:
                raw.send_multipart(frames)
                assert raw.poll(5000), f"no reply to a {reason} message"
                reply = msgpack.unpackb(raw.recv_multipart()[0])
                assert reply["kind"] == "error" and reply["reason"] == reason, (reason, reply)
        stats = server.stats()
        for reason, messages in bad.items():
            assert stats[f"rejected_{reason}"] == len(messages), reason
        # One frame over libzmq's MAXMSGSIZE: the learner drops that connection before reading it.
        raw.send_multipart([good_frames[0], bytes(limit + 1)])
        wait_for(lambda: server.stats().get("disconnects", 0) >= 1, what="the oversized peer dropped")
        journal = MemoryJournal()
        with LinkClient(journal, server.address, keys, "actor-0", **FAST) as client:
            for i in range(1, 11):
                journal.append(make_step(i))
            wait_for(lambda: client.status().acked_seq == 10, what="a well-behaved actor still served")
    assert rec.seqs("actor-0") == list(range(1, 11)) and rec.seqs("actor-1") == []


def test_decoder_survives_random_corruption():
    """Flipped bytes and truncated headers give LinkProtocolError, never another exception."""
    rng = np.random.default_rng(0)
    frames = encode_steps(5, 1, [make_step(1), make_step(2)])
    header = bytearray(frames[0])
    outcomes = set()
    for _ in range(2000):
        h = bytearray(header)
        for pos in rng.integers(0, len(h), rng.integers(1, 4)):
            h[pos] = rng.integers(0, 256)
        h = h[: rng.integers(1, len(h) + 1)] if rng.random() < 0.2 else h
        try:
            decode_message([bytes(h), *frames[1:]], 1 << 20)
            outcomes.add("ok")
        except LinkProtocolError as e:
            outcomes.add(e.reason)
    assert {"bad_header"} <= outcomes and len(outcomes) >= 3


def test_parameters_sent_only_when_changed(keys):
    with LinkServer(Recorder(), keys, port=0, **FAST).start() as server:
        with LinkClient(MemoryJournal(), server.address, keys, "actor-0", **FAST) as client:
            wait_for(lambda: client.status().connected, what="connection")
            assert client.latest_params() is None
            server.publish(b"\x01" * 1000, version=1, metadata={"step": 100})
            wait_for(lambda: client.latest_params() is not None, what="snapshot 1")
            snap = client.latest_params()
            assert (snap.version, snap.blob, snap.metadata) == (1, b"\x01" * 1000, {"step": 100})
            time.sleep(5 * FAST["heartbeat_s"])  # several syncs report version 1: nothing more is sent
            assert server.stats()["params_sent"] == 1
            with pytest.raises(ValueError, match="version must be an int > the last published"):
                server.publish(b"old", version=1)
            server.publish(b"\x02" * 2000, version=2)
            wait_for(lambda: client.latest_params().version == 2, what="snapshot 2")
            time.sleep(5 * FAST["heartbeat_s"])
            assert server.stats()["params_sent"] == 2
        # An actor that already holds version 2 (e.g. restarted with its cached snapshot) gets nothing.
        with LinkClient(MemoryJournal(), server.address, keys, "actor-1", params_version=2, **FAST) as client:
            wait_for(lambda: client.status().connected, what="connection")
            time.sleep(3 * FAST["heartbeat_s"])
            assert client.latest_params() is None and server.stats()["params_sent"] == 2


def test_backpressure_and_unacked_resend_after_a_failing_store(keys):
    """A slow store bounds what is in flight; a store that fails once gets the same steps again later."""
    rec = Recorder()
    calls = []

    def slow_flaky_store(actor_id, first_seq, steps):
        calls.append(first_seq)
        time.sleep(0.05)
        if len(calls) == 2:
            raise OSError("disk full (once)")
        rec(actor_id, first_seq, steps)

    journal = MemoryJournal()
    with LinkServer(slow_flaky_store, keys, port=0, **FAST).start() as server, \
            LinkClient(journal, server.address, keys, "actor-0", max_inflight=2, batch_steps=3, **FAST) as client:
        for i in range(1, 61):
            journal.append(make_step(i))  # never blocks, however far behind the link is
        assert len(journal) > 2 * 3
        wait_for(lambda: client.status().acked_seq == 60, what="all steps acked")
        status, stats = client.status(), server.stats()
    assert status.max_inflight_seen <= 2
    assert stats["hook_errors"] == 1 and calls[1] == calls[2], "the failed batch is offered again"
    assert rec.seqs("actor-0") == list(range(1, 61))


@pytest.mark.parametrize("journal_kept", ["only_unacked", "everything"])
def test_restarted_actor_resumes_from_the_learners_acked_seq(keys, journal_kept):
    """A new client on a journal that survived the actor: it sends only what the learner lacks."""
    rec = Recorder()
    journal = MemoryJournal()
    with LinkServer(rec, keys, port=0, **FAST).start() as server:
        with LinkClient(journal, server.address, keys, "actor-0", **FAST) as first_run:
            for i in range(1, 11):
                journal.append(make_step(i))
            wait_for(lambda: first_run.status().acked_seq == 10, what="10 steps acked")
        if journal_kept == "everything":  # a journal that never recorded the acks
            journal = MemoryJournal()
            for i in range(1, 11):
                journal.append(make_step(i))
        for i in range(11, 21):  # committed locally while no client was running
            journal.append(make_step(i))
        with LinkClient(journal, server.address, keys, "actor-0", **FAST) as second_run:
            wait_for(lambda: second_run.status().acked_seq == 20, what="20 steps acked")
            assert second_run.status().errors == {}
        assert server.stats().get("duplicates", 0) == 0 and server.stats()["steps_stored"] == 20
    assert rec.seqs("actor-0") == list(range(1, 21))
    assert [row[2]["i"] for row in rec.rows] == list(range(1, 21))


def test_learner_that_lost_acked_steps_stops_the_stream_instead_of_looping(keys):
    """A learner restarted without its store refuses the gap; the journal cannot refill it: a clear error."""
    journal = MemoryJournal()
    with LinkServer(Recorder(), keys, port=0, **FAST).start() as first:
        port = first.port
        client = LinkClient(journal, first.address, keys, "actor-0", **FAST)
        for i in range(1, 11):
            journal.append(make_step(i))
        wait_for(lambda: client.status().acked_seq == 10, what="10 steps acked")
    try:
        with LinkServer(Recorder(), keys, port=port, **FAST).start() as amnesiac:
            journal.append(make_step(11))
            wait_for(lambda: client.status().errors.get("journal_gap") == 1, what="the journal gap reported")
            assert amnesiac.stats()["gaps_refused"] >= 1 and amnesiac.stats().get("steps_stored", 0) == 0
    finally:
        client.close()


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "serve":
    serve(*sys.argv[2:])
