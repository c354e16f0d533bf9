"""A quiet face for ``lit-ssl``: lit_ssl's own lines, progress bars and real problems only.

Lightning prints, on every ``Trainer``, lines that mean nothing to someone training a defect
model (an advertisement, the accelerators it did not find, its own deprecations, a warning
about frozen modules in eval mode that lit_ssl freezes on purpose). ``quiet_lightning``
filters exactly those (by message, nothing else) and sends Lightning's remaining info lines
to stdout, so stderr holds only problems. ``lit-ssl --verbose`` keeps everything.
"""

from __future__ import annotations

import logging
import sys
import warnings

__all__ = ["NOISE", "WARNING_NOISE", "quiet_lightning"]

# Lightning info lines (logging) that carry nothing a lit_ssl user can act on.
NOISE = (
    "💡 Tip:",  # litlogger / litmodels advertisements
    "GPU available:",
    "TPU available:",
    "HPU available:",
    "IPU available:",
    "Loading `train_dataloader` to estimate number of stepping batches",
    "`Trainer.fit` stopped:",
    "The following callbacks returned in `LightningModule.configure_callbacks` will override",
    "You are using a CUDA device",
)

# Lightning/torch warnings that describe lit_ssl's deliberate choices, or Lightning's own
# internals (regular expressions matched at the start of the message).
WARNING_NOISE = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # inside Lightning, torch >= 2.9
    r"Found \d+ module\(s\) in eval mode",  # frozen backbones are in eval mode on purpose
    r"`LightningModule.configure_optimizers` returned `None`",  # AnomalyDetector: no gradients
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    r"LightningCLI's args parameter is intended",
)


class _DropNoise(logging.Filter):
    """Drop the log records whose message starts with one of ``NOISE``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(NOISE)


def quiet_lightning(verbose: bool = False) -> None:
    """Silence Lightning's noise (see ``NOISE``, ``WARNING_NOISE``) unless ``verbose``.

    Lightning's remaining info lines go to stdout. Idempotent; call it before any
    ``Trainer`` is built.

    Args:
        verbose: keep every line (``lit-ssl --verbose``).

    Example:
        >>> quiet_lightning()
    """
    import lightning.pytorch  # noqa: F401  (installs Lightning's own handlers)

    for name in ("lightning.pytorch", "lightning.fabric"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
                handler.setStream(sys.stdout)
            if not verbose and not any(isinstance(f, _DropNoise) for f in handler.filters):
                handler.addFilter(_DropNoise())
    if verbose:
        return
    for pattern in WARNING_NOISE:
        warnings.filterwarnings("ignore", message=pattern)
