"""The resumable order of the training stream."""

from __future__ import annotations

import numpy as np


class DataOrder:
    """Position p of the training stream -> example index: one seeded permutation per epoch.

    A function of (seed, position) only, so a resumed run (under any world size) sees exactly the
    examples the uninterrupted run would have seen."""

    def __init__(self, n: int, seed: int):
        if n <= 0:
            raise ValueError("no training examples")
        self.n, self.seed = n, seed
        self._perms: dict[int, np.ndarray] = {}

    def __call__(self, position: int) -> int:
        epoch, i = divmod(int(position), self.n)
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n)}
        return int(self._perms[epoch][i])
