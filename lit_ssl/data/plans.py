"""What every (task, stage) pair of :class:`~lit_ssl.data.FactoryDataModule` gets, as one table.

The data module never branches on its task: each loader reads its row of :data:`PLANS`.

=========  ========  =========  =====  ========  =====  =========  =====  =====
task       stage     augmented  views  labelled  masks  drop_last  aimed  types
=========  ========  =========  =====  ========  =====  =========  =====  =====
ssl        train     yes        model  no        no     yes        no     no
ssl        val       yes        model  no        no     no         no     yes
ssl        test      no         1      no        yes    no         no     yes
ssl        predict   no         1      no        yes    no         no     yes
classify   train     yes        1      yes       yes    yes        yes    no
classify   val       no         1      yes       yes    no         no     yes
classify   test      no         1      yes       yes    no         no     yes
classify   predict   no         1      no        yes    no         no     yes
anomaly    train     no         1      no        yes    no         no     no
anomaly    val       no         1      no        yes    no         no     yes
anomaly    test      no         1      no        yes    no         no     yes
anomaly    predict   no         1      no        yes    no         no     yes
=========  ========  =========  =====  ========  =====  =========  =====  =====

Every stage reads its own split, except predict, which reads every sample; train shuffles and
reads the labels left after ``label_fraction``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "LOADER_STAGES",
    "PLANS",
    "STAGES",
    "TASKS",
    "StagePlan",
    "Task",
    "loader_stages",
    "plan",
]

Task = Literal["ssl", "classify", "anomaly"]
Stage = Literal["train", "val", "test", "predict"]
TASKS: tuple[Task, ...] = ("ssl", "classify", "anomaly")
STAGES: tuple[Stage, ...] = ("train", "val", "test", "predict")
# The loaders a Lightning stage builds (``setup(None)``: every labelled one).
LOADER_STAGES: dict[str | None, tuple[Stage, ...]] = {
    None: ("train", "val", "test"),
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": ("predict",),
}


@dataclass(frozen=True)
class StagePlan:
    """What one loader of one task yields.

    Attributes:
        augmented: The view policies run (else resize only, ``"minimal"``); with ``crop_size``
            the views are windows of the native frame; the only stages ``augment_on`` may move
            to the device.
        views: ``"model"``: as many views as the model's ``view_spec`` asks for (plus its clean
            view); ``1``: one view.
        labelled_only: Only samples with a known label, and the data must have labels.
        masks: Defect masks ride along (when the dataset has mask files and the frame is
            whole, not a window).
        drop_last: The last incomplete batch may be dropped (``drop_last=True``).
        aimed: A masked defect image's window holds defect pixels (with ``crop_size``).
        types: Batches carry the defect types (before a ``binary`` merge).
    """

    augmented: bool
    views: Literal["model", 1]
    labelled_only: bool
    masks: bool
    drop_last: bool = False
    aimed: bool = False
    types: bool = True


_EVALUATE = StagePlan(augmented=False, views=1, labelled_only=False, masks=True)
_CLASSIFY_EVALUATE = StagePlan(augmented=False, views=1, labelled_only=True, masks=True)

PLANS: dict[tuple[Task, Stage], StagePlan] = {
    ("ssl", "train"): StagePlan(True, "model", False, False, drop_last=True, types=False),
    ("ssl", "val"): StagePlan(True, "model", False, False),
    ("ssl", "test"): _EVALUATE,
    ("ssl", "predict"): _EVALUATE,
    ("classify", "train"): StagePlan(True, 1, True, True, drop_last=True, aimed=True, types=False),
    ("classify", "val"): _CLASSIFY_EVALUATE,
    ("classify", "test"): _CLASSIFY_EVALUATE,
    ("classify", "predict"): _EVALUATE,  # a plain folder of new images: no labels needed
    ("anomaly", "train"): StagePlan(False, 1, False, True, types=False),  # the bank: every image
    ("anomaly", "val"): _EVALUATE,
    ("anomaly", "test"): _EVALUATE,
    ("anomaly", "predict"): _EVALUATE,
}


def plan(task: str, stage: str) -> StagePlan:
    """The row of :data:`PLANS` for ``(task, stage)``."""
    return PLANS[task, stage]  # type: ignore[index]


def loader_stages(stage: str | None) -> tuple[Stage, ...]:
    """The loader stages a Lightning stage (``fit``, ``validate``, ``test``, ``predict``,
    or None for all labelled ones) builds."""
    return LOADER_STAGES.get(stage, ())
