"""DefectClassifier: a timm backbone (e.g. from SSL pretraining) fine-tuned into a defect
classifier, with class-balanced losses, a validation-chosen threshold and metrics.

Batch contract: :class:`lit_ssl.data.Batch` records (``FactoryDataModule(task="classify")``:
the image is ``views[0]``, with ``labels`` and ``paths``) or a plain DataLoader's
``(images, labels)``, ``(images, labels, paths)`` or bare ``images``, all read through
:func:`lit_ssl.data.as_batch`. Images are float ``(B, C, H, W)`` in [0, 1]; labels are class
indices into ``classes`` (-1 unknown, predict only).

One inference path: ``predict_scores`` (softmax probabilities and the defect score
``1 - p(good)``) serves validation, test, predict and the ONNX export alike; the decision
rule is ``defect = score >= threshold`` (then the most likely defect class).

Tiles (``tile_size``): frames are cut into tiles that go through the network in one forward
(``lit_ssl.classify.tiles``); the image score is the maximum tile score and the image's
probabilities are those of that tile, so everything above works unchanged on image scores.

Input size: an untiled classifier scores images (validation, test, predict) only at the size
it was trained at (``input_size``, in the checkpoint; ``lit_ssl.input_size``); tiled ones take
whole frames of any size. Non-finite validation scores stop the fit with an error.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchmetrics.aggregation import CatMetric

from lit_ssl import checkpoints
from lit_ssl.backbone import Backbone
from lit_ssl.backbone.loading import resolve_backbone
from lit_ssl.classify.metrics import DefectMetrics
from lit_ssl.classify.scoring import defect_scores
from lit_ssl.classify.thresholds import NonFiniteScoresError, select_threshold
from lit_ssl.classify.tiles import (
    check_tiling,
    image_logits,
    mask_tile_labels,
    tile_frames,
    tile_grid,
    tile_image_losses,
    tile_score_map,
)
from lit_ssl.data.batch import as_batch
from lit_ssl.data.table import good_index
from lit_ssl.deprecation import renamed_argument
from lit_ssl.input_size import check_input_size, forget_size_on_load, recorded_size
from lit_ssl.optim import decay_groups
from lit_ssl.per_type import PerTypeEvidence, data_type_names, log_per_type, name_types

__all__ = [
    "DefectClassifier",
    "FeatureNorm",
    "balanced_class_weights",
    "defect_scores",
    "focal_loss",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- losses
def balanced_class_weights(counts: Tensor) -> Tensor:
    """sklearn's "balanced" weights ``n / (C * n_c)``; classes without samples get 0."""
    counts = counts.double()
    weights = counts.sum() / (counts.numel() * counts.clamp(min=1))
    return torch.where(counts > 0, weights, torch.zeros_like(weights)).float()


def per_sample_focal(logits: Tensor, labels: Tensor, gamma: float, smoothing: float) -> Tensor:
    """Unreduced focal loss ``(1 - p_t)^gamma * CE`` ``(N,)``."""
    ce = F.cross_entropy(logits, labels, reduction="none", label_smoothing=smoothing)
    p_true = logits.softmax(dim=1).gather(1, labels[:, None]).squeeze(1)
    return (1.0 - p_true).clamp(min=0.0).pow(gamma) * ce


def focal_loss(
    logits: Tensor,
    labels: Tensor,
    gamma: float = 2.0,
    weight: Tensor | None = None,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Multi-class focal loss (Lin et al. 2017): ``(1 - p_t)^gamma * CE``, class-weighted mean.

    Each sample's loss is multiplied by its class weight ``weight[label]`` (a weighted mean).
    With ``gamma=0`` it equals ``F.cross_entropy`` with ``weight`` (no smoothing) or with
    ``label_smoothing`` (no weight).
    """
    modulated = per_sample_focal(logits, labels, gamma, label_smoothing)
    if weight is None:
        return modulated.mean()
    sample_weight = weight[labels]
    return (modulated * sample_weight).sum() / sample_weight.sum().clamp(min=1e-12)


class FeatureNorm(nn.BatchNorm1d):
    """Per-feature standardisation of pooled features before the head (no affine).

    As in MAE's linear probing: puts the features of any backbone / SSL method on one
    scale, so one head learning rate fits all. Running statistics are a cumulative average
    (``momentum=None``) that ``DefectClassifier`` resets at each training epoch start: exact
    for a frozen backbone, the current epoch's average while fine-tuning. A training batch
    of one sample is normalised with the running statistics.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features, affine=False, momentum=None)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, training=False)
        return super().forward(x)


