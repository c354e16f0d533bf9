"""lit_ssl: self-supervised pretraining and defect classification for inspection images.

Public names (see docs/): ``Backbone``, ``SSLModule``, ``DefectClassifier``,
``AnomalyDetector``, ``diagnose``,
and the subpackages ``heads``, ``losses``, ``augment``, ``data``, ``callbacks``, ``theory``.
"""

import importlib
import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

# Every class a checkpoint may name is imported here, so it has joined the allow-list
# (lit_ssl.allow_list) before any lit_ssl module can read a checkpoint.
from lit_ssl import data, heads, losses  # noqa: E402
from lit_ssl.anomaly.detector import AnomalyDetector  # noqa: E402
from lit_ssl.backbone import Backbone  # noqa: E402
from lit_ssl.classify.classifier import DefectClassifier  # noqa: E402
from lit_ssl.module import SSLModule  # noqa: E402

__version__ = "0.1.0"

_LAZY = {
    "diagnose": ("lit_ssl.diagnosis.estimate", "diagnose"),
    "augment": ("lit_ssl.augment", None),
    "callbacks": ("lit_ssl.callbacks", None),
    "theory": ("lit_ssl.theory", None),
}

__all__ = [
    "AnomalyDetector",
    "Backbone",
    "DefectClassifier",
    "SSLModule",
    "__version__",
    "data",
    "heads",
    "losses",
    *_LAZY,
]


def __getattr__(name: str):
    """Import the parts no checkpoint names (the diagnosis, theory) on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module 'lit_ssl' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value
