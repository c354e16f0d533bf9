"""Defect detection from good images only (issue 14, first part): a memory bank of good patch
features (``memory_bank.py``: greedy coreset, nearest-neighbour distances) and the
``AnomalyDetector`` LightningModule (``detector.py``). Not yet: CLI recipe, AUPRO, ONNX export,
figures (see the tracker)."""

from lit_ssl.anomaly.detector import AnomalyDetector, false_alarm_threshold
from lit_ssl.anomaly.memory_bank import greedy_coreset, nearest_distances

__all__ = ["AnomalyDetector", "false_alarm_threshold", "greedy_coreset", "nearest_distances"]
