"""Tiled DefectClassifier: tiles are windows of the frame, image score = max tile score,
MIL / mask-tile training, heat maps from predict, tiled ONNX parity."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from _defect_data import trainer_kwargs
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from lit_ssl.classify.classifier import DefectClassifier
from lit_ssl.classify.export import read_metadata, to_onnx
from lit_ssl.classify.heatmaps import heatmap_name, pixel_scores
from lit_ssl.classify.tiles import (
    image_logits,
    mask_tile_labels,
    tile_frames,
    tile_grid,
    tile_image_losses,
)
from lit_ssl.data.batch import Batch


def _windows(frame: torch.Tensor, tile: int, stride: int) -> list[torch.Tensor]:
    """Reference: every tile cut by hand (row-major), zero-padded at the bottom/right."""
    rows, cols = tile_grid(frame.shape[-2], frame.shape[-1], tile, stride)
    out = []
    for i in range(rows):
        for j in range(cols):
            window = torch.zeros(frame.shape[0], tile, tile)
            part = frame[:, i * stride : i * stride + tile, j * stride : j * stride + tile]
            window[:, : part.shape[1], : part.shape[2]] = part
            out.append(window)
    return out


@pytest.mark.parametrize("tile,stride", [(16, 16), (16, 12), (64, 64)])
def test_tiles_are_native_windows_of_the_zero_padded_frame(tile, stride):
    frames = torch.rand(2, 3, 40, 56)
    tiles = tile_frames(frames, tile, stride)
    for b in range(2):
        expected = torch.stack(_windows(frames[b], tile, stride))
        assert torch.equal(tiles[b], expected)  # no resize: the frame's own pixels
    assert tile_grid(40, 56, 16, 16) == (3, 4) and tile_grid(40, 56, 64, 64) == (1, 1)


def test_image_score_is_the_max_tile_score_and_probs_are_that_tiles():
    torch.manual_seed(0)
    clf = DefectClassifier("test_resnet", tile_size=16, tile_stride=12, head="mlp").eval()
    frames = torch.rand(3, 3, 40, 48)
    with torch.no_grad():
        scores, probs = clf.predict_scores(frames)
        per_tile = [
            F.softmax(clf.head(clf.backbone(t)), dim=1)
            for t in map(torch.stack, zip(*[_windows(f, 16, 12) for f in frames], strict=True))
        ]
    tile_probs = torch.stack(per_tile, dim=1)  # (B, T, K), one forward per tile
    best = (1 - tile_probs[..., 0]).argmax(dim=1)
    torch.testing.assert_close(scores, (1 - tile_probs[..., 0]).max(dim=1).values)
    torch.testing.assert_close(probs, tile_probs[torch.arange(3), best])
    untiled = DefectClassifier("test_resnet").eval()  # tile_size=None: the whole image
    with torch.no_grad():
        logits = untiled.head(untiled.backbone(frames))
        torch.testing.assert_close(untiled.predict_scores(frames)[1], logits.softmax(dim=1))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"tile_size": 4}, "tile_size must be an integer >= 8"),
        ({"tile_size": 16, "tile_stride": 0}, "tile_stride must be an integer in"),
        ({"tile_size": 16, "tile_stride": 20}, "leave pixels unseen"),
        ({"tile_stride": 8}, "without tile_size"),
        ({"pretrained": True, "weights": "backbone.safetensors"}, "pretrained=True"),
    ],
)
def test_invalid_tile_and_pretrained_options_fail_early(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DefectClassifier("test_resnet", **kwargs)


def test_pretrained_is_passed_to_the_backbone_and_not_kept(monkeypatch):
    seen = {}

    def fake(name, in_chans, image_size, pretrained=False):
        seen["pretrained"] = pretrained
        return real(name, in_chans, image_size, False)

    import lit_ssl.backbone.model as model

    real = model._create_timm_model
    monkeypatch.setattr(model, "_create_timm_model", fake)
    clf = DefectClassifier("test_resnet", pretrained=True)
    assert seen == {"pretrained": True} and clf.hparams.pretrained is False


def test_mask_tile_labels_and_the_tile_losses():
    good, scratch = 0, 2
    masks = torch.zeros(3, 1, 32, 32)
    masks[0, 0, 20:23, 5:9] = 1  # a defect in the bottom-left tile (tile index 2)
    masks[2] = -1  # a defect image without its mask file
    labels = torch.tensor([scratch, good, scratch])
    tile_labels = mask_tile_labels(masks, labels, tile=16, stride=16, good_index=good)
    assert tile_labels.tolist() == [[0, 0, 2, 0], [0, 0, 0, 0], [-1, -1, -1, -1]]
    padded = mask_tile_labels(masks[:1, :, :, :24], labels[:1], 16, 16, good)
    assert padded.tolist() == [[0, 0, 2, 0]]  # grid padding is no label of its own

    logits = torch.randn(3, 4, 3)
    ce = lambda x, y: F.cross_entropy(x, y, reduction="none")  # noqa: E731
    losses = tile_image_losses(logits, labels, good, ce, tile_labels)
    mil = ce(image_logits(logits, good)[0], labels)
    tile_ce = ce(logits.reshape(12, 3), tile_labels.clamp(min=0).flatten()).reshape(3, 4)
    defect_part, good_part = tile_ce[0, 2], tile_ce[0, [0, 1, 3]].mean()
    torch.testing.assert_close(losses[0], (defect_part + good_part) / 2)
    torch.testing.assert_close(losses[1], tile_ce[1].mean())
    torch.testing.assert_close(losses[2], mil[2])  # unknown mask: multiple-instance
    torch.testing.assert_close(tile_image_losses(logits, labels, good, ce), mil)


def _frames(n: int, seed: int, size: int = 48) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grey textured frames; defects a small bright square somewhere (mask alike)."""
    gen = torch.Generator().manual_seed(seed)
    frames = 0.4 + 0.05 * torch.randn(n, 3, size, size, generator=gen)
    labels = torch.arange(n) % 2
    masks = torch.zeros(n, 1, size, size)
    corners = torch.randint(0, size - 6, (n, 2), generator=gen)
    for i in range(n):
        if labels[i]:
            y, x = corners[i].tolist()
            frames[i, :, y : y + 5, x : x + 5] = 1.0
            masks[i, :, y : y + 5, x : x + 5] = 1.0
    return frames.clamp(0, 1), labels, masks


