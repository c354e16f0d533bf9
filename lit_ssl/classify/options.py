"""The classifier's constructor checks: options, class names, and the backbone it is built on."""

from __future__ import annotations

from collections.abc import Sequence

from lit_ssl.backbone import Backbone
from lit_ssl.backbone.loading import DEFAULT_BACKBONE, resolve_backbone
from lit_ssl.data.table import good_index

__all__ = [
    "build_backbone",
    "check_classes",
    "check_options",
    "check_tile_backbone",
    "data_class_names",
]


def check_classes(classes: list[str] | None, good_class: str) -> list[str]:
    """The class names (``[good_class, "defect"]`` when ``None``), checked."""
    classes = [good_class, "defect"] if classes is None else list(classes)
    if len(classes) < 2:
        raise ValueError(f"Need at least 2 classes (good + defect types), got {classes}.")
    if len(set(classes)) != len(classes):
        raise ValueError(f"Class names must be unique, got {classes}.")
    if good_class not in classes:
        raise ValueError(f"good_class={good_class!r} is not one of classes={classes}.")
    return classes


def check_options(
    head: str,
    loss: str,
    threshold_mode: str,
    target_recall: float,
    class_weights: str | list[float],
    classes: list[str],
) -> None:
    """Refuse unknown option values with the allowed ones."""
    if head not in ("linear", "mlp"):
        raise ValueError(f"head must be 'linear' or 'mlp', got {head!r}.")
    if loss not in ("cross_entropy", "focal"):
        raise ValueError(f"loss must be 'cross_entropy' or 'focal', got {loss!r}.")
    if threshold_mode not in ("f1", "recall"):
        raise ValueError(f"threshold_mode must be 'f1' or 'recall', got {threshold_mode!r}.")
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall}.")
    if isinstance(class_weights, list):
        if len(class_weights) != len(classes):
            raise ValueError(
                f"{len(class_weights)} class_weights for {len(classes)} classes {classes}."
            )
    elif class_weights not in ("balanced", "none"):
        raise ValueError(
            f"class_weights must be 'balanced', 'none' or a list, got {class_weights!r}."
        )


def build_backbone(
    backbone: str | Backbone | None,
    weights: str | None,
    in_chans: int | None,
    image_size: int | None,
    pretrained: bool,
) -> Backbone:
    """The backbone from a name / instance / weights file, or timm's pretrained weights."""
    if not pretrained:
        return resolve_backbone(backbone, weights, in_chans, image_size)
    if weights is not None or isinstance(backbone, Backbone):
        raise ValueError(
            "pretrained=True takes timm's weights for a backbone given by name: do not also "
            "give weights=FILE or a Backbone instance."
        )
    return Backbone(backbone or DEFAULT_BACKBONE, in_chans or 3, image_size, pretrained=True)


def _fixed_input(backbone: Backbone) -> tuple[int, int] | None:
    """The input size a fixed-size ViT needs, ``None`` for any-size backbones."""
    model = backbone.model
    if not backbone.is_vit or getattr(model, "dynamic_img_size", False):
        return None
    return tuple(int(v) for v in model.patch_embed.img_size)


def check_tile_backbone(backbone: Backbone, tile_size: int | None) -> None:
    """Refuse tiles of another size than a fixed-size backbone takes."""
    fixed = _fixed_input(backbone)
    if tile_size is not None and fixed is not None and fixed != (tile_size, tile_size):
        raise ValueError(
            f"The backbone {backbone.name!r} takes {fixed[0]}x{fixed[1]} inputs but sees tiles "
            f"of tile_size={tile_size}: build it with image_size={tile_size}."
        )


def data_class_names(
    data_names: Sequence[str] | None, classes: list[str], from_data: bool
) -> list[str]:
    """The class names to use once the datamodule's are known.

    Args:
        data_names: the datamodule's ``class_names`` (``None``/empty: it names none).
        classes: the classifier's names.
        from_data: the classifier was built with ``class_names=None`` (good vs defect, as the
            data names them): a two-class datamodule's names with a good class are taken.

    Raises:
        ValueError: the datamodule's classes differ from the classifier's (order matters).
    """
    if not data_names or list(data_names) == classes:
        return classes
    names = list(data_names)
    if from_data and len(names) == len(classes) and good_index(names) is not None:
        return names
    raise ValueError(
        f"The datamodule's classes {names} differ from the classifier's {classes} (order "
        "matters: labels are indices). Build the classifier with "
        "class_names=datamodule.class_names."
    )
