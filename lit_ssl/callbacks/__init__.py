"""Lightning callbacks of lit_ssl."""

from lit_ssl.callbacks.data_wait import DataWait
from lit_ssl.callbacks.finetune import DefectFinetuning
from lit_ssl.callbacks.monitors import (
    CollapseMonitor,
    EmbeddingPlot,
    FiniteLossGuard,
    ReconstructionGrid,
)
from lit_ssl.callbacks.probe import OnlineProbe
from lit_ssl.callbacks.run_folder import ExportOnFitEnd

__all__ = [
    "CollapseMonitor",
    "DataWait",
    "DefectFinetuning",
    "EmbeddingPlot",
    "ExportOnFitEnd",
    "FiniteLossGuard",
    "OnlineProbe",
    "ReconstructionGrid",
]