class _MaskedFrames(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int, size: int) -> None:
        self.frames, self.labels, self.masks = _frames(n, seed, size)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Batch:
        return Batch([self.frames[i]], int(self.labels[i]), paths=f"f{i}.png", masks=self.masks[i])


def _collate(items: list[Batch]) -> Batch:
    from lit_ssl.data.batch import collate_batch

    return collate_batch(items)


def test_tiled_training_on_crops_then_whole_frames_records_the_frame_size(tmp_path):
    torch.manual_seed(0)
    clf = DefectClassifier("test_resnet", tile_size=16, threshold_mode="f1", save_figures=False)
    train = DataLoader(_MaskedFrames(16, 0, 32), batch_size=8, collate_fn=_collate)  # "crops"
    frames, labels, _ = _frames(16, 1)
    val = DataLoader(TensorDataset(frames, labels), batch_size=8)  # whole 48-px frames
    trainer = L.Trainer(max_epochs=1, **trainer_kwargs(tmp_path))
    trainer.fit(clf, train, val)
    assert clf.input_size.tolist() == [48, 48]  # the export takes whole frames
    assert bool(clf.threshold_from_validation)
    assert clf.export_metadata()["tile_size"] == 16 and clf.export_metadata()["tile_stride"] == 16


def test_predict_writes_heat_maps_of_flagged_images(tmp_path):
    torch.manual_seed(0)
    clf = DefectClassifier("test_resnet", tile_size=16, tile_stride=8).eval()
    frames, labels, _ = _frames(6, 2, size=40)
    paths = [str(tmp_path / "data" / "line" / f"{i}.tif") for i in range(6)]
    with torch.no_grad():
        scores = clf.predict_scores(frames)[0]
    clf.threshold.fill_(float(scores.median()))  # about half flagged
    data = [(frames[i], labels[i], paths[i]) for i in range(6)]
    trainer = L.Trainer(**trainer_kwargs(tmp_path))
    trainer.predict(clf, DataLoader(data, batch_size=4))
    with (tmp_path / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    flagged = [r for r in rows if r["decision"] == "defect"]
    assert 0 < len(flagged) < 6
    assert all(r["heatmap"] == "" for r in rows if r["decision"] == "good")
    written = sorted(
        p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("heatmaps/**/*.png")
    )
    assert written == sorted(r["heatmap"] for r in flagged)
    assert all(
        r["heatmap"].endswith("/data/line/" + Path(r["path"]).name + ".png") for r in flagged
    )
    picture = np.asarray(Image.open(tmp_path / flagged[0]["heatmap"]))
    assert picture.shape == (40, 80, 3)  # the frame, and the frame with its tile scores


def test_heat_map_pixels_take_the_highest_covering_tile_and_names_follow_paths():
    tile_map = torch.tensor([[0.1, 0.9], [0.3, 0.2]])
    pixels = pixel_scores(tile_map, 24, 24, tile=16, stride=8)
    assert pixels.shape == (24, 24)
    assert pixels[0, 0] == pytest.approx(0.1) and pixels[0, 20] == pytest.approx(0.9)
    assert pixels[12, 12] == pytest.approx(0.9) and pixels[20, 4] == pytest.approx(0.3)
    assert heatmap_name("/d/a/b c.png", "/d") == "a/b c.png.png"
    assert heatmap_name("/d/a__b.png", "/d") == "a__b.png.png"
    assert heatmap_name("/d/../e/f.png", "/d") == "e/f.png.png"  # not below /d: whole path
    assert heatmap_name(None, index=3) == "image_000003.png"


def test_tiled_onnx_takes_whole_frames_and_matches_pytorch(tmp_path):
    torch.manual_seed(0)
    clf = DefectClassifier("test_resnet", tile_size=16, tile_stride=12, head="mlp")
    with torch.no_grad():
        clf.head[0].running_mean.normal_()
        clf.head[0].running_var.uniform_(0.5, 2.0)
    clf.input_size.copy_(torch.tensor([40, 52]))
    # the legacy exporter here for speed; the journey checks the default (dynamo) one
    path = to_onnx(clf, tmp_path / "tiled.onnx", tile_map=True, dynamo=False)
    metadata = read_metadata(path)
    assert metadata["image_size"] == [40, 52]
    assert (metadata["tile_size"], metadata["tile_stride"]) == (16, 12)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    frames = np.random.default_rng(0).random((3, 3, 40, 52), dtype=np.float32)
    scores, probs, tile_scores = session.run(None, {"images": frames})
    clf.eval()
    with torch.no_grad():
        expected_logits, expected_tiles = image_logits(
            clf.forward_tiles(torch.from_numpy(frames)), clf.good_index
        )
        expected_scores, expected_probs = clf.scores_from_logits(expected_logits)
    assert tile_scores.shape == (3, *clf.tile_grid(40, 52))
    np.testing.assert_allclose(scores, expected_scores.numpy(), atol=1e-4)
    np.testing.assert_allclose(probs, expected_probs.numpy(), atol=1e-4)
    np.testing.assert_allclose(tile_scores.reshape(3, -1), expected_tiles.numpy(), atol=1e-4)
