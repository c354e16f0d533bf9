"""``DataWait``: how much of each training step is spent waiting for the next batch.

On a fast GPU the data path (decode, crop, augment in the workers) is the first bottleneck; a
starved GPU looks busy in ``nvidia-smi`` and slow in images/s. ``DataWait`` times, on the host,
the gap between the end of one training batch and the start of the next (the loader's
``next()``) against the whole step, logs it as ``perf/data_wait`` (share of step time, the epoch's
mean over steps) and, on a GPU, says once in one line what to change when the share stays above
``warn_above``. It reads host clocks only: no device sync.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning as L

from lit_ssl.data_info import data_info

__all__ = ["DataWait"]

log = logging.getLogger(__name__)


class DataWait(L.Callback):
    """Log ``perf/data_wait``: the share of training-step time spent waiting for data.

    Args:
        warn_above: on a GPU, warn once when the mean share over ``window`` steps exceeds it.
        window: steps averaged before deciding to warn (the first ``skip`` are left out:
            workers start up then).
        skip: first steps of each fit left out of the warning decision.

    Example:
        >>> trainer = L.Trainer(callbacks=[DataWait()])  # doctest: +SKIP
    """

    def __init__(self, warn_above: float = 0.3, window: int = 50, skip: int = 5) -> None:
        if not 0.0 < warn_above < 1.0:
            raise ValueError(f"warn_above={warn_above}: give a share in (0, 1), e.g. 0.3.")
        if window < 1 or skip < 0:
            raise ValueError(f"window={window}, skip={skip}: window >= 1 and skip >= 0.")
        self.warn_above, self.window, self.skip = warn_above, window, skip
        self._end: float | None = None
        self._start: float | None = None
        self._wait = 0.0
        self._shares: list[float] = []
        self._warned = False
        self._workers: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._workers = data_info(trainer).num_workers

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end = time.perf_counter()  # the first batch's fetch counts from here

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any):
        now = time.perf_counter()
        self._wait = 0.0 if self._end is None else now - self._end
        self._start = now

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any):
        now = time.perf_counter()
        if self._start is None:
            return
        step = now - self._start + self._wait
        share = self._wait / step if step > 0 else 0.0
        self._end = now
        pl_module.log("perf/data_wait", share, on_step=False, on_epoch=True, batch_size=1)
        self._decide(trainer, share)

    def _decide(self, trainer: L.Trainer, share: float) -> None:
        if self._warned or not _on_gpu(trainer):
            return
        self._shares.append(share)
        counted = self._shares[self.skip :]
        if len(counted) < self.window:
            return
        mean = sum(counted) / len(counted)
        self._shares.clear()
        if mean > self.warn_above:
            self._warned = True
            workers = "?" if self._workers is None else self._workers
            log.warning(
                "the GPU waits for data %.0f%% of each step (perf/data_wait): raise "
                "--data.num_workers (now %s), use --data.augment_on device, cache_images or "
                "crops_per_frame; see docs/gpu.md",
                100 * mean,
                workers,
            )


def _on_gpu(trainer: L.Trainer) -> bool:
    root = getattr(trainer.strategy, "root_device", None)
    return getattr(root, "type", "cpu") == "cuda"
