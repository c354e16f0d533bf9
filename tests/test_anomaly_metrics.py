"""AUPRO (MVTec AD per-region overlap to 30% FPR) on a case computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from lit_ssl.anomaly.aupro import AUPRO, aupro, pro_curve

# Two 1x7 "images". Regions: R1 = 2 pixels (image 1), R2 = 1 pixel (image 2); one pixel of
# image 2 is unknown (-1) and scores highest, so counting it would change everything.
MASKS = torch.tensor([[[1, 1, 0, 0, 0, 0, 0]], [[0, 0, -1, 1, 0, 0, 0]]], dtype=torch.float32)
MAPS = torch.tensor([[[0.9, 0.5, 0.6, 0.1, 0.1, 0.1, 0.1]], [[0.1, 0.1, 5.0, 0.7, 0.1, 0.1, 0.1]]])


def test_aupro_of_a_case_computed_by_hand():
    # Thresholds from the top, (FPR over the 10 good pixels, PRO = mean share of each region):
    # 0.9: (0, 1/4)  0.7: (0, 3/4)  0.6: (1/10, 3/4)  0.5: (1/10, 1)  0.1: (1, 1)
    fpr, pro = pro_curve(MAPS, MASKS)
    expected = [(0, 0), (0, 0.25), (0, 0.75), (0.1, 0.75), (0.1, 1.0), (1.0, 1.0)]
    assert [
        (round(float(f), 6), round(float(p), 6)) for f, p in zip(fpr, pro, strict=False)
    ] == expected
    # area to FPR 0.3: 0.1 * 0.75 + 0.2 * 1 = 0.275, over 0.3
    assert math.isclose(float(aupro(MAPS, MASKS)), 0.275 / 0.3, abs_tol=1e-9)
    # to FPR 0.05 the curve is interpolated at 0.05: 0.05 * 0.75 / 0.05
    assert math.isclose(float(aupro(MAPS, MASKS, max_fpr=0.05)), 0.75, abs_tol=1e-9)


def test_regions_are_eight_connected_and_count_alike():
    # one big region (4 px, diagonal neighbours) and one small region: missing the small one
    # costs half the PRO whatever its size
    masks = torch.zeros(1, 5, 5)
    masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 2, 2] = masks[0, 3, 3] = 1
    masks[0, 0, 4] = 1
    maps = masks.clone()
    maps[0, 0, 4] = -1.0  # the small region is missed entirely (below every good pixel)
    assert math.isclose(float(aupro(maps, masks)), 0.5, abs_tol=1e-9)
    assert math.isclose(float(aupro(masks, masks)), 1.0, abs_tol=1e-9)


def test_the_metric_accumulates_batches_like_the_function():
    metric = AUPRO()
    metric.update(MAPS[:1, None], MASKS[:1, None])
    metric.update(MAPS[1:, None], MASKS[1:, None])
    assert math.isclose(float(metric.compute()), 0.275 / 0.3, rel_tol=1e-6)
    with pytest.raises(ValueError, match="defect regions"):
        aupro(MAPS, torch.zeros_like(MASKS))
