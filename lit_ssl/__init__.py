"""lit_ssl: self-supervised pretraining and defect classification for inspection images."""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from lit_ssl import heads, losses  # noqa: E402
from lit_ssl.backbone import Backbone  # noqa: E402
from lit_ssl.module import SSLModule  # noqa: E402

__version__ = "0.1.0"

__all__ = ["Backbone", "SSLModule", "__version__", "heads", "losses"]
