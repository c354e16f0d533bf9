"""ONNX export of a DefectClassifier: float images in [0, 1] in, defect score out.

The graph contains the normalisation (it lives in the ``Backbone``), the network and the
softmax, so there is no preprocessing to re-implement next to the ONNX file: the only
input transform is "float32 in [0, 1], ``(B, in_chans, H, W)``".

Exporter: ``torch.onnx.export(..., dynamo=True)`` (torch.export + onnxscript). It is the
default since PyTorch 2.9 and the legacy TorchScript exporter is deprecated; both agree
with PyTorch to ~1e-7 on our backbones, the legacy one is only faster to run (~2 s vs
~10 s on 2 CPU cores). ``dynamo=False`` remains available as an escape hatch.

Outputs: ``defect_score`` ``(B,)`` = ``1 - p(good)`` and ``probabilities`` ``(B, C)``.

Tiled classifiers (``tile_size``): the graph takes whole frames of the recorded size and
tiles inside (the same ``lit_ssl.classify.tiles`` ops: zero-padding to cover, then a reshape or
an index gather), so a deployment stays one call; ``defect_score`` is the maximum tile score and
``probabilities`` those of that tile. ``tile_map=True`` adds a third output, ``tile_scores``
``(B, rows, cols)``. ``tile_size``/``tile_stride`` (``null`` when untiled) are in the metadata.
The decision threshold, class names, good class, image size and channels are stored as
ONNX ``metadata_props``, every value JSON-encoded (``json.loads`` it; strings are quoted);
``read_metadata`` decodes them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from lit_ssl.backbone import Backbone
from lit_ssl.classify.scoring import defect_scores
from lit_ssl.classify.tiles import image_logits, tile_frames, tile_grid, tile_score_map
from lit_ssl.onnx_export import export_graph, input_size, read_metadata

__all__ = ["CLASSIFIER_ONNX", "Classifier", "ScoringModel", "read_metadata", "to_onnx"]

CLASSIFIER_ONNX = "classifier.onnx"  # the file name in a run folder
OUTPUT_NAMES = ("defect_score", "probabilities")
TILE_OUTPUT = "tile_scores"


class Classifier(Protocol):
    """What the export reads of a ``DefectClassifier`` (this module never imports it)."""

    backbone: Backbone
    head: nn.Module
    good_index: int
    hparams: Any

    def export_metadata(self) -> dict[str, Any]: ...


class ScoringModel(nn.Module):
    """The classifier's inference path as a plain module: images -> (defect_score, probs).

    Tiled classifiers tile inside; ``tile_map=True`` also returns the ``(B, rows, cols)``
    tile scores.
    """

    def __init__(self, classifier: Classifier, tile_map: bool = False) -> None:
        super().__init__()
        self.backbone = copy.deepcopy(classifier.backbone).cpu().eval()
        self.head = copy.deepcopy(classifier.head).cpu().eval()
        self.good_index = classifier.good_index
        self.tile_size = classifier.hparams.get("tile_size")
        self.tile_stride = classifier.hparams.get("tile_stride")
        if tile_map and self.tile_size is None:
            raise ValueError("tile_map=True needs a tiled classifier (tile_size=N).")
        self.tile_map = tile_map

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        if self.tile_size is None:
            return defect_scores(self.head(self.backbone(images)), self.good_index)
        tiles = tile_frames(images, self.tile_size, self.tile_stride)
        batch, count = tiles.shape[:2]
        logits = self.head(self.backbone(tiles.flatten(0, 1))).reshape(batch, count, -1)
        best, scores = image_logits(logits, self.good_index)
        outputs = defect_scores(best, self.good_index)
        if not self.tile_map:
            return outputs
        rows, cols = tile_grid(*images.shape[-2:], self.tile_size, self.tile_stride)
        return (*outputs, tile_score_map(scores, rows, cols))


def to_onnx(
    classifier: Classifier,
    path: str | Path,
    image_size: int | Sequence[int] | None = None,
    dynamo: bool = True,
    opset_version: int | None = None,
    tile_map: bool = False,
) -> Path:
    """Export ``classifier`` to ONNX with a dynamic batch axis and deployment metadata.

    Args:
        classifier: a ``DefectClassifier`` (left unchanged; a CPU copy is exported).
        path: output ``.onnx`` file.
        image_size: input ``H`` (square) or ``(H, W)``; default: the size seen in training,
            else the backbone's ``image_size``.
        dynamo: use the torch.export-based exporter (default) or the legacy one.
        opset_version: ONNX opset; ``None`` lets the exporter choose.
        tile_map: tiled classifiers: add the ``tile_scores`` ``(B, rows, cols)`` output.

    Returns:
        The written path.
    """
    metadata = classifier.export_metadata()
    recorded = metadata["image_size"] or classifier.backbone.image_size
    height, width = input_size(image_size, recorded, "classifier")
    model = ScoringModel(classifier, tile_map=tile_map).eval()
    example = torch.rand(2, classifier.backbone.in_chans, height, width)
    outputs = [*OUTPUT_NAMES, TILE_OUTPUT] if tile_map else list(OUTPUT_NAMES)
    metadata["image_size"] = [height, width]
    return export_graph(model, example, path, outputs, metadata, dynamo, opset_version)
