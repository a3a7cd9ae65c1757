"""How fast the authenticated actor/learner link streams camera steps, and how quickly it acks and ships params.

Part 1, the link alone: the learner is a separate process on loopback whose `on_steps` hook does nothing.
Part 2, the whole path: the actor's durable journal -> link -> the learner's durable Zarr store (a
separate process), first flat out, then with the twin (two 128x128 cameras) paced at 10 Hz real time,
measuring step-to-store latency (until the learner's ack, which it sends after its store commit) and the
actor's achieved control period. Prints one JSON line. Reproduce: `.venv/bin/python benchmarks/link_speed.py`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import zmq

from dojo.link import LinkClient, LinkServer, MemoryJournal, create_keys, encode_steps
from dojo.link.journal import StoreJournal, StoreSink
from dojo.robot.interfaces import WallClock

SNAPSHOT_BYTES = 1_000_000
SNAPSHOT_PERIOD_S = 1.0


def make_steps(n_distinct: int) -> list[dict]:
    """Steps as an actor with two 128x128 RGB cameras produces them (cycled, to keep memory small)."""
    rng = np.random.default_rng(0)
    return [{"front": rng.integers(0, 256, (128, 128, 3), dtype=np.uint8),
             "wrist": rng.integers(0, 256, (128, 128, 3), dtype=np.uint8),
             "state": rng.standard_normal(24).astype(np.float32), "action": rng.standard_normal(7).astype(np.float32),
             "reward": 0.0, "terminal": False, "episode_id": 0} for _ in range(n_distinct)]


def serve(keys_dir: str, store: str | None = None) -> None:
    """The learner process: acks every step (after committing it to `store`, if given), publishes a fresh
    ~1 MB snapshot every SNAPSHOT_PERIOD_S."""
    on_steps = lambda actor_id, first_seq, steps: None  # noqa: E731
    if store:
        sink = StoreSink(store)
        on_steps = lambda actor_id, first_seq, steps: sink.on_steps(first_seq, steps)  # noqa: E731
    server = LinkServer(on_steps, keys_dir, port=0)
    print("READY", server.port, flush=True)
    blob = np.random.default_rng(1).integers(0, 256, SNAPSHOT_BYTES, dtype=np.uint8).tobytes()
    version, next_publish_s = 0, time.monotonic() + SNAPSHOT_PERIOD_S
    while True:
        server.poll(0.005)
        if time.monotonic() >= next_publish_s:
            version += 1
            # CLOCK_MONOTONIC is shared by processes on one machine, so the actor can time the delivery.
            server.publish(blob, version, {"published_at_s": time.monotonic()})
            next_publish_s += SNAPSHOT_PERIOD_S


def raw_zmq_steps_per_s(steps: list[dict], n: int) -> float:
    """Baseline: the same frames over plain PUSH/PULL on loopback, no auth, no acks, no bookkeeping."""
    ctx = zmq.Context()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push.connect(f"tcp://127.0.0.1:{port}")
    done = threading.Event()

    def receive() -> None:
        for _ in range(n):
            pull.recv_multipart(copy=False)
        done.set()

    receiver = threading.Thread(target=receive)
    receiver.start()
    start = time.perf_counter()
    for i in range(n):
        push.send_multipart(encode_steps(i + 1, 0, [steps[i % len(steps)]]), copy=False)
    done.wait()
    elapsed = time.perf_counter() - start
    receiver.join()
    push.close(linger=0)
    pull.close(linger=0)
    ctx.term()
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=2000, help="steps streamed flat out for the throughput figure")
    parser.add_argument("--latency-steps", type=int, default=300, help="steps paced at --rate-hz for the latency")
    parser.add_argument("--rate-hz", type=float, default=20.0)
    parser.add_argument("--control-steps", type=int, default=200, help="twin steps paced at 10 Hz for part 2")
    parser.add_argument("--serve", metavar="KEYS_DIR", help=argparse.SUPPRESS)
    parser.add_argument("--store", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args.store)

    steps = make_steps(16)
    bytes_per_step = sum(v.nbytes for v in steps[0].values() if isinstance(v, np.ndarray))
    raw_rate = raw_zmq_steps_per_s(steps, args.steps)

    with tempfile.TemporaryDirectory() as run_dir:
        keys = create_keys(run_dir, ["actor-0"])
        learner = subprocess.Popen([sys.executable, __file__, "--serve", str(keys)], stdout=subprocess.PIPE, text=True)
        try:
            port = int(learner.stdout.readline().split()[1])
            journal = MemoryJournal()
            with LinkClient(journal, f"127.0.0.1:{port}", str(keys), "actor-0") as client:
                while not client.status().connected:
                    time.sleep(0.01)

                # Throughput: the control loop hands over steps as fast as it can; time until all are acked.
                start = time.perf_counter()
                for i in range(args.steps):
                    journal.append(steps[i % len(steps)])
                while client.status().acked_seq < args.steps:
                    time.sleep(0.001)
                link_rate = args.steps / (time.perf_counter() - start)

                # Latency at a control rate: step appended -> learner's ack seen by the actor. Snapshots
                # published by the learner meanwhile are timed from publish() to the actor holding them.
                appended_s: dict[int, float] = {}
                latencies_s, snapshot_s = [], []
                version = client.status().params_version
                period_s = 1.0 / args.rate_hz
                next_s = time.monotonic()
                acked = client.status().acked_seq
                for i in range(args.latency_steps):
                    appended_s[journal.append(steps[i % len(steps)])] = time.monotonic()
                    next_s += period_s
                    while time.monotonic() < next_s:
                        now_acked = client.status().acked_seq
                        now = time.monotonic()
                        latencies_s += [now - appended_s[s] for s in range(acked + 1, now_acked + 1)]
                        acked = now_acked
                        snap = client.latest_params()
                        if snap is not None and snap.version > version:
                            if version >= 0:  # the first one may have waited for the connection
                                snapshot_s.append(now - snap.metadata["published_at_s"])
                            version = snap.version
                        time.sleep(0.001)
                status = client.status()
        finally:
            learner.kill()
            learner.wait()

    system = whole_path(args.steps // 4, args.control_steps)
    lat_ms = np.array(latencies_s) * 1000
    snap_ms = np.array(snapshot_s) * 1000
    print(json.dumps({
        "benchmark": "link_speed",
        "steps_per_s": round(link_rate, 1),
        "target_steps_per_s": 200,
        "bytes_per_step": bytes_per_step,
        "mb_per_s": round(link_rate * bytes_per_step / 1e6, 1),
        "raw_zmq_steps_per_s": round(raw_rate, 1),
        "link_over_raw_zmq": round(link_rate / raw_rate, 3),
        "step_to_ack_ms_p50": round(float(np.percentile(lat_ms, 50)), 2),
        "step_to_ack_ms_p99": round(float(np.percentile(lat_ms, 99)), 2),
        "step_to_ack_samples": len(lat_ms),
        "latency_rate_hz": args.rate_hz,
        "snapshot_bytes": SNAPSHOT_BYTES,
        "snapshot_publish_ms_p50": round(float(np.percentile(snap_ms, 50)), 2) if len(snap_ms) else None,
        "snapshot_publish_ms_max": round(float(snap_ms.max()), 2) if len(snap_ms) else None,
        "snapshots": len(snap_ms),
        "rewinds": status.rewinds,
        "store": "none: ack after a no-op on_steps hook",
        **system,
    }))


def whole_path(flat_out_steps: int, control_steps: int) -> dict:
    """Journal -> link -> learner store, flat out and then from the twin paced at 10 Hz."""
    from dojo.sim import make_env

    steps = make_steps(16)
    with tempfile.TemporaryDirectory() as tmp:
        keys = create_keys(tmp, ["actor-0"])
        learner = subprocess.Popen([sys.executable, __file__, "--serve", str(keys), "--store", f"{tmp}/learner.zarr"],
                                   stdout=subprocess.PIPE, text=True)
        try:
            port = int(learner.stdout.readline().split()[1])
            journal = StoreJournal(f"{tmp}/journal.zarr")
            client = LinkClient(journal, f"127.0.0.1:{port}", str(keys), "actor-0")
            def twin_obs(step: dict) -> dict:  # the twin's pixel observation: 14-D proprioception, two cameras
                return {"front": step["front"], "wrist": step["wrist"], "state": step["state"][:14]}
            start = time.perf_counter()
            journal.begin_episode(source="online", task="bench")
            for i in range(flat_out_steps):
                step = steps[i % len(steps)]
                journal.add_step(twin_obs(step), np.clip(step["action"][:4], -1, 1), 0.0, False, False)
            journal.end_episode(twin_obs(steps[0]), success=False)
            journal.flush()
            while client.status().acked_seq < journal.last_seq():
                time.sleep(0.001)
            store_rate = flat_out_steps / (time.perf_counter() - start)

            # The twin at 10 Hz: step -> journal; a watcher thread timestamps the acks as they arrive.
            env = make_env("pick_cube", obs_mode="pixels", max_episode_steps=10 * control_steps)
            added_s, acked_s, stop = {}, {}, threading.Event()

            def watch() -> None:
                seen = client.status().acked_seq
                while not stop.is_set():
                    now_acked = client.status().acked_seq
                    for seq in range(seen + 1, now_acked + 1):
                        acked_s[seq] = time.monotonic()
                    seen = now_acked
                    time.sleep(0.0005)
            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            clock, rng = WallClock(), np.random.default_rng(0)
            sys.setswitchinterval(0.0005)  # as the actor does when it paces itself
            obs, _ = env.reset(seed=0)
            journal.begin_episode(source="online", task="pick_cube")
            ticks = []
            for _ in range(control_steps):
                next_obs, reward, terminated, truncated, info = env.step(rng.uniform(-1, 1, 4))
                added_s[journal.add_step(obs, info["executed_action"], reward, terminated, truncated)] = time.monotonic()
                obs = next_obs
                clock.wait(env.period_s)  # the twin's physics took its share; the wall clock paces the rest
                ticks.append(time.monotonic())
            journal.end_episode(obs, success=False)
            journal.flush()
            deadline = time.monotonic() + 30
            while client.status().acked_seq < journal.last_seq() and time.monotonic() < deadline:
                time.sleep(0.01)
            stop.set()
            watcher.join()
            client.close()
            journal.close()
            env.close()
        finally:
            learner.kill()
            learner.wait()
    store_ms = np.array([acked_s[s] - t for s, t in added_s.items() if s in acked_s]) * 1000
    period_err_ms = np.abs(np.diff(ticks) - 0.1) * 1000
    return {
        "store_steps_per_s": round(store_rate, 1),
        "store_over_10hz_data_rate": round(store_rate / 10.0, 1),
        "step_to_store_ms_p50": round(float(np.percentile(store_ms, 50)), 1),
        "step_to_store_ms_p99": round(float(np.percentile(store_ms, 99)), 1),
        "step_to_store_ms_p90": round(float(np.percentile(store_ms, 90)), 1),
        "step_to_store_ms_max": round(float(store_ms.max()), 1),
        "step_to_store_samples": len(store_ms),
        "control_steps": control_steps,
        "control_rate_hz": round((len(ticks) - 1) / (ticks[-1] - ticks[0]), 3),
        "period_error_ms_p50": round(float(np.percentile(period_err_ms, 50)), 2),
        "period_error_ms_p99": round(float(np.percentile(period_err_ms, 99)), 2),
    }


if __name__ == "__main__":
    main()
