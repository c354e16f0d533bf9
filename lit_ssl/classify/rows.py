"""The classifier's per-image prediction rows (``predict_step``'s output, the CSV's rows)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from lit_ssl.classify.model import ClassifierScores

__all__ = ["prediction_rows"]


def prediction_rows(
    result: ClassifierScores,
    decisions: Tensor,
    labels: Tensor,
    paths: Sequence[str] | None,
    class_names: list[str],
    good_index: int,
) -> list[dict[str, Any]]:
    """One dict per image: path, defect_score, decision (``"defect"``/``"good"``),
    predicted_class, is_defect, label (class name, ``None`` when unknown), ``p_<class>``;
    tiled: ``tile_scores``, the image's ``(rows, cols)`` CPU tensor (not a CSV column).

    Args:
        result: the batch's scores (``ClassifierModel.score``).
        decisions: class decisions ``(B,)`` (``ClassifierModel.decide``).
        labels: class indices ``(B,)``, -1 unknown.
        paths: the images' paths, or ``None``.
        class_names: names of the class indices.
        good_index: index of the good class.
    """
    maps = result.tile_scores.cpu() if result.tile_scores is not None else None
    probs = result.probs.tolist()
    rows = []
    triples = zip(result.scores.tolist(), decisions.tolist(), labels.tolist(), strict=True)
    for i, (score, pred, label) in enumerate(triples):
        row = {
            "path": paths[i] if paths is not None else None,
            "defect_score": score,
            "decision": "good" if pred == good_index else "defect",
            "predicted_class": class_names[pred],
            "is_defect": pred != good_index,
            "label": class_names[label] if label >= 0 else None,
        }
        row.update({f"p_{c}": p for c, p in zip(class_names, probs[i], strict=True)})
        if maps is not None:
            row["tile_scores"] = maps[i]
        rows.append(row)
    return rows
