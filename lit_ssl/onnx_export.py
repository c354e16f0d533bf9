"""Writing a scoring module to ONNX with deployment metadata (shared by every exporter).

Every lit_ssl export (``DefectClassifier``, ``AnomalyDetector``) is one graph with a single
``images`` input (float32 ``(B, C, H, W)`` in [0, 1]) and a dynamic batch axis; its metadata
is stored as ONNX ``metadata_props``, every value JSON-encoded (strict JSON: a NaN or inf
value, e.g. the threshold of a model with broken weights, is refused before anything is
written), and read back with :func:`read_metadata`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "INPUT_NAME",
    "encode_metadata",
    "export_graph",
    "input_size",
    "read_metadata",
    "write_metadata",
]

INPUT_NAME = "images"
_PROTOBUF_LIMIT = 2_000_000_000  # bytes; larger models must keep external weights


def input_size(
    image_size: int | Sequence[int] | None, recorded: int | Sequence[int] | None, what: str
) -> tuple[int, int]:
    """``(H, W)`` of the exported input: ``image_size``, else the size the model recorded.

    Args:
        image_size: Asked size (``H`` for a square, or ``(H, W)``), or None.
        recorded: Size the model saw in training (or its backbone's fixed size), or None.
        what: Name of the model in the error message (``"classifier"``, ``"detector"``).

    Raises:
        ValueError: Neither size is known.
    """
    size = image_size if image_size is not None else recorded
    if size is None:
        raise ValueError(
            f"Unknown input size: the {what} has not seen training images and its backbone "
            "has no image_size. Pass image_size=<training image size> to to_onnx."
        )
    if isinstance(size, int):
        return size, size
    height, width = (int(v) for v in size)
    return height, width


def encode_metadata(metadata: dict[str, Any]) -> dict[str, str]:
    """Each value as strict JSON text (no ``NaN``/``Infinity``, which JSON readers refuse).

    Raises:
        ValueError: a value holds a non-finite number (named in the message).

    Example:
        >>> encode_metadata({"threshold": 0.5, "layers": [1, 2]})
        {'threshold': '0.5', 'layers': '[1, 2]'}
    """
    encoded = {}
    for key, value in metadata.items():
        try:
            encoded[key] = json.dumps(value, allow_nan=False)
        except ValueError:
            raise ValueError(
                f"the export metadata {key!r} is not a finite number ({value!r}): the model is "
                "broken (NaN weights?).\nFit it again from finite weights before exporting it."
            ) from None
    return encoded


def export_graph(
    model: nn.Module,
    example: torch.Tensor,
    path: str | Path,
    output_names: Sequence[str],
    metadata: dict[str, Any],
    dynamo: bool = True,
    opset_version: int | None = None,
) -> Path:
    """Export ``model(images)`` with a dynamic batch axis, then store ``metadata`` in the file.

    Args:
        model: Module in eval mode taking one ``images`` tensor.
        example: Example input (its batch size is made dynamic).
        path: Output ``.onnx`` file (parent folders are created).
        output_names: Names of the model's outputs, in order.
        metadata: JSON-serialisable values stored as ``metadata_props``.
        dynamo: torch.export-based exporter (True) or the TorchScript one.
        opset_version: ONNX opset; None lets the exporter choose.

    Returns:
        The written path.
    """
    encode_metadata(metadata)  # refuse NaN/inf before the (slow) export writes anything
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {
        "input_names": [INPUT_NAME],
        "output_names": list(output_names),
        "opset_version": opset_version,
        "dynamo": dynamo,
    }
    if dynamo:
        kwargs["dynamic_shapes"] = {INPUT_NAME: {0: torch.export.Dim("batch")}}
        kwargs["verbose"] = False
    else:
        kwargs["dynamic_axes"] = {name: {0: "batch"} for name in (INPUT_NAME, *output_names)}
    with torch.no_grad():
        torch.onnx.export(model, (example,), str(path), **kwargs)
    write_metadata(path, metadata)
    return path


def write_metadata(path: str | Path, metadata: dict[str, Any]) -> None:
    """Replace the ``metadata_props`` of an ONNX file (values strict-JSON-encoded).

    Small models are saved as one self-contained file (the dynamo exporter's ``.data``
    weight file is folded in and removed); models over the 2 GB protobuf limit keep it.
    """
    import onnx

    encoded = encode_metadata(metadata)
    path = Path(path)
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in encoded.items():
        entry = proto.metadata_props.add()
        entry.key = key
        entry.value = value
    external = path.with_name(path.name + ".data")
    if proto.ByteSize() < _PROTOBUF_LIMIT:
        onnx.save(proto, str(path))
        external.unlink(missing_ok=True)
    else:
        onnx.save(proto, str(path), save_as_external_data=True, location=external.name)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The lit_ssl metadata of an exported ONNX file, JSON values decoded.

    Example:
        >>> read_metadata("runs/finetune/version_0/classifier.onnx")["threshold"]  # doctest: +SKIP
        0.42
    """
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {entry.key: json.loads(entry.value) for entry in proto.metadata_props}
