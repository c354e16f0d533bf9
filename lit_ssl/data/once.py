"""Once-per-process notices: a warning or a log line said the first time only.

Readers run for every image of every epoch; what they have to say (a multi-page TIFF, a
channel conversion) is worth one line, not thousands.
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["log_once", "warn_once"]

log = logging.getLogger("lit_ssl.data")
_logged: set[str] = set()


def log_once(message: str) -> None:
    """Log ``message`` at INFO once per process."""
    if message not in _logged:
        _logged.add(message)
        log.info(message)


def warn_once(message: str) -> None:
    """Issue ``message`` as a ``UserWarning`` once per process."""
    if message not in _logged:
        _logged.add(message)
        warnings.warn(message, stacklevel=3)
