"""``ClassifierModel``: the defect classifier as a plain torch model, its one inference path.

Backbone, head, tiling, defect scores and the decision rule in one ``nn.Module``:
``DefectClassifier`` (the LightningModule around it) trains it and scores validation, test
and predict batches with it, and the ONNX export (``lit_ssl.classify.export``) traces a CPU
copy of it. Nothing else computes a score.

Scores: ``defect_score = 1 - p(good)`` (``lit_ssl.classify.scoring``). Tiled models
(``tile_size``) cut frames into tiles that go through the network in one forward
(``lit_ssl.classify.tiles``); the image score is the maximum tile score and the image's
probabilities are those of that tile. Decision: ``defect = score > threshold``
(:mod:`lit_ssl.decision`, the rule of every lit_ssl model), then the most likely defect class.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from lit_ssl.backbone import Backbone
from lit_ssl.classify.scoring import defect_scores
from lit_ssl.classify.tiles import (
    image_logits,
    mask_tile_labels,
    tile_frames,
    tile_grid,
    tile_score_map,
)
from lit_ssl.decision import is_defect
from lit_ssl.input_size import FitSizeModel

__all__ = ["ClassifierModel", "ClassifierScores"]


class ClassifierScores(NamedTuple):
    """Scores of a batch of images.

    Attributes:
        scores: defect scores ``(B,)``, ``1 - p(good)``.
        probs: class probabilities ``(B, C)`` (of the maximum-scoring tile when tiled).
        tile_scores: ``(B, rows, cols)`` tile scores, ``None`` when untiled.
    """

    scores: Tensor
    probs: Tensor
    tile_scores: Tensor | None


class ClassifierModel(FitSizeModel):
    """Defect classifier: images ``(B, C, H, W)`` float in [0, 1] -> defect scores.

    Args:
        backbone: the feature extractor (normalisation inside).
        head: pooled features ``(N, D)`` -> class logits ``(N, C)``.
        good_index: column of the good class.
        tile_size: tile side in pixels, ``None``: whole images in one forward.
        tile_stride: pixels between tile origins (checked by ``tiles.check_tiling``).
        threshold: initial decision threshold (the ``threshold`` buffer).

    Attributes:
        tile_map: ``forward`` also returns the ``(B, rows, cols)`` tile scores (tiled only;
            the export sets it on its copy for ``tile_map=True``).

    Example:
        >>> from lit_ssl.classify.head import build_head
        >>> backbone = Backbone("test_resnet")
        >>> model = ClassifierModel(backbone, build_head(backbone.embed_dim, 2), 0).eval()
        >>> scores, probs = model(torch.rand(3, 3, 32, 32))
        >>> tuple(scores.shape), tuple(probs.shape)
        ((3,), (3, 2))
    """

    what = "classifier"

    def __init__(
        self,
        backbone: Backbone,
        head: nn.Module,
        good_index: int,
        tile_size: int | None = None,
        tile_stride: int | None = None,
        threshold: float = 0.5,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.good_index = good_index
        self.tile_size = tile_size
        self.tile_stride = tile_stride if tile_stride is not None else tile_size
        self.tile_map = False
        self.register_buffer("threshold", torch.tensor(float(threshold)))

    @property
    def tiled(self) -> bool:
        """Whether frames are scored tile by tile (``tile_size`` set)."""
        return self.tile_size is not None

    def tile_grid(self, height: int, width: int) -> tuple[int, int]:
        """``(rows, cols)`` of the tiles covering a ``height x width`` frame."""
        return tile_grid(height, width, self.tile_size, self.tile_stride)

    def tile_logits(self, images: Tensor) -> Tensor:
        """Tile logits ``(B, T, C)`` (row-major tiles, see ``tile_grid``); one forward."""
        if not self.tiled:
            raise RuntimeError("tile logits need a tiled classifier (tile_size=N).")
        tiles = tile_frames(images, self.tile_size, self.tile_stride)
        batch, count = tiles.shape[:2]
        return self.head(self.backbone(tiles.flatten(0, 1))).reshape(batch, count, -1)

    def tile_labels(self, masks: Tensor, labels: Tensor) -> Tensor:
        """Tile labels ``(B, T)`` of masks ``(B, 1, H, W)`` (``tiles.mask_tile_labels``)."""
        return mask_tile_labels(masks, labels, self.tile_size, self.tile_stride, self.good_index)

    def logits(self, images: Tensor) -> Tensor:
        """Class logits ``(B, C)``; tiled: the logits of each image's maximum-scoring tile."""
        if self.tiled:
            return image_logits(self.tile_logits(images), self.good_index)[0]
        return self.head(self.backbone(images))

    def score(self, images: Tensor) -> ClassifierScores:
        """Defect scores, probabilities and (tiled) the tile score map of ``images``."""
        if not self.tiled:
            return ClassifierScores(*defect_scores(self.logits(images), self.good_index), None)
        best, tile_scores = image_logits(self.tile_logits(images), self.good_index)
        scores, probs = defect_scores(best, self.good_index)
        rows, cols = self.tile_grid(*images.shape[-2:])
        return ClassifierScores(scores, probs, tile_score_map(tile_scores, rows, cols))

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        """``(defect_score (B,), probabilities (B, C))``, plus the tile scores when
        ``tile_map``: the outputs of the ONNX graph."""
        scores, probs, tile_scores = self.score(images)
        if self.tile_map and tile_scores is not None:
            return scores, probs, tile_scores
        return scores, probs

    def decide(self, scores: Tensor, probs: Tensor, threshold: Tensor | float | None = None):
        """Class decisions ``(B,)``: good unless ``is_defect(score, threshold)``, else the most
        likely defect class (even where the good class is more likely).

        Args:
            scores: defect scores ``(B,)``.
            probs: class probabilities ``(B, C)``.
            threshold: default: the stored ``threshold``.
        """
        threshold = self.threshold if threshold is None else threshold
        defect_probs = probs.clone()
        defect_probs[:, self.good_index] = -1.0
        good = torch.full_like(scores, self.good_index, dtype=torch.long)
        return torch.where(is_defect(scores, threshold), defect_probs.argmax(dim=1), good)

    def check_size(self, images: Tensor) -> None:
        """Untiled: refuse images of another size than training's; tiled: any frame size."""
        if not self.tiled:
            super().check_size(images)
