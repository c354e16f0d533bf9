"""Defect classification and deployment: the torch model, the classifier around it, its
thresholds and metrics, predictions files and ONNX export.

``model.py`` (``ClassifierModel``: backbone, head, tiles, scores, decision: the one inference
path), ``classifier.py`` (``DefectClassifier``, the LightningModule), ``head.py``,
``tiles.py``, ``scoring.py`` (defect scores from logits), ``loss.py`` (the training loss),
``class_weights.py`` (training label counts), ``options.py`` (constructor checks),
``thresholds.py`` (validation-chosen decision thresholds), ``metrics.py`` (epoch metrics and
their figures), ``rows.py`` and ``predictions.py`` (``predictions.csv``), ``heatmaps.py``,
``export.py`` (ONNX).
"""

from lit_ssl.classify.classifier import DefectClassifier
from lit_ssl.classify.predictions import PredictionsCSVWriter, write_predictions_csv

__all__ = ["DefectClassifier", "PredictionsCSVWriter", "write_predictions_csv"]
