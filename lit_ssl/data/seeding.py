"""Loader seeds from ``(seed, rank, stage, epoch, build)``: new orders and views for every
loader built, the same ones for a fresh data module with the same seed.

``build`` counts how many times that stage's loader was built in that epoch, so a loader built
again (``reload_dataloaders_every_n_epochs``, or calling ``train_dataloader()`` each epoch)
gives a new order and new views, while a fresh data module with the same seed reproduces the
first one (and a resumed run the same epoch's). Every rank draws its own.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

__all__ = ["STAGE_OFFSET", "LoaderSeeds"]

STAGE_OFFSET = {"train": 0, "val": 1, "test": 2, "predict": 3}


class LoaderSeeds:
    """The seeds of a data module's loaders, one per build.

    Args:
        seed: The data module's seed.

    Examples:
        >>> seeds = LoaderSeeds(0)
        >>> first, again = seeds.next("train", rank=0, epoch=0), seeds.next("train", 0, 0)
        >>> first != again and first == LoaderSeeds(0).next("train", 0, 0)
        True
    """

    def __init__(self, seed: int):
        self.seed = int(seed)
        self.builds: Counter[tuple[str, int]] = Counter()

    def next(self, stage: str, rank: int, epoch: int) -> int:
        """The seed of the next ``stage`` loader built on ``rank`` in ``epoch``."""
        build = self.builds[(stage, epoch)]
        self.builds[(stage, epoch)] += 1
        entropy = [self.seed % 2**64, rank, STAGE_OFFSET[stage], epoch, build]
        return int(np.random.SeedSequence(entropy).generate_state(1)[0])
