"""The learner's RAM mirror of the replay store: holds whole episodes and samples batches fast.

Batches follow the contract in FORMAT.md ("Sampled batches"): n-step returns, frame stacks and
next observations are index arithmetic over rows stored once, so images are never duplicated.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Callable, Mapping

import numpy as np

from dojo.replay.store import SOURCES, Episode, StoreReader, mc_return_to_go

_SOURCE_CODE = {name: code for code, name in enumerate(SOURCES)}


def intervened_runs(intervened: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each maximal run of intervened steps."""
    flags = np.concatenate([[False], np.asarray(intervened, bool), [False]])
    edges = np.flatnonzero(flags[1:] != flags[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def symmetric_ratio(by_source: dict[str, int], demo_ratio: float) -> dict[str, float] | None:
    """RLPD's symmetric sampling as a `sample(source_ratio=...)`: `demo_ratio` of each batch from demos while
    both demos and other steps are held; None (sample what there is) while only one side exists."""
    return {"demo": demo_ratio} if 0 < by_source["demo"] < sum(by_source.values()) else None


@dataclasses.dataclass
class _Followed:
    reader: StoreReader
    obs_keys: tuple[str, ...] | None
    reward_fn: Callable[[Episode], np.ndarray] | None
    copy_interventions: bool = False
    copy_successes: bool = False
    episodes_read: int = 0
    recompute_returns: bool = False  # the store's return settings are not the mirror's


class ReplayMirror:
    """Episodes in ring-buffer arrays of `capacity_steps` rows (steps plus one final observation
    per episode); when full, the oldest whole episodes are dropped.

    Only closed episodes enter the mirror, since n-step targets and Monte-Carlo returns need
    the episode's end. Steps with no following observation (an unfinished episode's last row)
    are never sampled.
    """

    def __init__(self, capacity_steps: int = 1_000_000, *, mc_gamma: float = 0.99,
                 failure_reward: float | None = 0.0) -> None:
        if not isinstance(capacity_steps, (int, np.integer)) or capacity_steps < 2:
            raise ValueError(f"capacity_steps must be an integer >= 2, got {capacity_steps!r}")
        self.capacity = int(capacity_steps)
        self.mc_gamma = mc_gamma
        self.failure_reward = failure_reward
        self._rows: dict[str, np.ndarray] = {}  # "obs/<key>", action, reward, terminal, intervened, mc_return, source
        self._head = 0  # absolute index of the oldest row held
        self._tail = 0  # absolute index one past the newest row
        # Live episodes, oldest first: (first absolute row, rows, source code).
        self._episodes: collections.deque[tuple[int, int, int]] = collections.deque()
        self._num_steps = 0
        self._index_cache: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._followed: list[_Followed] = []  # stores this mirror tails

    # -- filling -----------------------------------------------------------------------------
    @classmethod
    def from_store(
        cls,
        store: str | os.PathLike | StoreReader,
        capacity_steps: int = 1_000_000,
        *,
        obs_keys: tuple[str, ...] | None = None,
        reward_fn: Callable[[Episode], np.ndarray] | None = None,
        mc_gamma: float | None = None,
    ) -> ReplayMirror:
        """Load a store's closed episodes; `tail()` picks up later ones. `obs_keys` limits the
        observation keys held (e.g. state only); `reward_fn(episode) -> (num_steps,)` relabels
        rewards on load (Monte-Carlo returns are then recomputed) without touching the store.
        `mc_gamma`: the discount of the Monte-Carlo returns held (default: the store's)."""
        reader = store if isinstance(store, StoreReader) else StoreReader(store)
        mirror = cls(capacity_steps, mc_gamma=reader.mc_gamma if mc_gamma is None else mc_gamma,
                     failure_reward=reader.failure_reward)
        mirror.follow(reader, obs_keys=obs_keys, reward_fn=reward_fn)
        return mirror

    def follow(self, store: str | os.PathLike | StoreReader, *, obs_keys: tuple[str, ...] | None = None,
               reward_fn: Callable[[Episode], np.ndarray] | None = None, copy_interventions: bool = False,
               copy_successes: bool = False) -> int:
        """Also hold another store's closed episodes (e.g. demos beside each actor's stream); `tail()`
        follows it too. With `copy_interventions` each run of intervened steps is also held as an
        episode of source "demo" (HIL-SERL: the operator's corrections join the demonstrations); with
        `copy_successes` each successful episode is (self-imitation: what worked joins them).
        A store whose returns were stored at another mc_gamma or failure_reward has them recomputed at the
        mirror's on load (a learner holds them at its agent's discount). Returns the steps added now."""
        reader = store if isinstance(store, StoreReader) else StoreReader(store)
        recompute = (reader.mc_gamma, reader.failure_reward) != (self.mc_gamma, self.failure_reward)
        self._followed.append(_Followed(reader, obs_keys, reward_fn, copy_interventions, copy_successes,
                                        recompute_returns=recompute))
        return self._load_new_episodes(self._followed[-1])

    def tail(self) -> int:
        """Read episodes the followed stores closed since the last call; return the new steps added."""
        if not self._followed:
            raise RuntimeError("tail() needs a mirror made with ReplayMirror.from_store or follow()")
        added = 0
        for followed in self._followed:
            followed.reader.refresh()
            added += self._load_new_episodes(followed)
        return added

    def _load_new_episodes(self, followed: _Followed) -> int:
        reader = followed.reader
        added = 0
        stop = reader.num_episodes
        batch_rows = 0
        first = followed.episodes_read
        for i in range(followed.episodes_read, stop + 1):
            # Read in blocks of ~64k rows: one zarr read per array per block, bounded memory.
            if i == stop or batch_rows >= 65536:
                for ep in reader.read_episodes(first, i, followed.obs_keys):
                    added += self._add_stored(ep, followed.reward_fn, followed.copy_interventions,
                                              followed.copy_successes, followed.recompute_returns)
                first, batch_rows = i, 0
            if i < stop:
                batch_rows += reader.episodes[i].stop_row - reader.episodes[i].start_row
        followed.episodes_read = stop
        return added

    def _add_stored(self, ep: Episode, reward_fn: Callable[[Episode], np.ndarray] | None,
                    copy_interventions: bool = False, copy_successes: bool = False,
                    recompute_returns: bool = False) -> int:
        if ep.info.num_steps == 0:  # a crashed writer's single committed row: nothing to learn from
            return 0
        reward, mc_return = ep.reward, ep.mc_return
        if reward_fn is not None:
            reward = np.asarray(reward_fn(ep), dtype=np.float32)
            if reward.shape != ep.reward.shape:
                raise ValueError(f"reward_fn returned shape {reward.shape}, expected {ep.reward.shape}")
        if reward_fn is not None or recompute_returns:
            mc_return = mc_return_to_go(reward, ep.terminal, self.mc_gamma, self.failure_reward)
        added = self.add_episode(ep.obs, ep.action, reward, ep.terminal, ep.truncated, ep.intervened,
                                 source=ep.info.source, mc_return=mc_return, _finished=ep.info.finished)
        if copy_interventions:
            for a, b in intervened_runs(ep.intervened):
                truncated = np.zeros(b - a, bool)
                truncated[-1] = not ep.terminal[b - 1]  # the operator handed back: cut, not an end
                self.add_episode({k: v[a:b + 1] for k, v in ep.obs.items()}, ep.action[a:b], reward[a:b],
                                 ep.terminal[a:b], truncated, ep.intervened[a:b], source="demo",
                                 mc_return=mc_return[a:b])
        if copy_successes and ep.info.success and ep.info.source != "demo":
            self.add_episode(ep.obs, ep.action, reward, ep.terminal, ep.truncated, ep.intervened, source="demo",
                             mc_return=mc_return, _finished=ep.info.finished)
        return added

    def add_episode(
        self,
        obs: Mapping[str, np.ndarray],
        action: np.ndarray,
        reward: np.ndarray,
        terminal: np.ndarray,
        truncated: np.ndarray,
        intervened: np.ndarray | None = None,
        source: str = "online",
        mc_return: np.ndarray | None = None,
        *,
        _finished: bool = True,
    ) -> int:
        """Add a whole episode: obs[key] has T+1 rows (the last is the final observation), the
        per-step arrays T. Returns T, the steps added."""
        action = np.asarray(action, dtype=np.float32)
        T = action.shape[0] if action.ndim == 2 else -1
        if T < 1:
            raise ValueError(f"action must have shape (T, A) with T >= 1, got {action.shape}")
        reward = self._steps("reward", reward, T, np.float32)
        terminal = self._steps("terminal", terminal, T, bool)
        truncated = self._steps("truncated", truncated, T, bool)
        intervened = self._steps("intervened", np.zeros(T, bool) if intervened is None else intervened, T, bool)
        if _finished and np.any(terminal[:-1] | truncated[:-1]):
            raise ValueError("terminal/truncated may only be set on an episode's last step")
        if source not in _SOURCE_CODE:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        if mc_return is None:
            mc_return = mc_return_to_go(reward, terminal, self.mc_gamma, self.failure_reward)
        mc_return = self._steps("mc_return", mc_return, T, np.float32)
        if not isinstance(obs, Mapping) or not obs:
            raise ValueError("obs must be a non-empty dict of arrays with T+1 rows")
        obs = {k: np.asarray(v) for k, v in obs.items()}
        for k, v in obs.items():
            if v.ndim < 1 or v.shape[0] != T + 1:
                raise ValueError(f"obs[{k!r}] has {v.shape[0] if v.ndim else 0} rows, expected T+1 = {T + 1}")
        L = T + 1
        if L > self.capacity:
            raise ValueError(f"an episode of {L} rows does not fit in capacity_steps={self.capacity}")
        row_values = {f"obs/{k}": v for k, v in obs.items()}
        pad = np.zeros(1, np.float32)
        row_values.update(
            action=np.concatenate([action, np.zeros((1, action.shape[1]), np.float32)]),
            reward=np.concatenate([reward, pad]),
            terminal=np.append(terminal, False),
            intervened=np.append(intervened, False),
            mc_return=np.concatenate([mc_return, pad]),
            source=np.full(L, _SOURCE_CODE[source], np.int8),  # per row: a batch reads it by index
        )
        self._ensure_storage(row_values, L)
        while self._episodes and self._tail + L - self._head > self.capacity:
            _, rows, _ = self._episodes.popleft()
            self._head += rows
            self._num_steps -= rows - 1
        phys = np.arange(self._tail, self._tail + L) % self.capacity
        for name, values in row_values.items():
            self._rows[name][phys] = values
        self._episodes.append((self._tail, L, _SOURCE_CODE[source]))
        self._tail += L
        self._num_steps += T
        self._index_cache.clear()
        return T

    @staticmethod
    def _steps(name: str, values, T: int, dtype) -> np.ndarray:
        values = np.asarray(values, dtype=dtype).reshape(-1)
        if values.shape != (T,):
            raise ValueError(f"{name} has {values.size} values, expected T = {T} (one per action)")
        if dtype is np.float32 and not np.all(np.isfinite(values)):
            raise ValueError(f"{name} must be finite, got {values}")
        return values

    def _ensure_storage(self, row_values: dict[str, np.ndarray], L: int) -> None:
        """Allocate lazily and grow by doubling (until capacity) so a small mirror stays small."""
        if self._rows:
            expected = {k: (v.shape[1:], v.dtype) for k, v in self._rows.items()}
            got = {k: (v.shape[1:], v.dtype) for k, v in row_values.items()}
            if set(got) != set(expected):
                raise ValueError(f"episode has arrays {sorted(got)}, expected {sorted(expected)}")
            for k, (shape, dtype) in got.items():
                if shape != expected[k][0] or dtype != expected[k][1]:
                    raise ValueError(f"{k} has rows of {shape} {dtype}, expected {expected[k][0]} {expected[k][1]}")
        allocated = next(iter(self._rows.values())).shape[0] if self._rows else 0
        needed = min(self.capacity, self._tail + L)
        if allocated >= needed:
            return
        size = min(self.capacity, max(needed, 2 * allocated, 1024))
        for k, v in row_values.items():
            grown = np.zeros((size, *v.shape[1:]), v.dtype)
            if allocated:
                grown[:allocated] = self._rows[k]
            self._rows[k] = grown

    # -- sampling ----------------------------------------------------------------------------
    @property
    def num_steps(self) -> int:
        return self._num_steps

    def __len__(self) -> int:
        return self._num_steps

    def steps_by_source(self) -> dict[str, int]:
        counts = dict.fromkeys(SOURCES, 0)
        for _, rows, code in self._episodes:
            counts[SOURCES[code]] += rows - 1
        return counts

    def _index(self, codes: tuple[int, ...]):
        """(first row, rows, cumulative steps) of the live episodes from `codes`, cached."""
        if codes not in self._index_cache:
            eps = [(s, n) for s, n, c in self._episodes if c in codes and n > 1]
            starts = np.array([s for s, _ in eps], np.int64)
            rows = np.array([n for _, n in eps], np.int64)
            self._index_cache[codes] = (starts, rows, np.cumsum(rows - 1))
        return self._index_cache[codes]

    def _draw(self, codes: tuple[int, ...], count: int, rng: np.random.Generator):
        starts, rows, cum = self._index(codes)
        if count and (cum.size == 0 or cum[-1] == 0):
            names = [SOURCES[c] for c in codes]
            raise ValueError(f"asked for {count} transitions from sources {names}, but the mirror holds none")
        k = rng.integers(0, cum[-1], size=count) if count else np.zeros(0, np.int64)
        e = np.searchsorted(cum, k, side="right")
        t = starts[e] + (k - (cum[e] - (rows[e] - 1)))
        return t, starts[e], starts[e] + rows[e] - 1

    def _groups(self, batch_size: int, source_ratio: Mapping[str, float] | None) -> list[tuple[tuple[int, ...], int]]:
        every = tuple(range(len(SOURCES)))
        if source_ratio is None:
            return [(every, batch_size)]
        groups, total, named = [], 0, set()
        for name, fraction in source_ratio.items():
            # "demo+intervention" draws from both sources as one group (HIL-SERL's demo buffer).
            parts = name.split("+")
            for part in parts:
                if part not in _SOURCE_CODE:
                    raise ValueError(f"source_ratio key {name!r} names {part!r}, not a source; expected "
                                     f"sources from {SOURCES}, joined by '+'")
            if not 0.0 <= fraction <= 1.0:
                raise ValueError(f"source_ratio[{name!r}] must be in [0, 1], got {fraction}")
            count = round(fraction * batch_size)
            groups.append((tuple(_SOURCE_CODE[p] for p in parts), count))
            total += count
            named.update(parts)
        if total > batch_size:
            raise ValueError(f"source_ratio {dict(source_ratio)} asks for {total} > batch_size {batch_size} transitions")
        rest = tuple(c for c in every if SOURCES[c] not in named)
        if batch_size - total:
            if not rest:
                raise ValueError(f"source_ratio {dict(source_ratio)} leaves {batch_size - total} transitions "
                                 "with no source to draw them from (fractions must sum to 1)")
            groups.append((rest, batch_size - total))
        return [g for g in groups if g[1] > 0]

    def sample(
        self,
        batch_size: int,
        rng: np.random.Generator,
        *,
        n_step: int = 1,
        gamma: float = 0.99,
        frame_stack: int = 1,
        source_ratio: Mapping[str, float] | None = None,
    ) -> dict:
        """A batch as in FORMAT.md. With `source_ratio` the named sources' draws come first."""
        if batch_size < 1 or n_step < 1 or frame_stack < 1:
            raise ValueError(f"batch_size, n_step and frame_stack must be >= 1, got {batch_size}, {n_step}, {frame_stack}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        if self._num_steps == 0:
            raise ValueError("cannot sample from an empty mirror")
        parts = [self._draw(codes, count, rng) for codes, count in self._groups(batch_size, source_ratio)]
        t, first, last = (np.concatenate(x) for x in zip(*parts))

        # n-step window: n' = min(n, steps to the episode's end); rows past the end are masked.
        n_eff = np.minimum(n_step, last - t)
        k = np.arange(n_step)
        valid = k[None, :] < n_eff[:, None]
        window = np.minimum(t[:, None] + k[None, :], last[:, None]) % self.capacity
        reward = (self._rows["reward"][window] * valid * gamma ** k[None, :]).sum(axis=1)
        ended = (self._rows["terminal"][window] & valid).any(axis=1)
        discount = np.where(ended, 0.0, float(gamma) ** n_eff)

        phys = t % self.capacity
        return {
            "obs": self._stack(t, first, frame_stack),
            "next_obs": self._stack(t + n_eff, first, frame_stack),
            "action": self._rows["action"][phys],
            "reward": reward.astype(np.float32),
            "discount": discount.astype(np.float32),
            "mc_return": self._rows["mc_return"][phys],
            "intervened": self._rows["intervened"][phys],
            "source": self._rows["source"][phys],
            "terminal": self._rows["terminal"][phys],
        }

    def _stack(self, t: np.ndarray, first: np.ndarray, frame_stack: int) -> dict[str, np.ndarray]:
        """Observations at rows t (B,) or, stacked, t-S+1..t (B, S), repeating the episode's first."""
        if frame_stack == 1:
            idx = t % self.capacity
        else:
            offsets = np.arange(1 - frame_stack, 1)
            idx = np.maximum(t[:, None] + offsets[None, :], first[:, None]) % self.capacity
        return {k[4:]: v[idx] for k, v in self._rows.items() if k.startswith("obs/")}
