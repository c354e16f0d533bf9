"""StepOutput: what ``SSLModule``'s training and validation steps hand to callbacks.

Lightning wants a training step to return a Tensor, a dict with ``"loss"`` or ``None``, so
the step returns ``{"loss": loss, "step": StepOutput(...)}`` (:meth:`StepOutput.as_outputs`)
and callbacks read the record by attribute through :func:`step_output`. This module imports
no lit_ssl module at run time (ground floor).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from torch import Tensor

if TYPE_CHECKING:
    from lit_ssl.heads.base import HeadOutput

__all__ = ["StepOutput", "step_output"]

KEY = "step"  # the one key under which the record travels in Lightning's outputs dict


class StepOutput(NamedTuple):
    """One SSL step, as callbacks see it.

    Attributes:
        loss: the SSL loss; ``None`` for a validation batch too small for it.
        head_output: what the head returned (embeddings, features, loss terms); ``None``
            with ``loss``.
        labels: ``LongTensor (B,)`` of the batch, ``-1`` where unknown.
    """

    loss: Tensor | None
    head_output: HeadOutput | None
    labels: Tensor

    def as_outputs(self) -> dict[str, Any]:
        """The step's return value: Lightning's ``"loss"`` plus this record."""
        return {"loss": self.loss, KEY: self}


def step_output(outputs: Any) -> StepOutput | None:
    """The :class:`StepOutput` in a step's ``outputs`` (as a callback receives them), or
    ``None`` when the module is not an ``SSLModule`` (a plain loss, another dict)."""
    if isinstance(outputs, StepOutput):
        return outputs
    found = outputs.get(KEY) if isinstance(outputs, dict) else None
    return found if isinstance(found, StepOutput) else None
