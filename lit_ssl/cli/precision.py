"""The precision a run gets when the recipe and the command line leave it unset.

On a CUDA GPU: ``bf16-mixed`` (``16-mixed`` where the GPU has no bfloat16) — the heads compute
their losses in float32 under autocast, so this is the fast setting with nothing to tune; on a
CPU: ``32-true``. A ``--trainer.precision`` on the command line or ``trainer.precision`` in the
recipe always wins; ``--print_config`` shows the value chosen.
"""

from __future__ import annotations

import torch

__all__ = ["auto_precision", "cpu_precision"]


def auto_precision(cuda: bool | None = None) -> str:
    """``bf16-mixed`` on a CUDA machine with bfloat16, ``16-mixed`` without, else ``32-true``.

    Args:
        cuda: whether the run will be on a CUDA GPU; ``None``: whether one is available.

    Example:
        >>> auto_precision(cuda=False)
        '32-true'
    """
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if not cuda:
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def cpu_precision(precision: object, accelerator: object, explicit: bool) -> object:
    """The precision to use once the accelerator is known: the automatic GPU default on a run
    the user put on the CPU (``--trainer.accelerator cpu``) falls back to ``32-true``; an
    explicit precision is kept as given."""
    automatic = not explicit and precision == auto_precision() != "32-true"
    return "32-true" if automatic and str(accelerator) == "cpu" else precision
