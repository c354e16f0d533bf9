"""Defect detection from good images only (issue 14): the torch model, the one inference
path (``model.py``: backbone, patch features, bank, maps, scores, decision), its building
blocks (``scoring.py``; ``memory_bank.py``: greedy coreset, nearest-neighbour distances), the
``AnomalyDetector`` LightningModule around it (``detector.py``), AUPRO (``aupro.py``), the
ONNX export with the bank inside (``export.py``), predict's CSV and map PNGs
(``predictions.py``) and the anomaly-map figures (``figures.py``)."""

from lit_ssl.anomaly.aupro import AUPRO, aupro
from lit_ssl.anomaly.detector import AnomalyDetector, false_alarm_threshold
from lit_ssl.anomaly.memory_bank import greedy_coreset, nearest_distances

__all__ = [
    "AUPRO",
    "AnomalyDetector",
    "aupro",
    "false_alarm_threshold",
    "greedy_coreset",
    "nearest_distances",
]
