"""Monitors for SSL pretraining: pictures, collapse warnings, non-finite loss guard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lit_ssl.callbacks.run_folder import run_dir
from lit_ssl.data.batch import Batch, as_batch
from lit_ssl.data_info import data_info
from lit_ssl.figures import save_embedding_plot, save_image_grid
from lit_ssl.step_output import step_output

__all__ = [
    "CollapseMonitor",
    "EmbeddingPlot",
    "FiniteLossGuard",
    "ReconstructionGrid",
    "effective_rank",
]


def _log_figure(trainer: L.Trainer, tag: str, path: Path, step: int) -> None:
    """Also send a saved PNG to TensorBoard when a TensorBoard logger is attached."""
    for logger in trainer.loggers:
        experiment = getattr(logger, "experiment", None)
        if hasattr(experiment, "add_image"):
            import matplotlib.image as mpimg

            image = torch.from_numpy(mpimg.imread(path)[..., :3]).permute(2, 0, 1)
            experiment.add_image(tag, image, global_step=step)


class ReconstructionGrid(Callback):
    """Save input / masked input / reconstruction grids for reconstruction heads.

    Uses the first training batch of each logged epoch and ``SSLModule.reconstructions``
    (run on every DDP rank, saved by rank 0); heads that reconstruct nothing
    (joint-embedding) are skipped silently by design.
    Figures land in ``<run folder>/figures/reconstructions_epoch<N>.png``.

    Args:
        every_n_epochs: save every this many epochs.
        num_images: images per row.
    """

    def __init__(self, every_n_epochs: int = 1, num_images: int = 8) -> None:
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self._batch: Batch | None = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx == 0:
            self._batch = pl_module.to_batch(batch).take(self.num_images)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if self._batch is None or (epoch + 1) % self.every_n_epochs:
            return
        # Every rank runs the head (a hybrid's joint-embedding loss gathers across ranks);
        # rank 0 alone saves.
        result = pl_module.reconstructions(self._batch)
        if result is None or not trainer.is_global_zero:
            return
        path = save_image_grid(
            [result.input, result.masked_input, result.reconstruction],
            ["input", "masked input", "reconstruction"],
            run_dir(trainer) / "figures" / f"reconstructions_epoch{epoch:03d}.png",
        )
        _log_figure(trainer, "reconstructions", path, trainer.global_step)


class EmbeddingPlot(Callback):
    """At the end of pretraining, plot a 2-D PCA of pooled embeddings coloured by class.

    Embeds up to ``max_samples`` images of the validation loader (first view), labels from
    the batches (``-1`` = unlabeled); class names from the data's ``class_names`` if any
    (:func:`lit_ssl.data_info.data_info`).
    Saved to ``<run folder>/figures/embeddings_pca.png``.
    """

    def __init__(self, max_samples: int = 512) -> None:
        self.max_samples = max_samples

    @torch.no_grad()
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loaders = trainer.val_dataloaders
        if not trainer.is_global_zero or loaders is None:
            return
        loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
        features, labels = self._embed(loader, pl_module)
        if features is None:
            return
        class_names = list(data_info(trainer).class_names) or None
        path = save_embedding_plot(
            features, labels, class_names, run_dir(trainer) / "figures" / "embeddings_pca.png"
        )
        _log_figure(trainer, "embeddings_pca", path, trainer.global_step)

    def _embed(self, loader, pl_module) -> tuple[Tensor | None, Tensor | None]:
        was_training = pl_module.training
        pl_module.eval()
        feats, labs, count = [], [], 0
        for raw in loader:
            batch = as_batch(raw)
            images = batch.views[0]
            feats.append(pl_module(images.to(pl_module.device)).float().cpu())
            labs.append(batch.labels.cpu())
            count += images.shape[0]
            if count >= self.max_samples:
                break
        pl_module.train(was_training)
        if count < 3:
            return None, None
        return torch.cat(feats)[: self.max_samples], torch.cat(labs)[: self.max_samples]


def effective_rank(embeddings: Tensor) -> Tensor:
    """RankMe (Garrido et al. 2023): exp of the entropy of normalised singular values."""
    singular = torch.linalg.svdvals(embeddings.float() - embeddings.float().mean(dim=0))
    p = singular / singular.sum().clamp_min(1e-12) + 1e-12
    return torch.exp(-(p * p.log()).sum())


class CollapseMonitor(Callback):
    """Warn when embeddings collapse.

    Collects the head's projector embeddings of each training epoch (on the device, no
    host syncs per step), gathers them over DDP ranks at epoch end and logs
    ``collapse/std_ratio`` (per-dimension std of L2-normalised embeddings times sqrt(D):
    about 1 when healthy, 0 when collapsed) and ``collapse/effective_rank``; warns when
    either is below its threshold.

    Args:
        min_std_ratio: warn below this std ratio.
        min_effective_rank: warn below this effective rank.
        max_samples: embeddings kept per epoch.
    """

    def __init__(
        self, min_std_ratio: float = 0.1, min_effective_rank: float = 2.0, max_samples: int = 2048
    ) -> None:
        self.min_std_ratio = min_std_ratio
        self.min_effective_rank = min_effective_rank
        self.max_samples = max_samples
        self._kept: list[Tensor] = []
        self._count = 0
        self.last: dict[str, float] = {}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._kept, self._count = [], 0

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        step = step_output(outputs)
        output = step.head_output if step is not None else None
        if output is None or output.embeddings is None or self._count >= self.max_samples:
            return
        self._kept.append(output.embeddings.detach())
        self._count += output.embeddings.shape[0]

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._count < 2:
            return
        embeddings = torch.cat(self._kept)
        if trainer.world_size > 1:  # every rank holds as many (same-size batches): one gather
            embeddings = pl_module.all_gather(embeddings).flatten(0, 1)
        std_ratio = (
            F.normalize(embeddings.float(), dim=1).std(dim=0).mean() * embeddings.shape[1] ** 0.5
        )
        rank = effective_rank(embeddings)
        # Same values on every rank (gathered); sync_dist averages equal numbers.
        pl_module.log("collapse/std_ratio", std_ratio, sync_dist=True)
        pl_module.log("collapse/effective_rank", rank, sync_dist=True)
        self.last = {"std_ratio": float(std_ratio), "effective_rank": float(rank)}
        if self.last["std_ratio"] < self.min_std_ratio or rank < self.min_effective_rank:
            rank_zero_warn(
                f"Embedding collapse suspected at epoch {trainer.current_epoch}: std ratio "
                f"{self.last['std_ratio']:.3f} (healthy ~1, threshold {self.min_std_ratio}), "
                f"effective rank {self.last['effective_rank']:.2f} (threshold "
                f"{self.min_effective_rank}). Lower the learning rate, check the variance/"
                "covariance weights or the EMA momentum, and that views differ.",
                stacklevel=2,
            )


class FiniteLossGuard(Callback):
    """Stop training with a clear error when the loss becomes NaN or Inf.

    The check accumulates a flag on the device and reads it every ``check_every_n_steps``
    steps, so it costs one host sync per window. Raising (instead of a soft stop) keeps
    Lightning from writing a checkpoint of broken weights: the last good checkpoint of
    ``ModelCheckpoint`` stays in place and is named in the message.
    """

    def __init__(self, check_every_n_steps: int = 10) -> None:
        if check_every_n_steps < 1:
            raise ValueError("check_every_n_steps must be >= 1.")
        self.check_every_n_steps = check_every_n_steps
        self._bad: Tensor | None = None

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            bad = ~torch.isfinite(loss.detach())
            self._bad = bad if self._bad is None else self._bad | bad
        if (batch_idx + 1) % self.check_every_n_steps == 0:  # same batches on every rank
            self._check(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def _check(self, trainer: L.Trainer) -> None:
        """Read the flag; under DDP every rank reaches here together and all stop if one saw
        a non-finite loss (one all-reduce per window), so no rank is left waiting."""
        bad = self._bad is not None and bool(self._bad)
        self._bad = None
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            return
        checkpoint = getattr(trainer.checkpoint_callback, "last_model_path", "") or getattr(
            trainer.checkpoint_callback, "best_model_path", ""
        )
        where = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint yet"
        raise FloatingPointError(
            f"Loss became NaN/Inf within the {self.check_every_n_steps} steps before global step "
            f"{trainer.global_step} (epoch {trainer.current_epoch}); training stopped and {where}. "
            "Lower the learning rate, use warmup, or train in float32 (precision='32')."
        )
