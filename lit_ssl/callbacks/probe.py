"""OnlineProbe: how linearly separable (and kNN-classifiable) defects are, during SSL.

Reads the batch contract of ``SSLModule``: :class:`lit_ssl.data.Batch` records (or plain
``(views, labels)`` tuples, through :func:`lit_ssl.data.as_batch`) with ``labels == -1`` where
unknown, and step outputs carrying a :class:`lit_ssl.step_output.StepOutput`.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torchmetrics.classification import BinaryAUROC, MulticlassAccuracy

from lit_ssl.data.batch import as_batch
from lit_ssl.data_info import DataInfo, data_info
from lit_ssl.step_output import step_output

__all__ = ["OnlineProbe", "knn_predict"]


def knn_predict(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    bank: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Weighted kNN class probabilities with cosine similarity (Wu et al. 2018 weighting).

    Args:
        features: query features ``(N, D)``.
        labels: query labels ``(N,)``; used as the bank labels when ``bank`` is ``None``.
        num_classes: number of classes.
        k: neighbours.
        temperature: votes are weighted by ``exp(similarity / temperature)``.
        bank: ``(bank_features, bank_labels)``; ``None`` means leave-one-out within
            ``features`` (a sample is never its own neighbour).

    Returns:
        Class probabilities ``(N, num_classes)``.
    """
    queries = F.normalize(features.float(), dim=1)
    if bank is None:
        keys, key_labels = queries, labels
    else:
        keys, key_labels = F.normalize(bank[0].float(), dim=1), bank[1]
    similarity = queries @ keys.T
    if bank is None:
        similarity.fill_diagonal_(-float("inf"))
    k = min(k, keys.shape[0] - (1 if bank is None else 0))
    if k < 1:
        raise ValueError("kNN needs at least 2 labelled samples (1 neighbour).")
    top_sim, top_idx = similarity.topk(k, dim=1)
    votes = F.one_hot(key_labels[top_idx], num_classes).float()
    weights = (top_sim / temperature).exp()[..., None]
    scores = (votes * weights).sum(dim=1)
    return scores / scores.sum(dim=1, keepdim=True).clamp(min=1e-12)


