"""The reward service: a reward model too large for the robot's machine (a VLM) runs in the learner process and
labels actors' camera frames over the run's authenticated link (`reward.serve=learner`).

The actor asks for a label every `reward.every` steps and on an episode's last step, and waits at most
`reward.deadline_s` for it: a label that is late counts as missed, the step is flagged (`info["reward_missed"]`,
and the episode's `reward_missed` count in the store) and the episode goes on with reward 0. The learner scores
on a thread of its own, so the link keeps acknowledging steps while a model thinks; requests that queue up in
the meantime (several actors) are scored as one batch. While a label is on its way both ends of the link poll
every millisecond instead of every five.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Mapping

import numpy as np

from dojo.threads import join_thread

log = logging.getLogger("dojo.rewards")

INSTRUCTION_KEY = "instruction"  # the request's instruction travels as this scalar of its step


class RewardService:
    """The learner's end: `submit` (called on the link's thread) queues a request; `replies()` hands back the
    answers ready so far as (actor id, reply header) for the link to send."""

    def __init__(self, model, max_batch: int = 16) -> None:
        self.model, self.max_batch = model, max_batch
        self._requests: queue.Queue = queue.Queue()
        self._replies: collections.deque = collections.deque()
        self._stop = threading.Event()
        self.labels = 0
        self._open = 0  # submitted, not yet handed back by replies()
        self._thread = threading.Thread(target=self._run, name="dojo-reward-service", daemon=True)
        self._thread.start()
        log.info("reward service: %s labels actors' frames over the link", model.reward_source)

    def submit(self, actor: str, request_id: int, inputs: Mapping) -> None:
        self._open += 1
        self._requests.put((actor, request_id, dict(inputs)))

    def pending(self) -> bool:
        """Whether a request waits for its answer (the link then polls more often, to send it at once)."""
        return self._open > 0

    def replies(self) -> list[tuple[str, dict]]:
        out = []
        while self._replies:
            out.append(self._replies.popleft())
        self._open -= len(out)
        return out

    def close(self) -> None:
        self._stop.set()
        join_thread(self._thread, 30.0, "the reward service's thread")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                batch = [self._requests.get(timeout=0.1)]
            except queue.Empty:
                continue
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._requests.get_nowait())
                except queue.Empty:
                    break
            groups = collections.defaultdict(list)  # requests that can go through the model together
            for request in batch:
                inputs = request[2]
                groups[(inputs.get(INSTRUCTION_KEY),
                        tuple(sorted((k, np.shape(v)) for k, v in inputs.items() if k != INSTRUCTION_KEY)))
                       ].append(request)
            for group in groups.values():
                self._label(group)

    def _label(self, group: list) -> None:
        first = group[0][2]
        instruction = first.get(INSTRUCTION_KEY) or None
        keys = [k for k in first if k != INSTRUCTION_KEY and not isinstance(first[k], (str, bool, int, float))]
        stacked = {k: np.stack([np.asarray(inputs[k]) for _, _, inputs in group]) for k in keys}
        state = stacked.pop("state", None)
        try:
            scores, success = self.model.verdict(stacked, instruction, state=state)
        except Exception as err:  # the actor hears why (bad frames, an instruction the model does not know)
            for actor, request_id, _ in group:
                self._replies.append((actor, {"kind": "score", "id": request_id, "error": str(err)[:500]}))
            return
        for i, (actor, request_id, _) in enumerate(group):
            self._replies.append((actor, {
                "kind": "score", "id": request_id, "value": float(scores[i]),
                "success": None if success is None else bool(success[i]), "source": self.model.reward_source}))
        self.labels += len(group)


class RemoteReward:
    """The actor's end: `label` asks the learner's reward service through `client` (a LinkClient) and waits at
    most `deadline_s`. It returns (score, success) or None when the label did not come in time. A reply from
    another model than the actor's manifest names (`expect_source`), or an error, raises: the run's two ends
    disagree about the model, which no retry mends."""

    def __init__(self, client, deadline_s: float, expect_source: str = "") -> None:
        self.client, self.deadline_s, self.expect_source = client, float(deadline_s), expect_source
        self.round_trips_ms: list[float] = []
        self.missed = 0

    def label(self, frames: Mapping[str, np.ndarray], instruction: str = "",
              state: np.ndarray | None = None) -> tuple[float, bool | None] | None:
        inputs = {**{k: np.asarray(v) for k, v in frames.items()}, INSTRUCTION_KEY: instruction or ""}
        if state is not None:
            inputs["state"] = np.asarray(state, np.float32)
        started = time.monotonic()
        request_id = self.client.request_score(inputs)
        while (reply := self.client.score_reply(request_id)) is None:
            if time.monotonic() - started >= self.deadline_s:
                self.client.forget_score(request_id)
                self.missed += 1
                return None
            time.sleep(0.0005)
        if "error" in reply:
            raise ValueError(f"the learner's reward service refused the frames: {reply['error']}")
        if self.expect_source and reply.get("source") != self.expect_source:
            raise ValueError(f"the learner's reward service runs {reply.get('source')}, this actor's reward.model "
                             f"is {self.expect_source}: give both the same model folder")
        self.round_trips_ms.append((time.monotonic() - started) * 1000.0)
        return float(reply["value"]), reply.get("success")

    def summary(self) -> dict:
        trips = np.asarray(self.round_trips_ms)
        return {"reward_labels": len(trips), "reward_missed": self.missed,
                "reward_round_trip_ms_median": round(float(np.median(trips)), 2) if len(trips) else None,
                "reward_round_trip_ms_p95": round(float(np.percentile(trips, 95)), 2) if len(trips) else None}
