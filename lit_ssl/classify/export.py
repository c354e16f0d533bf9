"""ONNX export of a DefectClassifier: float images in [0, 1] in, defect score out.

The graph contains the normalisation (it lives in the ``Backbone``), the network and the
softmax, so there is no preprocessing to re-implement next to the ONNX file: the only
input transform is "float32 in [0, 1], ``(B, in_chans, H, W)``".

Exporter: ``torch.onnx.export(..., dynamo=True)`` (torch.export + onnxscript). It is the
default since PyTorch 2.9 and the legacy TorchScript exporter is deprecated; both agree
with PyTorch to ~1e-7 on our backbones, the legacy one is only faster to run (~2 s vs
~10 s on 2 CPU cores). ``dynamo=False`` remains available as an escape hatch.

The graph is a trace of the classifier's torch model (``lit_ssl.classify.model.
ClassifierModel``, a CPU float32 copy of it): the very code that scores validation, test and
predict batches. Outputs: ``defect_score`` ``(B,)`` = ``1 - p(good)`` and ``probabilities``
``(B, C)``; the metadata's ``decision`` is ``"defect if defect_score > threshold"``
(:mod:`lit_ssl.decision`).

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
from torch import Tensor

from lit_ssl.classify.model import ClassifierModel
from lit_ssl.decision import decision_text
from lit_ssl.onnx_export import export_graph, input_size, read_metadata

__all__ = ["CLASSIFIER_ONNX", "Classifier", "classifier_metadata", "read_metadata", "to_onnx"]

CLASSIFIER_ONNX = "classifier.onnx"  # the file name in a run folder
OUTPUT_NAMES = ("defect_score", "probabilities")
TILE_OUTPUT = "tile_scores"


class Classifier(Protocol):
    """What the export reads of a ``DefectClassifier`` (this module never imports it)."""

    model: ClassifierModel
    class_names: list[str]
    threshold_from_validation: Tensor
    hparams: Any

    def export_metadata(self) -> dict[str, Any]: ...


def classifier_metadata(classifier: Classifier) -> dict[str, Any]:
    """What a deployment needs besides the graph: threshold, classes, input format."""
    model, hp = classifier.model, classifier.hparams
    size = [int(v) for v in model.input_size.tolist()]
    return {
        "threshold": float(model.threshold),
        "threshold_source": "validation"
        if bool(classifier.threshold_from_validation)
        else "default",
        "threshold_mode": hp.threshold_mode,
        "target_recall": float(hp.target_recall),
        "class_names": list(classifier.class_names),
        "good_class": hp.good_class,
        "good_index": model.good_index,
        "image_size": size if any(size) else None,
        "in_chans": model.backbone.in_chans,
        "backbone": model.backbone.name,
        "input_range": [0.0, 1.0],
        "decision": decision_text(OUTPUT_NAMES[0]),
        "tile_size": model.tile_size,
        "tile_stride": model.tile_stride,
    }


def export_copy(model: ClassifierModel, tile_map: bool = False) -> ClassifierModel:
    """A CPU float32 eval copy of the torch model to trace (the original is left as it is);
    ``tile_map``: its forward also returns the tile scores."""
    if tile_map and not model.tiled:
        raise ValueError("tile_map=True needs a tiled classifier (tile_size=N).")
    exported = copy.deepcopy(model).cpu().float().eval()
    exported.tile_map = tile_map
    return exported


def to_onnx(
    classifier: Classifier,
    path: str | Path,
    image_size: int | Sequence[int] | None = None,
    dynamo: bool = True,
    opset_version: int | None = None,
    tile_map: bool = False,
) -> Path:
    """Export ``classifier``'s torch model to ONNX with a dynamic batch axis and metadata.

    Args:
        classifier: a ``DefectClassifier`` (left unchanged; a CPU copy of its torch model
            ``classifier.model`` is traced).
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
    backbone = classifier.model.backbone
    recorded = metadata["image_size"] or backbone.image_size
    height, width = input_size(image_size, recorded, "classifier")
    model = export_copy(classifier.model, tile_map)
    example = torch.rand(2, backbone.in_chans, height, width)
    outputs = [*OUTPUT_NAMES, TILE_OUTPUT] if tile_map else list(OUTPUT_NAMES)
    metadata["image_size"] = [height, width]
    return export_graph(model, example, path, outputs, metadata, dynamo, opset_version)