class OnlineProbe(L.Callback):
    """Linear probe and kNN monitor on detached backbone features during SSL pretraining.

    Every training step, a linear classifier (its own AdamW, its own parameters, state in
    the callback's ``state_dict``) is trained on the pooled features of the first view of
    the labelled samples in the batch (``labels >= 0``; unlabelled samples are masked out
    with a weight vector, no host sync). It sees detached features only, so the backbone's
    gradients are exactly those of the SSL loss. Logged every ``every_n_epochs`` epochs:

    * ``probe/train_acc``, ``probe/train_auroc`` (defect vs good, score ``1 - p(good)``),
      on the training batches of the epoch;
    * ``probe/val_acc``, ``probe/val_auroc``: the linear probe on the validation batches;
    * ``probe/knn_acc``, ``probe/knn_auroc``: leave-one-out weighted kNN (cosine similarity)
      among the labelled validation samples, features of the val dataloader's first view.

    Caution: kNN accuracy misleads for reconstruction heads (MAE, masked/denoising
    reconstruction), whose features are informative but not linearly or metrically
    organised until fine-tuned: in lightly's ImageNet benchmark MAE reaches 81% fine-tuned
    but 11% kNN. Compare reconstruction heads by the linear probe or by fine-tuning.

    Args:
        num_classes: number of classes; ``None``: as many as the data's ``class_names``
            (:func:`lit_ssl.data_info.data_info`), and when the data has no labels (or one
            class) the probe says so once and stays off (``active`` is ``False``).
        every_n_epochs: log probe metrics and run the kNN evaluation every n epochs.
        knn_k: kNN neighbours.
        knn_temperature: kNN vote temperature.
        lr: probe learning rate.
        weight_decay: probe weight decay.
        good_index: label of the good class (defect score = ``1 - p(good_index)``);
            ``None``: the data's ``good_index``, else 0.
        seed: seed of the probe's initialisation (global RNG state is left untouched).
    """

    def __init__(
        self,
        num_classes: int | None = None,
        every_n_epochs: int = 1,
        knn_k: int = 20,
        knn_temperature: float = 0.07,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        good_index: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}.")
        if num_classes is not None and num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
        self.num_classes = num_classes
        self.every_n_epochs = every_n_epochs
        self.knn_k = knn_k
        self.knn_temperature = knn_temperature
        self.lr = lr
        self.weight_decay = weight_decay
        self.good_index = good_index or 0
        self._good_index_given = good_index is not None
        self.seed = seed
        self.probe: nn.Linear | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._pending_state: dict[str, Any] | None = None
        self._val_features: list[Tensor] = []
        self._val_labels: list[Tensor] = []
        self._counts: dict[str, Tensor] = {}
        self.active = True

    # ------------------------------------------------------------------ setup / state
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.probe is not None or not self.active:
            return
        info = data_info(trainer)
        num_classes = self.num_classes or (info.num_classes if info.num_classes >= 2 else None)
        if num_classes is None:
            self._switch_off(info)
            return
        self.num_classes = num_classes
        if not self._good_index_given and info.good_index is not None:
            self.good_index = info.good_index
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.probe = nn.Linear(pl_module.backbone.embed_dim, num_classes)
        self.optimizer = torch.optim.AdamW(
            self.probe.parameters(), lr=self.lr, weight_decay=self.weight_decay
        )
        self.metrics = nn.ModuleDict(
            {
                f"{split}_{name}": metric
                for split in ("train", "val")
                for name, metric in self._new_metrics(num_classes).items()
            }
        )
        if self._pending_state is not None:
            self._load(self._pending_state)

    def _switch_off(self, info: DataInfo) -> None:
        """No labels (or one class): nothing to probe; say so once and do nothing after."""
        self.active = False
        n = info.num_classes
        why = f"the data has {n} labelled class{'es' * (n != 1)}, so there is nothing to probe"
        kept = " (its saved state is not used)" if self._pending_state else ""
        rank_zero_info(
            f"OnlineProbe: {why}; the probe is off for this run{kept}. Give labels (class "
            "folders, an MVTec tree, a CSV label column) or OnlineProbe(num_classes=...)."
        )

    @staticmethod
    def _new_metrics(num_classes: int) -> dict[str, nn.Module]:
        return {
            "acc": MulticlassAccuracy(num_classes, average="micro", ignore_index=-1),
            "auroc": BinaryAUROC(ignore_index=-1),
        }

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.active:
            return
        self._to(pl_module.device)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.active:
            return
        self._to(pl_module.device)

    def _to(self, device: torch.device) -> None:
        self.probe.to(device)
        self.metrics.to(device)
        for state in self.optimizer.state.values():  # resumed optimizer state
            for key, value in state.items():
                if isinstance(value, Tensor) and key != "step":
                    state[key] = value.to(device)

    def state_dict(self) -> dict[str, Any]:
        if self.probe is None:
            return dict(self._pending_state or {})
        return {
            "num_classes": self.num_classes,
            "probe": self.probe.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.probe is None:  # restored before setup: apply when the probe exists
            self._pending_state = state_dict
        else:
            self._load(state_dict)

    def _load(self, state: dict[str, Any]) -> None:
        if not state:
            return
        if state.get("num_classes") != self.num_classes:
            raise ValueError(
                f"OnlineProbe state has {state.get('num_classes')} classes, this probe "
                f"{self.num_classes}."
            )
        self.probe.load_state_dict(state["probe"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._pending_state = None

    # ------------------------------------------------------------------ features
    def _features(self, pl_module: L.LightningModule, outputs: Any, batch: Any) -> Tensor:
        step = step_output(outputs)
        features = step.head_output.features if step and step.head_output else None
        if features is None:
            with torch.no_grad():
                features = pl_module.backbone(as_batch(batch).views[0])
        return features.detach().float()

    @staticmethod
    def _labels(outputs: Any, batch: Any) -> Tensor:
        step = step_output(outputs)
        return step.labels if step is not None else as_batch(batch).labels

    def _defect_target(self, labels: Tensor) -> Tensor:
        """1 defect, 0 good, -1 unknown (ignored by the AUROC)."""
        return torch.where(labels < 0, labels, (labels != self.good_index).long())

    def _update_metrics(self, split: str, logits: Tensor, labels: Tensor) -> None:
        probs = logits.detach().softmax(dim=1)
        target = self._defect_target(labels)
        self.metrics[f"{split}_acc"].update(probs, labels)
        self.metrics[f"{split}_auroc"].update(1.0 - probs[:, self.good_index], target)
        counts = torch.stack([(target == 0).sum(), (target == 1).sum()])  # stays on device
        self._counts[split] = self._counts.get(split, 0) + counts

    # ------------------------------------------------------------------ training
    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if not self.active:
            return
        features = self._features(pl_module, outputs, batch)
        labels = self._labels(outputs, batch).long()
        weight = (labels >= 0).float()
        with torch.enable_grad():
            logits = self.probe(features)
            losses = F.cross_entropy(logits, labels.clamp(min=0), reduction="none")
            loss = (losses * weight).sum() / weight.sum().clamp(min=1.0)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        self.optimizer.step()
        self._update_metrics("train", logits, labels)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.active:
            return
        if self._due(trainer):
            self._log_split(pl_module, "train")
        self._reset("train")

    # ------------------------------------------------------------------ validation
    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.sanity_checking or not self.active or not self._due(trainer):
            return
        features = self._features(pl_module, outputs, batch)
        labels = self._labels(outputs, batch).long()
        with torch.no_grad():
            self._update_metrics("val", self.probe(features), labels)
        self._val_features.append(features)
        self._val_labels.append(labels)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.active or not self._due(trainer):
            return
        self._log_split(pl_module, "val")
        self._reset("val")
        self._log_knn(pl_module)

    def _log_knn(self, pl_module: L.LightningModule) -> None:
        if not self._val_features:
            return
        features = _gather(pl_module, torch.cat(self._val_features))
        labels = _gather(pl_module, torch.cat(self._val_labels))
        self._val_features, self._val_labels = [], []
        labelled = labels >= 0  # one host sync per validation epoch
        if int(labelled.sum()) < 2:
            return
        features, labels = features[labelled], labels[labelled]
        probs = knn_predict(features, labels, self.num_classes, self.knn_k, self.knn_temperature)
        acc = (probs.argmax(dim=1) == labels).float().mean()
        pl_module.log("probe/knn_acc", acc, rank_zero_only=True)
        if _has_both(labels, self.good_index):
            auroc = BinaryAUROC().to(probs.device)
            value = auroc(1.0 - probs[:, self.good_index], (labels != self.good_index).long())
            pl_module.log("probe/knn_auroc", value, rank_zero_only=True)

    # ------------------------------------------------------------------ helpers
    def _due(self, trainer: L.Trainer) -> bool:
        return (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def _log_split(self, pl_module: L.LightningModule, split: str) -> None:
        """Log accuracy / AUROC of the epoch when it had labelled samples (of both kinds)."""
        counts = self._counts.get(split)
        if counts is None:
            return
        good, defect = pl_module.trainer.strategy.reduce(counts, reduce_op="sum").tolist()
        if good + defect == 0:
            return
        pl_module.log(f"probe/{split}_acc", self.metrics[f"{split}_acc"].compute())
        if good > 0 and defect > 0:
            pl_module.log(f"probe/{split}_auroc", self.metrics[f"{split}_auroc"].compute())

    def _reset(self, split: str) -> None:
        self.metrics[f"{split}_acc"].reset()
        self.metrics[f"{split}_auroc"].reset()
        self._counts.pop(split, None)


def _gather(pl_module: L.LightningModule, tensor: Tensor) -> Tensor:
    if pl_module.trainer.world_size == 1:
        return tensor
    gathered = pl_module.all_gather(tensor)
    return gathered.flatten(0, 1)


def _has_both(labels: Tensor, good_index: int) -> bool:
    good = labels == good_index
    return bool(good.any()) and bool((~good).any())
