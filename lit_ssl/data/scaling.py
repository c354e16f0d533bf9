"""The one pixel scaling of a dataset: decided at setup from a fixed sample, said out loud.

The bit depth of 16-bit files and the scale of float files are inferred from a fixed sample of
the listed files (:func:`~lit_ssl.data.scan.sample_paths`: their scan statistics when the files
were verified, else decoded here), so the pixels are the same with and without
``verify_files``. What was inferred is said in a warning; so is a verified file that goes
beyond it (its pixels would be clipped).
"""

from __future__ import annotations

import os
import warnings

from lit_ssl.data.pixels import infer_bit_depth
from lit_ssl.data.scan import Scaling, ScanResult, infer_scaling, sample_paths, sample_stats

__all__ = ["dataset_scaling"]


def dataset_scaling(paths: list[str], scan: ScanResult, bit_depth: int | None) -> Scaling:
    """The dataset's bit depth and float scale, from a fixed sample of the listed files.

    Args:
        paths: Every listed file (readable or not), in the dataset's order.
        scan: The setup scan (empty when the files were not verified).
        bit_depth: The depth the user stated (None: inferred, with a warning).

    Returns:
        The scaling every image of the dataset gets.
    """
    picked = sample_paths(paths)
    if scan.scanned:
        stats = {p: scan.stats[p] for p in picked if p in scan.stats}
    else:
        stats = sample_stats(picked, min(8, os.cpu_count() or 1))
    scaling = infer_scaling(stats)
    which = (
        f"all {scaling.sampled} readable file(s)"
        if len(picked) == len(paths)
        else f"{scaling.sampled} file(s) spread over the {len(paths)}"
    )
    _say_inferred(scaling, which, bit_depth)
    if scan.scanned:
        _check_beyond(scaling, scan, which, bit_depth)
    return scaling


def _say_inferred(scaling: Scaling, which: str, bit_depth: int | None) -> None:
    if bit_depth is None and scaling.bit_depth is not None:
        bits = scaling.bit_depth
        warnings.warn(
            f"16-bit images are scaled as {bits}-bit (divided by {2**bits - 1}), inferred "
            f"from the largest value ({scaling.top_uint16}) of {which}; the same for every "
            "image; set bit_depth (--data.bit_depth) to state the camera's depth",
            stacklevel=6,
        )
    if scaling.float_scale == 255.0:
        warnings.warn(
            f"float images hold values up to {scaling.top_float:.6g} ({which}), above 1: "
            "they are read as 0-255 data and every float image is divided by 255 (not "
            "clipped); save them in [0, 1] or as 8/16-bit integers if that is wrong",
            stacklevel=6,
        )


def _check_beyond(scaling: Scaling, scan: ScanResult, which: str, bit_depth: int | None) -> None:
    """Warn when files the scan decoded (outside the sample) go beyond the scaling."""
    whole = infer_scaling(scan.stats)
    bits = bit_depth if bit_depth is not None else scaling.bit_depth
    if bit_depth is None and whole.top_uint16 > 2 ** (bits or 16) - 1:
        warnings.warn(
            f"16-bit images hold values up to {whole.top_uint16}, above the "
            f"{bits}-bit white inferred from {which}: those pixels are clipped to 1; set "
            f"bit_depth={infer_bit_depth(whole.top_uint16)} (--data.bit_depth)",
            stacklevel=6,
        )
    if whole.top_float is not None and whole.top_float > 1.0 and scaling.float_scale != 255:
        warnings.warn(
            f"float images hold values up to {whole.top_float:.6g}, but none of {which} "
            "went above 1: values above 1 are clipped to 1; save them in [0, 1] or as "
            "8/16-bit integers",
            stacklevel=6,
        )
