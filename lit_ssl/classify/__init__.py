"""Defect classification and deployment: the classifier, its thresholds and metrics,
predictions files and ONNX export.

``classifier.py`` (``DefectClassifier``), ``scoring.py`` (defect scores from logits),
``thresholds.py`` (validation-chosen decision thresholds), ``metrics.py`` (epoch metrics and
their figures), ``predictions.py`` (``predictions.csv`` writer), ``export.py`` (ONNX).
"""

from lit_ssl.classify.classifier import DefectClassifier
from lit_ssl.classify.predictions import PredictionsCSVWriter, write_predictions_csv

__all__ = ["DefectClassifier", "PredictionsCSVWriter", "write_predictions_csv"]
