"""Data-parallel updates over a machine's devices with `jax.sharding`: the batch split along its first axis,
the agent's parameters and optimiser state replicated. The jitted update runs unchanged; XLA partitions it
and sums the gradients across devices, so N devices give the update one device would."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


class DataParallel:
    def __init__(self, devices: str | int = 1) -> None:
        """`devices`: how many local devices (the first N), or "all"."""
        available = jax.local_devices()
        text = str(devices)
        if text == "all":
            count = len(available)
        elif text.isdigit() and int(text) >= 1:
            count = int(text)
        else:
            raise ValueError(f"learner.devices must be 'all' or a number >= 1, got {devices!r}")
        if count > len(available):
            raise ValueError(f"learner.devices={count} but this machine has {len(available)} "
                             f"{available[0].platform} device(s)")
        self.count = count
        mesh = Mesh(np.array(available[:count]), ("batch",))
        self._split = NamedSharding(mesh, PartitionSpec("batch"))
        self._replicate = NamedSharding(mesh, PartitionSpec())

    def check_batch_size(self, batch_size: int) -> None:
        if batch_size % self.count:
            raise ValueError(f"a batch of {batch_size} transitions does not split over learner.devices={self.count}: "
                             f"choose a batch size (times utd_ratio) divisible by {self.count}")

    def agent(self, agent):
        return agent if self.count == 1 else jax.device_put(agent, self._replicate)

    def batch(self, batch: dict):
        return batch if self.count == 1 else jax.device_put(batch, self._split)
