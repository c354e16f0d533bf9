"""The package's own ``lit-ssl`` subcommands: export, synth, preview, quickstart, diagnose."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "diagnose_main",
    "export_checkpoint",
    "export_main",
    "preview_augmentations",
    "preview_main",
    "quickstart_main",
    "synth_main",
]


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=f"lit-ssl {prog}", description=description)


# ----------------------------------------------------------------------------- export
def export_checkpoint(checkpoint: str | Path, output: str | Path | None = None) -> Path:
    """Export a Lightning checkpoint for deployment.

    An ``SSLModule`` checkpoint becomes ``backbone.safetensors`` + ``.json`` (timm loads
    it); a ``DefectClassifier`` checkpoint becomes ``classifier.onnx`` (float images in
    [0, 1] in, defect score out, threshold in the metadata); an ``AnomalyDetector``
    checkpoint becomes ``anomaly_detector.onnx`` (memory bank inside: images in, anomaly map
    and score out, threshold in the metadata). The file is read safely
    (``lit_ssl.checkpoints``: ``weights_only=True``, allow-listed classes only).

    Args:
        checkpoint: path of a ``.ckpt`` written by ``lit-ssl fit``.
        output: output file; defaults to the checkpoint's run folder.

    Returns:
        The written file.
    """
    from lit_ssl import checkpoints

    checkpoint = Path(checkpoint)
    kind = checkpoints.module_name(checkpoints.load_checkpoint(checkpoint))
    default_dir = (
        checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    )
    if kind == "SSLModule":  # the backbone alone: no head (e.g. a teacher file) is rebuilt
        from lit_ssl.backbone.loading import resolve_backbone

        backbone = resolve_backbone(None, checkpoint, None, None)
        return backbone.export(output or default_dir / "backbone.safetensors")
    if kind == "DefectClassifier":
        from lit_ssl.classify.classifier import DefectClassifier

        classifier = DefectClassifier.load_from_checkpoint(checkpoint, map_location="cpu")
        return Path(classifier.to_onnx(output or default_dir / "classifier.onnx"))
    if kind == "AnomalyDetector":
        from lit_ssl.anomaly.detector import AnomalyDetector
        from lit_ssl.anomaly.export import ANOMALY_ONNX

        detector = AnomalyDetector.load_from_checkpoint(checkpoint, map_location="cpu")
        return Path(detector.to_onnx(output or default_dir / ANOMALY_ONNX))
    raise ValueError(
        f"{checkpoint} is not an SSLModule, DefectClassifier or AnomalyDetector checkpoint; "
        "export checkpoints written by lit-ssl fit "
        "(runs/<recipe>/version_N/checkpoints/last.ckpt)."
    )


def export_main(argv: list[str]) -> int:
    """``lit-ssl export CKPT [--output FILE]``."""
    parser = _parser(
        "export", "Checkpoint -> backbone safetensors (SSL), classifier or anomaly detector ONNX."
    )
    parser.add_argument("checkpoint", help="a .ckpt written by lit-ssl fit")
    parser.add_argument("--output", default=None, help="output file (default: run folder)")
    args = parser.parse_args(argv)
    print(f"Wrote {export_checkpoint(args.checkpoint, args.output)}")
    return 0


# ----------------------------------------------------------------------------- synth
def synth_main(argv: list[str]) -> int:
    """``lit-ssl synth OUT [--nuisance X] [--image-size N] ...``."""
    from lit_ssl.data.synthetic import DEFECTS, MATERIALS, write_synthetic_dataset

    parser = _parser("synth", "Write a synthetic MVTec-style factory dataset with masks.")
    parser.add_argument("output", help="destination folder")
    parser.add_argument("--material", default="metal", choices=[*MATERIALS, "mixed"])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=3, choices=[1, 3])
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--n-test-good", type=int, default=40)
    parser.add_argument("--n-per-defect", type=int, default=40)
    parser.add_argument("--defects", nargs="+", default=list(DEFECTS), choices=list(DEFECTS))
    parser.add_argument("--nuisance", type=float, default=0.5, help="0 = none")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    root = write_synthetic_dataset(
        args.output,
        material=args.material,
        image_size=args.image_size,
        channels=args.channels,
        n_train=args.n_train,
        n_test_good=args.n_test_good,
        n_per_defect=args.n_per_defect,
        defects=args.defects,
        nuisance=args.nuisance,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    print(f"Wrote synthetic dataset to {root} (details in {root / 'synthetic.json'})")
    return 0


# ----------------------------------------------------------------------------- preview
def preview_augmentations(
    image: np.ndarray,
    policy_name: str,
    image_size: int,
    num_views: int,
    path: str | Path,
    seed: int = 0,
) -> Path:
    """Save one image and ``num_views`` views of it under a policy as a PNG grid.

    Args:
        image: float32 ``H x W x C`` image in [0, 1].
        policy_name: preset name or policy YAML file.
        image_size: output side of the views.
        num_views: number of views to draw.
        path: output PNG.
        seed: policy seed.
    """
    from lit_ssl.augment import policy
    from lit_ssl.figures import save_image_grid

    in_chans = image.shape[-1]
    compose = policy(policy_name, image_size=image_size, in_chans=in_chans, seed=seed)
    resize = policy("minimal", image_size=image_size, in_chans=in_chans)
    original = torch.from_numpy(resize(image=image)["image"]).permute(2, 0, 1)[None]
    views = torch.stack(
        [torch.from_numpy(compose(image=image)["image"]).permute(2, 0, 1) for _ in range(num_views)]
    )
    return save_image_grid(
        [original.expand(num_views, -1, -1, -1), views],
        ["original", f"{policy_name} views"],
        path,
        max_columns=num_views,
    )


def preview_main(argv: list[str]) -> int:
    """``lit-ssl preview [--image FILE] --policy surface --views 8 --output preview.png``."""
    from lit_ssl.data.io import read_image
    from lit_ssl.data.synthetic import generate_image

    parser = _parser("preview", "Save an augmentation preview: one image and N views of it.")
    parser.add_argument("--image", default=None, help="image file (default: a synthetic one)")
    parser.add_argument("--policy", default="surface", help="preset name or policy YAML")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--in-chans", type=int, default=3, choices=[1, 3])
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--output", default="augmentation_preview.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.image:
        image = read_image(args.image, in_chans=args.in_chans)
    else:
        rng = np.random.default_rng(args.seed)
        sample = generate_image(rng, "metal", "scratch", args.image_size, args.in_chans, 0.5, 0.01)
        image = sample.image
    path = preview_augmentations(
        image, args.policy, args.image_size, args.views, args.output, seed=args.seed
    )
    print(f"Wrote {path}")
    return 0


# ----------------------------------------------------------------------------- quickstart
def quickstart_main(argv: list[str]) -> int:
    """``lit-ssl quickstart [--fast]``: the end-to-end main job on embedded data."""
    from lit_ssl.cli.quickstart import main

    return main(argv)


# ----------------------------------------------------------------------------- diagnose
def diagnose_main(argv: list[str]) -> int:
    """``lit-ssl diagnose --data.root DIR --policy surface``: which head family fits."""
    from lit_ssl.cli.diagnose import main

    return main(argv)
