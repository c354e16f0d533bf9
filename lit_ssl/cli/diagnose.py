"""``lit-ssl diagnose``: the command line of ``lit_ssl.diagnose`` (lit_ssl/diagnosis/)."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from lit_ssl.diagnosis.estimate import diagnose

__all__ = ["main"]


_DESCRIPTION = """\
Which self-supervised head family fits your images and augmentation policy?

Samples images, draws pairs of views with the policy, and solves the paper's linear
reconstruction and joint-embedding objectives in closed form on them (Van Assel et al.
2025, Thms 3.1/3.2). Reports how much of the image variance the policy re-samples
(nuisance), how much of it each solution keeps, and, with >= 10 good and >= 10 defect
images, a linear-probe defect AUROC; then recommends joint_embedding, reconstruction or
hybrid with the numbers that led there. Under a minute on 2 CPU cores for 500 images."""

_EPILOG = """\
examples:
  lit-ssl diagnose                                   # embedded synthetic factory data
  lit-ssl diagnose --data.root /data/line3 --policy surface --output runs/diagnose
  lit-ssl diagnose --data.root /data/line3 --policy my_policy.yaml --in-chans 3

The output folder gets diagnose.json (all numbers), diagnose.md and diagnose.png.
See docs/choosing_a_head.md for how to read them."""

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
]


_SHOWN = {"--data.root": "default: embedded synthetic data", "--output": "default: print only"}
_SHOWN |= {"--k": "default: 1 2 4 8 16 32"}


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
        if flags[0] == "--k":
            kwargs["nargs"] = "+"
        if flags[0] == "--in-chans":
            kwargs.update(choices=(1, 3), metavar=None)
        parser.add_argument(*flags, dest=flags[0][2:].replace("-", "_").split(".")[-1], **kwargs)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``lit-ssl diagnose [--data.root DIR] [--policy NAME] ...``; returns the exit code."""
    args = _parser().parse_args(argv)
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
            args.output,
            progress=not args.quiet,
        )
    print(report.summary())
    if args.output:
        print(f"Wrote {Path(args.output) / 'diagnose.json'}, diagnose.md and diagnose.png")
    return 0
