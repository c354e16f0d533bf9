"""DefectClassifier: a timm backbone (e.g. from SSL pretraining) fine-tuned into a defect
classifier, with class-balanced losses, a validation-chosen threshold and metrics.

Batch contract: :class:`lit_ssl.data.Batch` records (``FactoryDataModule(task="classify")``:
the image is ``views[0]``, with ``labels`` and ``paths``) or a plain DataLoader's
``(images, labels)``, ``(images, labels, paths)`` or bare ``images``, all read through
:func:`lit_ssl.data.as_batch`. Images are float ``(B, C, H, W)`` in [0, 1]; labels are class
indices into ``class_names`` (-1 unknown, predict only).

One inference path: the torch model ``self.model`` (:class:`~lit_ssl.classify.model.
ClassifierModel`: backbone, head, tiles, defect scores ``1 - p(good)`` and the decision rule
``defect = score > threshold`` of :mod:`lit_ssl.decision`, then the most likely defect class)
serves training, validation, test, predict and the ONNX export alike; this LightningModule
adds the losses, the threshold choice, metrics and files. Checkpoints keep the torch model's
keys (``backbone.*``, ``head.*``, ``threshold``, ``input_size``; ``lit_ssl.state_keys``).

Tiles (``tile_size``): the image score is the maximum tile score (``lit_ssl.classify.tiles``).
Input size: an untiled classifier scores images (validation, test, predict) only at the size
it was trained at (``input_size``, in the checkpoint; ``lit_ssl.input_size``); tiled ones take
whole frames of any size. Non-finite validation scores stop the fit with an error.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor, nn
from torchmetrics.aggregation import CatMetric

from lit_ssl import checkpoints
from lit_ssl.backbone import Backbone
from lit_ssl.classify.class_weights import log_weights, train_class_counts
from lit_ssl.classify.export import classifier_metadata
from lit_ssl.classify.head import FeatureNorm, build_head
from lit_ssl.classify.loss import ClassifierLoss
from lit_ssl.classify.metrics import DefectMetrics, log_stage_metrics
from lit_ssl.classify.model import ClassifierModel
from lit_ssl.classify.options import (
    build_backbone,
    check_classes,
    check_options,
    check_tile_backbone,
    data_class_names,
)
from lit_ssl.classify.rows import prediction_rows
from lit_ssl.classify.scoring import defect_scores
from lit_ssl.classify.thresholds import validation_threshold
from lit_ssl.classify.tiles import check_tiling
from lit_ssl.data.batch import as_batch
from lit_ssl.data.table import good_index
from lit_ssl.losses import balanced_class_weights, focal_loss
from lit_ssl.optim import decay_groups
from lit_ssl.per_type import PerTypeEvidence, data_type_names, log_per_type, name_types
from lit_ssl.torch_model import AroundTorchModel, flatten_child_keys

__all__ = [
    "DefectClassifier",
    "FeatureNorm",
    "balanced_class_weights",
    "defect_scores",
    "focal_loss",
]

log = logging.getLogger(__name__)


class DefectClassifier(AroundTorchModel, checkpoints.SafeCheckpointing, L.LightningModule):
    """Defect classifier on a timm backbone: binary (good vs defect) or defect types.

    Args:
        backbone: timm name or a ``Backbone``. ``None``: the architecture stored with
            ``weights``, else ``"resnet18"``. A name that contradicts the weights' json
            raises an error.
        weights: ``SSLModule.export_backbone`` output (``.safetensors`` + ``.json``) or an
            ``SSLModule`` Lightning checkpoint (``.ckpt``, its ``backbone.*`` weights).
        class_names: class names in label order; ``None`` means good vs defect, named as the
            datamodule names them (``[good_class, "defect"]`` without one).
        good_class: name of the good (non-defective) class in ``class_names``.
        in_chans: input channels; ``None``: from the weights, else 3.
        image_size: input size for fixed-size architectures (ViTs); ``None``: from weights.
        head: ``"linear"`` or ``"mlp"`` (one hidden layer of ``hidden_dim``) on pooled features.
        feature_norm: standardise pooled features per dimension before the head
            (``FeatureNorm``, as in MAE linear probing); SSL features come at any scale.
        hidden_dim: MLP head width.
        dropout: dropout before the last linear layer.
        loss: ``"cross_entropy"`` or ``"focal"`` (``lit_ssl.losses.focal_loss``).
        class_weights: ``"balanced"`` (``n / (C * n_c)`` from the training labels, computed
            once at the start of fit), ``"none"``, or explicit per-class weights.
        label_smoothing: label smoothing of the (focal) cross-entropy.
        focal_gamma: focusing parameter of the focal loss.
        lr: learning rate of the head (the backbone's comes from ``DefectFinetuning``).
        weight_decay: AdamW weight decay (not on norms and biases).
        threshold_mode: ``"recall"`` (highest threshold catching ``target_recall`` of the
            validation defects) or ``"f1"`` (best validation F1).
        target_recall: defect recall the threshold must reach on validation.
        default_threshold: threshold until a validation epoch has chosen one.
        save_figures: write confusion matrix / ROC PNGs into ``<log_dir>/figures``.
        write_predictions: at the end of ``trainer.predict`` write ``predictions.csv`` (and
            ``skipped.txt`` naming unreadable files) into the run folder
            (``lit_ssl.classify.predictions.PredictionsCSVWriter``); with tiles also a
            heat-map PNG per flagged image into ``heatmaps/`` (``lit_ssl.classify.heatmaps``).
        tile_size: score frames tile by tile (high-resolution frames at native detail): the
            backbone sees ``tile_size`` squares of the frame (zero-padded at the bottom/right
            to cover it, never resized), all tiles of a batch in one forward. The image's
            defect score is the maximum tile score, its probabilities those of that tile.
            Trained end to end on image labels (multiple-instance: the loss of the
            maximum-scoring tile), or on tile labels from ``batch.masks`` where known.
            ``None``: the whole image in one forward.
        tile_stride: pixels between tile origins (``tile_size`` when ``None``; smaller
            strides overlap the tiles).
        pretrained: start the backbone (given by name) from timm's own pretrained weights
            (needs the hub; see ``Backbone``).
    """

    module_kind = "DefectClassifier"  # the checkpoint marker ``lit-ssl export`` routes by

    def __init__(
        self,
        backbone: str | Backbone | None = None,
        weights: str | None = None,
        class_names: list[str] | None = None,
        good_class: str = "good",
        in_chans: int | None = None,
        image_size: int | None = None,
        head: Literal["linear", "mlp"] = "linear",
        feature_norm: bool = True,
        hidden_dim: int = 256,
        dropout: float = 0.0,
        loss: Literal["cross_entropy", "focal"] = "cross_entropy",
        class_weights: Literal["balanced", "none"] | list[float] = "balanced",
        label_smoothing: float = 0.0,
        focal_gamma: float = 2.0,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        threshold_mode: Literal["f1", "recall"] = "recall",
        target_recall: float = 0.99,
        default_threshold: float = 0.5,
        save_figures: bool = True,
        write_predictions: bool = True,
        tile_size: int | None = None,
        tile_stride: int | None = None,
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        self._classes_from_data = class_names is None  # good vs defect, as the data names them
        classes = check_classes(class_names, good_class)
        check_options(head, loss, threshold_mode, target_recall, class_weights, classes)
        tile_stride = check_tiling(tile_size, tile_stride)
        backbone = build_backbone(backbone, weights, in_chans, image_size, pretrained)
        check_tile_backbone(backbone, tile_size)
        # save_hyperparameters reads these locals: record the resolved values, so the logged
        # hparams agree with the datamodule's (Lightning refuses conflicting duplicates)
        in_chans, image_size = backbone.in_chans, backbone.image_size
        self.save_hyperparameters(ignore=["backbone", "image_size"])
        self.hparams.update(
            backbone=backbone.name,
            in_chans=backbone.in_chans,
            image_size=backbone.image_size,
            weights=None,  # the weights live in the state dict from now on
            pretrained=False,
            class_names=classes,
            tile_stride=tile_stride,
        )
        if backbone.image_size is None:  # any size: no key to disagree with the datamodule's
            self.hparams.pop("image_size")
        self.class_names = classes
        net = build_head(backbone.embed_dim, len(classes), head, feature_norm, hidden_dim, dropout)
        self.model = ClassifierModel(
            backbone, net, classes.index(good_class), tile_size, tile_stride, default_threshold
        )
        flatten_child_keys(self)
        fixed = class_weights if isinstance(class_weights, list) else [1.0] * len(classes)
        self.register_buffer("class_weights", torch.tensor(fixed, dtype=torch.float32))
        self.loss = ClassifierLoss(loss, class_weights != "none", label_smoothing, focal_gamma)
        self.register_buffer("threshold_from_validation", torch.tensor(False))
        self._size_from_eval = False  # tiles: eval batches' frame size wins (_record_size)
        self.val_metrics = DefectMetrics(classes, self.good_index)
        self.test_metrics = DefectMetrics(classes, self.good_index, suffix="_at_threshold")
        self.test_types = PerTypeEvidence()  # named at test start, from the data
        self.val_scores = CatMetric(nan_strategy="disable")
        self.val_targets = CatMetric(nan_strategy="disable")

    # ------------------------------------------------------------------ the torch model's parts
    @property
    def head(self) -> nn.Module:
        """The torch model's head on pooled features."""
        return self.model.head

    @property
    def good_index(self) -> int:
        """Index of the good class in ``class_names``."""
        return self.model.good_index

    @property
    def tiled(self) -> bool:
        """Whether frames are scored tile by tile (``tile_size`` set)."""
        return self.model.tiled

    @classmethod
    def from_ssl(
        cls,
        module_or_ckpt: L.LightningModule | str | Path,
        class_names: list[str] | None = None,
        **kwargs,
    ) -> DefectClassifier:
        """Classifier on a copy of an ``SSLModule``'s backbone, or on a ``.ckpt`` path's."""
        if isinstance(module_or_ckpt, str | Path):
            return cls(weights=str(module_or_ckpt), class_names=class_names, **kwargs)
        backbone = getattr(module_or_ckpt, "backbone", None)
        if not isinstance(backbone, Backbone):
            raise TypeError(
                f"from_ssl expects an SSLModule or a checkpoint path, got "
                f"{type(module_or_ckpt).__name__} without a lit_ssl Backbone."
            )
        return cls(backbone=copy.deepcopy(backbone).cpu(), class_names=class_names, **kwargs)

    # ------------------------------------------------------------------ inference (the model's)
    def forward(self, images: Tensor) -> Tensor:
        """Class logits ``(B, C)`` of float images in [0, 1]; with tiles, the logits of each
        image's maximum-scoring tile."""
        return self.model.logits(images)

    def forward_tiles(self, images: Tensor) -> Tensor:
        """Tile logits ``(B, T, C)`` (row-major tiles, see ``tile_grid``); one forward."""
        return self.model.tile_logits(images)

    def tile_grid(self, height: int, width: int) -> tuple[int, int]:
        """``(rows, cols)`` of the tiles covering a ``height x width`` frame."""
        return self.model.tile_grid(height, width)

    def predict_scores(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(defect_score (B,), probabilities (B, C))`` with ``score = 1 - p(good)``.

        Raises:
            ValueError: an untiled classifier got images of another size than it was fit at.
        """
        self.model.check_size(images)
        scores, probs, _ = self.model.score(images)
        return scores, probs

    def scores_from_logits(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        """``(defect_score, probabilities)`` from class logits."""
        return defect_scores(logits, self.good_index)

    def decide(self, scores: Tensor, probs: Tensor, threshold: Tensor | float) -> Tensor:
        """Class decisions: good unless ``score > threshold``, else the most likely defect."""
        return self.model.decide(scores, probs, threshold)

    # ------------------------------------------------------------------ training
    def _tile_loss(self, images: Tensor, labels: Tensor, masks: Tensor | None) -> Tensor:
        """Class-weighted mean over images of the tile losses (MIL / mask tiles)."""
        tile_labels = self.model.tile_labels(masks, labels) if masks is not None else None
        logits = self.model.tile_logits(images).float()
        return self.loss.tiles(logits, labels, self.good_index, self.class_weights, tile_labels)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        batch = as_batch(batch)
        images, labels = batch.views[0], batch.labels
        self._record_size(images)
        if self.tiled:
            loss = self._tile_loss(images, labels, batch.masks)
        else:
            loss = self.loss(self(images).float(), labels, self.class_weights)
        size = labels.shape[0]  # given: a Batch's paths and None fields confuse the inference
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=size)
        return loss

    def _record_size(self, images: Tensor, evaluation: bool = False) -> None:
        """Record the input size for the export (host-side shapes only: no device sync).

        Untiled: the training size. Tiled: the frame size of validation batches (the whole
        frames a deployment scores) wins over training's (which may be crops).
        """
        if self.tiled and not evaluation and self._size_from_eval:
            return
        self._size_from_eval = self._size_from_eval or evaluation
        self.model.record_size(images)

    def setup(self, stage: str) -> None:
        """Take a two-class datamodule's names (``class_names=None``), else fail early when
        the datamodule's classes differ from this classifier's."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        names = data_class_names(
            getattr(datamodule, "class_names", None), self.class_names, self._classes_from_data
        )
        if names == self.class_names:
            return
        good = good_index(names)
        self.class_names = names
        self.model.good_index = good
        self.hparams.update(class_names=names, good_class=names[good])
        for metrics in (self.val_metrics, self.test_metrics):
            metrics.class_names, metrics.good_index = list(names), good
        log.info("classifier: classes %s (from the data; good class %r)", names, names[good])

    def on_train_epoch_start(self) -> None:
        if isinstance(self.head[0], FeatureNorm):
            self.head[0].reset_running_stats()

    def on_train_start(self) -> None:
        if self.hparams.class_weights == "balanced":
            counts = train_class_counts(self.trainer, self.class_names, self.device)
            self.class_weights.copy_(balanced_class_weights(counts).to(self.class_weights))
            rank_zero_only(log_weights)(self.class_names, counts, self.class_weights)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """AdamW on the trainable parameters (the head only while the backbone is frozen)."""
        groups = decay_groups(self.named_parameters(), self.hparams.weight_decay, set())
        for group in groups:
            group.pop("lars_exclude", None)
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=self.hparams.lr)

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        batch = as_batch(batch)
        images, labels = batch.views[0], batch.labels
        if self.tiled:
            self._record_size(images, evaluation=True)
        self.model.check_size(images)
        logits = self(images).float()
        scores, probs = self.scores_from_logits(logits)
        loss = self.loss(logits, labels, self.class_weights)
        self.log("val/loss", loss, sync_dist=True, batch_size=len(labels))
        self.val_metrics.update(scores, probs.argmax(dim=1), labels)
        self.val_scores.update(scores)
        self.val_targets.update((labels != self.good_index).float())

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", self.val_metrics)
        scores, targets = self.val_scores.compute(), self.val_targets.compute()
        self.val_scores.reset()
        self.val_targets.reset()
        if not self.trainer.sanity_checking:
            self._choose_threshold(scores, targets)
        self.log("val/threshold", self.threshold)

    def _choose_threshold(self, scores: Tensor, targets: Tensor) -> None:
        """Pick the decision threshold from validation scores (the only caller)."""
        hp = self.hparams
        value = validation_threshold(
            scores, targets, hp.threshold_mode, hp.target_recall, self.threshold
        )
        if value is None:
            return
        self.threshold.fill_(value)
        self.threshold_from_validation.fill_(True)

    # ------------------------------------------------------------------ test / predict
    def test_step(self, batch: Any, batch_idx: int) -> None:
        batch = as_batch(batch)
        labels = batch.labels
        scores, probs = self.predict_scores(batch.views[0])
        decisions = self.model.decide(scores, probs)
        self.test_metrics.update(scores, decisions, labels)
        types = batch.types if batch.types is not None else labels
        self.test_types.update(scores, decisions != self.good_index, types)

    def on_test_epoch_start(self) -> None:
        name_types(self.test_types, data_type_names(self, self.class_names))

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test", self.test_metrics)
        self.log("test/threshold", self.threshold)
        log_per_type(self, self.test_types)

    def predict_step(self, batch: Any, batch_idx: int) -> list[dict[str, Any]]:
        """Per-image dicts (``lit_ssl.classify.rows.prediction_rows``): path, defect_score,
        decision at the stored threshold, predicted_class, is_defect, label, p_<class>; with
        tiles also ``tile_scores``, the ``(rows, cols)`` CPU tensor of tile scores."""
        batch = as_batch(batch)
        images = batch.views[0]
        self.model.check_size(images)
        result = self.model.score(images)
        decisions = self.model.decide(result.scores, result.probs)
        return prediction_rows(
            result, decisions, batch.labels, batch.paths, self.class_names, self.good_index
        )

    def configure_callbacks(self) -> list[L.Callback]:
        """``predictions.csv`` (+ ``skipped.txt``) in the run folder after ``trainer.predict``.

        Left out when ``write_predictions=False`` or the trainer already has a
        ``PredictionsCSVWriter`` with its own path (Lightning would replace it).
        """
        from lit_ssl.classify.predictions import PredictionsCSVWriter

        existing = self._trainer.callbacks if self._trainer is not None else []
        if not self.hparams.write_predictions or any(
            isinstance(cb, PredictionsCSVWriter) and cb.path is not None for cb in existing
        ):
            return []
        return [PredictionsCSVWriter()]

    # ------------------------------------------------------------------ checkpoints, metrics
    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Checkpoints older than the ``input_size`` buffer load with an unknown size."""
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("state_dict", {})
        state.setdefault("input_size", torch.zeros(2, dtype=torch.long))

    def _log_metrics(self, stage: str, metrics: DefectMetrics) -> None:
        figures = bool(self.hparams.save_figures) and not self.trainer.sanity_checking
        log_stage_metrics(self, stage, metrics, figures)

    # ------------------------------------------------------------------ export
    def export_metadata(self) -> dict[str, Any]:
        """What a deployment needs besides the graph (``classify.export.classifier_metadata``)."""
        return classifier_metadata(self)

    def to_onnx(
        self,
        path: str | Path,
        image_size: int | Sequence[int] | None = None,
        tile_map: bool = False,
    ) -> Path:
        """Export to ONNX (see ``lit_ssl.classify.export.to_onnx``); tiled classifiers tile
        inside the graph (``tile_map=True`` adds the tile score output)."""
        from lit_ssl.classify.export import to_onnx

        return to_onnx(self, path, image_size=image_size, tile_map=tile_map)

    def export(self, folder: Path) -> Path:
        """Write the run's deployable model into ``folder`` (``ExportOnFitEnd`` calls it):
        ``classifier.onnx``; returns its path."""
        from lit_ssl.classify.export import CLASSIFIER_ONNX

        return self.to_onnx(Path(folder) / CLASSIFIER_ONNX)