def _check_classes(classes: list[str] | None, good_class: str) -> list[str]:
    classes = [good_class, "defect"] if classes is None else list(classes)
    if len(classes) < 2:
        raise ValueError(f"Need at least 2 classes (good + defect types), got {classes}.")
    if len(set(classes)) != len(classes):
        raise ValueError(f"Class names must be unique, got {classes}.")
    if good_class not in classes:
        raise ValueError(f"good_class={good_class!r} is not one of classes={classes}.")
    return classes


# --------------------------------------------------------------------------- module
class DefectClassifier(checkpoints.SafeCheckpointing, L.LightningModule):
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
        loss: ``"cross_entropy"`` or ``"focal"``.
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
        classes: deprecated spelling of ``class_names``.
        img_size: deprecated spelling of ``image_size``.
    """

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
        classes: list[str] | None = None,
        img_size: int | None = None,
    ) -> None:
        super().__init__()
        owner = "DefectClassifier"
        class_names = renamed_argument(owner, "classes", classes, "class_names", class_names)
        image_size = renamed_argument(owner, "img_size", img_size, "image_size", image_size)
        self._classes_from_data = class_names is None  # good vs defect, as the data names them
        classes = _check_classes(class_names, good_class)
        self._check_options(head, loss, threshold_mode, target_recall, class_weights, classes)
        tile_stride = check_tiling(tile_size, tile_stride)
        backbone = _build_backbone(backbone, weights, in_chans, image_size, pretrained)
        _check_tile_backbone(backbone, tile_size)
        # save_hyperparameters reads these locals: record the resolved values, so the logged
        # hparams agree with the datamodule's (Lightning refuses conflicting duplicates)
        in_chans, image_size = backbone.in_chans, backbone.image_size
        self.save_hyperparameters(ignore=["backbone", "classes", "img_size", "image_size"])
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
        # Not in the logged (initial) hparams either: Lightning refuses a model/datamodule
        # key pair with different values, and a ViT may be built at another size.
        self.class_names = classes
        self.good_index = classes.index(good_class)
        self.backbone = backbone
        self.head = self._build_head(backbone.embed_dim, len(classes))
        fixed = class_weights if isinstance(class_weights, list) else [1.0] * len(classes)
        self.register_buffer("class_weights", torch.tensor(fixed, dtype=torch.float32))
        self.register_buffer("threshold", torch.tensor(float(default_threshold)))
        self.register_buffer("threshold_from_validation", torch.tensor(False))
        self.register_buffer("input_size", torch.zeros(2, dtype=torch.long))
        self._seen_size: tuple[int, int] | None = None  # host copy of input_size (None: unread)
        self.register_load_state_dict_post_hook(forget_size_on_load)
        self._size_from_eval = False  # tiles: eval batches' frame size wins (_record_size)
        self.val_metrics = DefectMetrics(classes, self.good_index)
        self.test_metrics = DefectMetrics(classes, self.good_index, suffix="_at_threshold")
        self.test_types = PerTypeEvidence()  # named at test start, from the data
        self.val_scores = CatMetric(nan_strategy="disable")
        self.val_targets = CatMetric(nan_strategy="disable")

    @staticmethod
    def _check_options(head, loss, threshold_mode, target_recall, class_weights, classes) -> None:
        if head not in ("linear", "mlp"):
            raise ValueError(f"head must be 'linear' or 'mlp', got {head!r}.")
        if loss not in ("cross_entropy", "focal"):
            raise ValueError(f"loss must be 'cross_entropy' or 'focal', got {loss!r}.")
        if threshold_mode not in ("f1", "recall"):
            raise ValueError(f"threshold_mode must be 'f1' or 'recall', got {threshold_mode!r}.")
        if not 0.0 < target_recall <= 1.0:
            raise ValueError(f"target_recall must be in (0, 1], got {target_recall}.")
        if isinstance(class_weights, list):
            if len(class_weights) != len(classes):
                raise ValueError(
                    f"{len(class_weights)} class_weights for {len(classes)} classes {classes}."
                )
        elif class_weights not in ("balanced", "none"):
            raise ValueError(
                f"class_weights must be 'balanced', 'none' or a list, got {class_weights!r}."
            )

    def _build_head(self, embed_dim: int, num_classes: int) -> nn.Sequential:
        norm = FeatureNorm(embed_dim) if self.hparams.feature_norm else nn.Identity()
        dropout = nn.Dropout(self.hparams.dropout)
        if self.hparams.head == "linear":
            return nn.Sequential(norm, dropout, nn.Linear(embed_dim, num_classes))
        hidden = self.hparams.hidden_dim
        return nn.Sequential(
            norm, nn.Linear(embed_dim, hidden), nn.GELU(), dropout, nn.Linear(hidden, num_classes)
        )

    @property
    def classes(self) -> list[str]:
        """Deprecated spelling of ``class_names``."""
        warnings.warn(
            "DefectClassifier.classes is deprecated; use class_names.", DeprecationWarning, 2
        )
        return self.class_names

    @classmethod
    def from_ssl(
        cls,
        module_or_ckpt: L.LightningModule | str | Path,
        class_names: list[str] | None = None,
        **kwargs,
    ) -> DefectClassifier:
        """Classifier on the backbone of an ``SSLModule`` (instance or ``.ckpt`` path).

        An instance's backbone is copied (the SSL module is left untouched).
        """
        if isinstance(module_or_ckpt, str | Path):
            return cls(weights=str(module_or_ckpt), class_names=class_names, **kwargs)
        backbone = getattr(module_or_ckpt, "backbone", None)
        if not isinstance(backbone, Backbone):
            raise TypeError(
                f"from_ssl expects an SSLModule or a checkpoint path, got "
                f"{type(module_or_ckpt).__name__} without a lit_ssl Backbone."
            )
        return cls(backbone=copy.deepcopy(backbone).cpu(), class_names=class_names, **kwargs)

    # ------------------------------------------------------------------ inference path
    @property
    def tiled(self) -> bool:
        """Whether frames are scored tile by tile (``tile_size`` set)."""
        return self.hparams.get("tile_size") is not None

    def forward(self, images: Tensor) -> Tensor:
        """Class logits ``(B, C)`` of float images in [0, 1]; with tiles, the logits of each
        image's maximum-scoring tile."""
        if self.tiled:
            return image_logits(self.forward_tiles(images), self.good_index)[0]
        return self.head(self.backbone(images))

    def forward_tiles(self, images: Tensor) -> Tensor:
        """Tile logits ``(B, T, C)`` (row-major tiles, see ``tile_grid``); one forward."""
        if not self.tiled:
            raise RuntimeError("forward_tiles needs a tiled classifier (tile_size=N).")
        tiles = tile_frames(images, self.hparams.tile_size, self.hparams.tile_stride)
        batch, count = tiles.shape[:2]
        logits = self.head(self.backbone(tiles.flatten(0, 1)))
        return logits.reshape(batch, count, -1)

    def tile_grid(self, height: int, width: int) -> tuple[int, int]:
        """``(rows, cols)`` of the tiles covering a ``height x width`` frame."""
        return tile_grid(height, width, self.hparams.tile_size, self.hparams.tile_stride)

    def predict_scores(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(defect_score (B,), probabilities (B, C))`` with ``score = 1 - p(good)``.

        Raises:
            ValueError: an untiled classifier got images of another size than it was fit at.
        """
        self._check_input_size(images)
        return self.scores_from_logits(self(images))

    def _check_input_size(self, images: Tensor) -> None:
        """Untiled: refuse images of another size than training's (host-side shapes; the
        buffer is read once after a load). Tiled classifiers take frames of any size."""
        if self.tiled:
            return
        if self._seen_size is None:
            self._seen_size = recorded_size(self.input_size)
        check_input_size(images, self._seen_size, "classifier")

    def scores_from_logits(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        """``(defect_score, probabilities)`` from class logits."""
        return defect_scores(logits, self.good_index)

    def decide(self, scores: Tensor, probs: Tensor, threshold: Tensor | float) -> Tensor:
        """Class decisions: good below the threshold, else the most likely defect class."""
        defect_probs = probs.clone()
        defect_probs[:, self.good_index] = -1.0
        good = torch.full_like(scores, self.good_index, dtype=torch.long)
        return torch.where(scores >= threshold, defect_probs.argmax(dim=1), good)

    # ------------------------------------------------------------------ training
    def _loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        hp = self.hparams
        weight = None if hp.class_weights == "none" else self.class_weights
        if hp.loss == "focal":
            return focal_loss(logits, labels, hp.focal_gamma, weight, hp.label_smoothing)
        return F.cross_entropy(logits, labels, weight=weight, label_smoothing=hp.label_smoothing)

    def _per_sample_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        hp = self.hparams
        if hp.loss == "focal":
            return per_sample_focal(logits, labels, hp.focal_gamma, hp.label_smoothing)
        return F.cross_entropy(logits, labels, reduction="none", label_smoothing=hp.label_smoothing)

    def _tile_loss(self, images: Tensor, labels: Tensor, masks: Tensor | None) -> Tensor:
        """Class-weighted mean over images of ``tiles.tile_image_losses`` (MIL / mask tiles)."""
        hp = self.hparams
        tile_labels = None
        if masks is not None:
            tile_labels = mask_tile_labels(
                masks, labels, hp.tile_size, hp.tile_stride, self.good_index
            )
        losses = tile_image_losses(
            self.forward_tiles(images).float(),
            labels,
            self.good_index,
            self._per_sample_loss,
            tile_labels,
        )
        if hp.class_weights == "none":
            return losses.mean()
        weight = self.class_weights[labels]
        return (losses * weight).sum() / weight.sum().clamp(min=1e-12)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        batch = as_batch(batch)
        images, labels = batch.views[0], batch.labels
        self._record_size(images)
        if self.tiled:
            loss = self._tile_loss(images, labels, batch.masks)
        else:
            loss = self._loss(self(images).float(), labels)
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
        size = (int(images.shape[-2]), int(images.shape[-1]))
        if size != self._seen_size:
            self._seen_size = size
            self.input_size.copy_(torch.tensor(size))

    def _adopt_binary_names(self, names: list[str]) -> None:
        """``class_names=None``: take a two-class datamodule's names (e.g. VisA's "normal")."""
        good = good_index(names)
        if len(names) != len(self.class_names) or good is None:
            return
        self.class_names = names
        self.good_index = good
        self.hparams.update(class_names=names, good_class=names[good])
        for metrics in (self.val_metrics, self.test_metrics):
            metrics.class_names, metrics.good_index = list(names), good
        log.info("classifier: classes %s (from the data; good class %r)", names, names[good])

    def setup(self, stage: str) -> None:
        """Fail early when the datamodule's classes differ from this classifier's."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        names = getattr(datamodule, "class_names", None)
        if names and self._classes_from_data and list(names) != self.class_names:
            self._adopt_binary_names(list(names))
        if names and list(names) != self.class_names:
            raise ValueError(
                f"The datamodule's classes {list(names)} differ from the classifier's "
                f"{self.class_names} (order matters: labels are indices). Build the classifier "
                "with class_names=datamodule.class_names."
            )

    def on_train_epoch_start(self) -> None:
        if isinstance(self.head[0], FeatureNorm):
            self.head[0].reset_running_stats()

    def on_train_start(self) -> None:
        if self.hparams.class_weights == "balanced":
            counts = self._train_class_counts()
            self.class_weights.copy_(balanced_class_weights(counts).to(self.class_weights))
            rank_zero_only(_log_weights)(self.class_names, counts, self.class_weights)

    def _train_class_counts(self) -> Tensor:
        """Counts of the training labels actually used (after ``label_fraction``).

        ``datamodule.train_class_counts`` first, then the train dataset's own labels, else
        one pass over the train dataloader. Never counts val/test labels.
        """
        num = len(self.class_names)
        datamodule = getattr(self.trainer, "datamodule", None)
        counts = getattr(datamodule, "train_class_counts", None)
        if callable(counts):
            counts = counts()
        if counts is not None:
            return _checked_counts(counts, self.class_names)
        loader = self.trainer.train_dataloader
        dataset = loader.dataset if isinstance(loader, DataLoader) else None
        counts = _counts_from(dataset, self.class_names)
        if counts is not None:
            return counts
        rank_zero_warn(
            "DefectClassifier: neither the datamodule (train_class_counts) nor the train "
            "dataset (labels) tells the class counts; counting training labels with one pass "
            "over the train dataloader."
        )
        counts = torch.zeros(num, dtype=torch.long)
        for batch in loader:
            labels = as_batch(batch).labels
            counts += torch.bincount(labels.flatten().cpu(), minlength=num)[:num]
        return self.trainer.strategy.reduce(counts.to(self.device), reduce_op="sum").cpu()

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
        self._check_input_size(images)
        logits = self(images).float()
        scores, probs = self.scores_from_logits(logits)
        self.log("val/loss", self._loss(logits, labels), sync_dist=True, batch_size=len(labels))
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
        try:
            value = select_threshold(
                scores, targets, self.hparams.threshold_mode, self.hparams.target_recall
            )
        except NonFiniteScoresError:  # a NaN threshold would pass (or flag) every image
            raise ValueError(
                "the classifier's defect scores on the validation images are not finite "
                "(NaN/inf): its weights are broken.\nCheck --model.weights (NaN tensors?) or "
                "lower --model.lr if the training diverged."
            ) from None
        except ValueError as err:
            rank_zero_warn(f"Threshold kept at {float(self.threshold):.4f}: {err}")
            return
        self.threshold.fill_(value)
        self.threshold_from_validation.fill_(True)

    # ------------------------------------------------------------------ test / predict
    def test_step(self, batch: Any, batch_idx: int) -> None:
        batch = as_batch(batch)
        labels = batch.labels
        scores, probs = self.predict_scores(batch.views[0])
        decisions = self.decide(scores, probs, self.threshold)
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
        """Per-image dicts: path, defect_score, decision ("defect"/"good" at the stored
        threshold), predicted_class, is_defect, label, p_<class>; with tiles also
        ``tile_scores``, the ``(rows, cols)`` CPU tensor of tile scores (the heat map's;
        not a CSV column)."""
        batch = as_batch(batch)
        images = batch.views[0]
        labels, paths = batch.labels.tolist(), batch.paths
        maps = None
        self._check_input_size(images)
        if self.tiled:
            logits, tile_scores = image_logits(self.forward_tiles(images), self.good_index)
            scores, probs = self.scores_from_logits(logits)
            maps = tile_score_map(tile_scores, *self.tile_grid(*images.shape[-2:])).cpu()
        else:
            scores, probs = self.predict_scores(images)
        preds = self.decide(scores, probs, self.threshold)
        rows = []
        for i, (score, pred) in enumerate(zip(scores.tolist(), preds.tolist(), strict=True)):
            row = {
                "path": paths[i] if paths is not None else None,
                "defect_score": score,
                "decision": "good" if pred == self.good_index else "defect",
                "predicted_class": self.class_names[pred],
                "is_defect": pred != self.good_index,
                "label": self.class_names[labels[i]] if labels[i] >= 0 else None,
            }
            row.update(
                {f"p_{c}": p for c, p in zip(self.class_names, probs[i].tolist(), strict=True)}
            )
            if maps is not None:
                row["tile_scores"] = maps[i]
            rows.append(row)
        return rows

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

    # ------------------------------------------------------------------ checkpoints
    module_kind = "DefectClassifier"  # the checkpoint marker ``lit-ssl export`` routes by

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Checkpoints older than the ``input_size`` buffer load with an unknown size."""
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("state_dict", {})
        state.setdefault("input_size", torch.zeros(2, dtype=torch.long))

    # ------------------------------------------------------------------ metrics plumbing
    def _log_metrics(self, stage: str, metrics: DefectMetrics) -> None:
        with warnings.catch_warnings():  # e.g. AUROC of a sanity batch with one class only
            warnings.simplefilter("ignore", UserWarning)
            values = metrics.compute()
            figures = metrics.figure_data() if self._want_figures() else None
        metrics.reset()
        for name, value in values.items():
            self.log(f"{stage}/{name}", value)
        if figures is not None:
            rank_zero_only(self._save_figures)(metrics, figures, stage)

    def _save_figures(self, metrics: Any, figures: Any, stage: str) -> None:
        # run_dir reads the logger's folder locally: trainer.log_dir is a collective
        from lit_ssl.callbacks.run_folder import run_dir

        metrics.save_figures(figures, run_dir(self.trainer) / "figures", stage)

    def _want_figures(self) -> bool:
        return bool(self.hparams.save_figures) and not self.trainer.sanity_checking

    # ------------------------------------------------------------------ export
    def export_metadata(self) -> dict[str, Any]:
        """What a deployment needs besides the graph: threshold, classes, input format."""
        size = [int(v) for v in self.input_size.tolist()]
        return {
            "threshold": float(self.threshold),
            "threshold_source": "validation" if bool(self.threshold_from_validation) else "default",
            "threshold_mode": self.hparams.threshold_mode,
            "target_recall": float(self.hparams.target_recall),
            "class_names": list(self.class_names),
            "good_class": self.hparams.good_class,
            "good_index": self.good_index,
            "image_size": size if any(size) else None,
            "in_chans": self.backbone.in_chans,
            "backbone": self.backbone.name,
            "input_range": [0.0, 1.0],
            "decision": "defect if defect_score >= threshold",
            "tile_size": self.hparams.get("tile_size"),
            "tile_stride": self.hparams.get("tile_stride"),
        }

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


def _build_backbone(
    backbone: str | Backbone | None,
    weights: str | None,
    in_chans: int | None,
    image_size: int | None,
    pretrained: bool,
) -> Backbone:
    if not pretrained:
        return resolve_backbone(backbone, weights, in_chans, image_size)
    if weights is not None or isinstance(backbone, Backbone):
        raise ValueError(
            "pretrained=True takes timm's weights for a backbone given by name: do not also "
            "give weights=FILE or a Backbone instance."
        )
    from lit_ssl.backbone.loading import DEFAULT_BACKBONE

    return Backbone(backbone or DEFAULT_BACKBONE, in_chans or 3, image_size, pretrained=True)


def _fixed_input(backbone: Backbone) -> tuple[int, int] | None:
    """The input size a fixed-size ViT needs, ``None`` for any-size backbones."""
    model = backbone.model
    if not backbone.is_vit or getattr(model, "dynamic_img_size", False):
        return None
    return tuple(int(v) for v in model.patch_embed.img_size)


def _check_tile_backbone(backbone: Backbone, tile_size: int | None) -> None:
    fixed = _fixed_input(backbone)
    if tile_size is not None and fixed is not None and fixed != (tile_size, tile_size):
        raise ValueError(
            f"The backbone {backbone.name!r} takes {fixed[0]}x{fixed[1]} inputs but sees tiles "
            f"of tile_size={tile_size}: build it with image_size={tile_size}."
        )


def _checked_counts(counts: Sequence[int], classes: list[str]) -> Tensor:
    counts = torch.as_tensor(list(counts)).long().flatten()
    if counts.numel() != len(classes):
        raise ValueError(
            f"datamodule.train_class_counts has {counts.numel()} entries for the classifier's "
            f"{len(classes)} classes {classes}; build the classifier with "
            "class_names=datamodule.class_names."
        )
    return counts


def _counts_from(source: Any, classes: list[str]) -> Tensor | None:
    """Class counts from ``class_counts`` or a ``labels``/``targets`` list, if ``source`` has one.

    ``class_counts`` may be a sequence in label order or a ``{class_name: count}`` dict.
    """
    if source is None:
        return None
    num = len(classes)
    counts = getattr(source, "class_counts", None)
    if callable(counts):
        counts = counts()
    if counts is not None:
        if isinstance(counts, dict):
            counts = [counts.get(name, 0) for name in classes]
        return torch.as_tensor(counts).long().flatten()[:num]
    for attr in ("labels", "targets"):
        labels = getattr(source, attr, None)
        if labels is not None and not callable(labels):
            labels = torch.as_tensor(labels).long().flatten()
            return torch.bincount(labels[labels >= 0], minlength=num)[:num]
    return None


def _log_weights(classes: list[str], counts: Tensor, weights: Tensor) -> None:
    parts = ", ".join(
        f"{c}: n={int(n)} w={float(w):.3f}"
        for c, n, w in zip(classes, counts.tolist(), weights.tolist(), strict=True)
    )
    log.info("DefectClassifier balanced class weights: %s", parts)
