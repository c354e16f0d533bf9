"""``lit-ssl diagnose``: the command line of ``lit_ssl.diagnose`` (lit_ssl/diagnosis/)."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from lit_ssl.backbone import Backbone
from lit_ssl.diagnosis.estimate import diagnose
from lit_ssl.diagnosis.sensitivity import DEFAULT_DEFECTS, SensitivityReport, check_defects

__all__ = ["main"]


_DESCRIPTION = """\
Which self-supervised head family fits your images and augmentation policy?

Samples images, draws pairs of views with the policy, and solves the paper's linear
reconstruction and joint-embedding objectives in closed form on them (Van Assel et al.
2025, Thms 3.1/3.2). Reports how much of the image variance the policy re-samples
(nuisance), how much of it each solution keeps, and, with >= 10 good and >= 10 defect
images, a linear-probe defect AUROC; then recommends joint_embedding, reconstruction or
hybrid with the numbers that led there. Under a minute on 2 CPU cores for 500 images.

With --weights (a trained backbone): also pastes synthetic scratches, cracks and spots
into good images and reports, per type, how far the backbone's patch features move
compared with randomly initialised backbones of the same architecture (below 1: the
pretraining taught it to ignore that defect type; see docs/policies.md)."""

_EPILOG = """\
examples:
  lit-ssl diagnose                                   # embedded synthetic factory data
  lit-ssl diagnose --data.root /data/line3 --policy surface --output runs/diagnose
  lit-ssl diagnose --data.root /data/line3 --policy my_policy.yaml --in-chans 3
  lit-ssl diagnose --data.root /data/line3 \\
      --weights runs/vicreg/version_0/backbone.safetensors --defects scratch crack spot

The output folder gets diagnose.json (all numbers), diagnose.md and diagnose.png.
See docs/choosing_a_head.md for how to read them, docs/policies.md for --weights."""

# flags, type, default, metavar, help ("store_true" as type: a switch)
_OPTIONS: list[tuple[tuple[str, ...], object, object, str | None, str]] = [
    (("--data.root", "--root"), str, None, "DIR", "dataset folder or CSV manifest"),
    (("--policy",), str, "surface", "NAME", "preset (surface|object|minimal|natural) or YAML"),
    (("--layout",), str, "auto", "NAME", "auto|mvtec|visa|class_folders|csv|unlabeled"),
    (("--num-images",), int, 300, "N", "images to sample; defects fill at most half"),
    (("--size",), int, 32, "PX", "side of the small images the policy produces"),
    (("--in-chans",), int, 1, "{1,3}", "1 = grey vectors, 3 = colour (3x longer)"),
    (("--pairs",), int, 2, "N", "pairs of views per image"),
    (("--k",), int, None, "K", "latent sizes of the closed forms"),
    (("--seed",), int, 0, "N", "seed of the sample and of the policy"),
    (("--output",), str, None, "DIR", "folder for diagnose.json, .md and .png"),
    (("--quiet",), "store_true", False, None, "no progress bars"),
    (("--weights",), str, None, "FILE", "backbone to check: backbone.safetensors or SSL .ckpt"),
    (("--defects",), str, list(DEFAULT_DEFECTS), "TYPE", "defect types to paste (--weights)"),
    (("--references",), int, 3, "N", "random backbones to compare with (--weights)"),
    (("--layers",), int, [1, 2], "N", "backbone stages of the patch features (--weights)"),
    (("--check-images",), int, 64, "N", "good images to paste defects into (--weights)"),
    (("--check-size",), int, None, "PX", "image side for the check (--weights)"),
]
_LISTS = ("--k", "--defects", "--layers")


_SHOWN = {"--data.root": "default: embedded synthetic data", "--output": "default: print only"}
_SHOWN |= {"--k": "default: 1 2 4 8 16 32", "--weights": "default: no check"}
_SHOWN |= {"--defects": "default: " + " ".join(DEFAULT_DEFECTS), "--layers": "default: 1 2"}
_SHOWN |= {"--check-size": "default: the backbone's image size, else 64"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lit-ssl diagnose",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for flags, kind, default, metavar, text in _OPTIONS:
        if kind == "store_true":
            parser.add_argument(*flags, action="store_true", help=text)
            continue
        shown = _SHOWN.get(flags[0], f"default: {default}")
        kwargs = dict(type=kind, default=default, metavar=metavar, help=f"{text} ({shown})")
        if flags[0] in _LISTS:
            kwargs["nargs"] = "+"
        if flags[0] == "--in-chans":
            kwargs.update(choices=(1, 3), metavar=None)
        parser.add_argument(*flags, dest=flags[0][2:].replace("-", "_").split(".")[-1], **kwargs)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``lit-ssl diagnose [--data.root DIR] [--policy NAME] ...``; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    check_defects(args.defects)
    _check_sensitivity_flags(args, parser)
    backbone = _backbone(args.weights, args.check_size, args.layers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        report = diagnose(
            args.root,
            args.policy,
            args.layout,
            args.num_images,
            args.size,
            args.in_chans,
            args.pairs,
            args.k,
            args.seed,
            None,
            progress=not args.quiet,
        )
        if backbone is not None:
            report.sensitivity = _sensitivity(args, backbone).to_dict()
    if args.output:
        report.save(args.output)
    print(report.summary())
    if args.output:
        print(f"Wrote {Path(args.output) / 'diagnose.json'}, diagnose.md and diagnose.png")
    return 0


_CHECK_FLAGS = ("defects", "references", "layers", "check_images", "check_size")


def _check_sensitivity_flags(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Refuse the check's settings without ``--weights`` (they would be ignored) or out of range."""
    given = [
        f"--{k.replace('_', '-')}"
        for k in _CHECK_FLAGS
        if getattr(args, k) != parser.get_default(k)
    ]
    if given and args.weights is None:
        raise ValueError(
            f"{' '.join(given)}: only for the defect-sensitivity check, which runs with --weights\n"
            "add --weights runs/<run>/version_0/backbone.safetensors (or an SSL .ckpt)"
        )
    if args.references < 1 or args.check_images < 4 or (args.check_size or 8) < 8:
        raise ValueError("need --references >= 1, --check-images >= 4 and --check-size >= 8")


def _backbone(weights: str | None, size: int | None, layers: list[int]) -> Backbone | None:
    """The backbone to check (None without ``--weights``), loaded before the long part.

    The check reads the images with the backbone's own channel count (``--in-chans`` is the
    linear diagnosis' setting).
    """
    if weights is None:
        return None
    from lit_ssl.anomaly.scoring import check_layers
    from lit_ssl.backbone.loading import resolve_backbone

    backbone = resolve_backbone(None, weights, None, size)
    check_layers(backbone, layers)
    return backbone


def _sensitivity(args: argparse.Namespace, backbone: Backbone) -> SensitivityReport:
    from lit_ssl.diagnosis.sampling import load_good_images
    from lit_ssl.diagnosis.sensitivity import defect_sensitivity

    size = args.check_size or backbone.image_size or 64
    images, notes = load_good_images(
        args.root,
        args.layout,
        args.check_images,
        size,
        backbone.in_chans,
        args.seed,
        progress=not args.quiet,
    )
    report = defect_sensitivity(
        images,
        backbone,
        defects=args.defects,
        references=args.references,
        layers=args.layers,
        seed=args.seed,
        progress=not args.quiet,
        name=f"{backbone.name} ({args.weights})",
    )
    report.warnings += notes
    return report
