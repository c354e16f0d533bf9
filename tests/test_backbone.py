"""lit_ssl.Backbone: any timm model, 1/3 channels, features, weights and timm-loadable export."""

from __future__ import annotations

import json

import pytest
import timm
import torch

from lit_ssl import Backbone
from lit_ssl.backbone import load_backbone_config
from lit_ssl.backbone.encoding import dense_stride, encode_masked
from lit_ssl.masking import random_patch_mask

pytestmark = pytest.mark.usefixtures("single_thread")

NAMES = ["test_resnet", "test_vit", "test_convnext"]


def _images(in_chans: int, size: int = 32, batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, in_chans, size, size)


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("name", NAMES)
def test_pooled_and_dense_features(name, in_chans):
    backbone = Backbone(name, in_chans=in_chans, image_size=32).eval()
    x = _images(in_chans)
    pooled = backbone(x)
    assert pooled.shape == (2, backbone.embed_dim)
    assert backbone.embed_dim == timm.create_model(name, num_classes=0).num_features
    dense_pooled, dense = backbone.forward_dense(x)
    torch.testing.assert_close(dense_pooled, pooled)
    assert dense.ndim == 4 and dense.shape[:2] == (2, backbone.embed_dim)
    if backbone.is_vit:
        grid = 32 // backbone.patch_size
        assert dense.shape[2:] == (grid, grid)
    else:
        assert backbone.patch_size is None
        assert dense.shape[2] >= 1 and dense.shape[3] >= 1
    assert torch.isfinite(pooled).all() and torch.isfinite(dense).all()


def test_vit_dense_tokens_are_patch_tokens_on_grid():
    backbone = Backbone("test_vit", image_size=64).eval()
    x = _images(3, size=64)
    tokens = backbone.features(x)  # (B, prefix + h*w, D)
    _, dense = backbone.forward_dense(x)
    grid = 64 // backbone.patch_size
    patches = tokens[:, backbone.model.num_prefix_tokens :]
    assert patches.shape[1] == grid * grid
    # Token k is at row k // grid, column k % grid.
    torch.testing.assert_close(dense[:, :, 1, 2], patches[:, 1 * grid + 2])


def _dense_before_forward_intermediates(backbone: Backbone, x: torch.Tensor):
    """The computation ``forward_dense`` replaced: forward_features, square token grid."""
    features = backbone.features(x)
    if features.ndim == 3:
        tokens = features[:, backbone.model.num_prefix_tokens :]
        side = int(round(tokens.shape[1] ** 0.5))
        return backbone.pool(features), tokens.transpose(1, 2).reshape(len(x), -1, side, side)
    return backbone.pool(features), features


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("name", ["test_resnet", "test_vit", "test_convnext", "test_efficientnet"])
def test_dense_features_through_forward_intermediates_match_the_old_ones(name, in_chans):
    torch.manual_seed(0)
    backbone = Backbone(name, in_chans=in_chans, image_size=32).eval()
    x = _images(in_chans, batch=3)
    with torch.no_grad():
        pooled, dense = backbone.forward_dense(x)
        old_pooled, old_dense = _dense_before_forward_intermediates(backbone, x)
    assert dense.shape[1] == backbone.dense_dim
    torch.testing.assert_close(pooled, old_pooled, rtol=0, atol=0)
    torch.testing.assert_close(dense, old_dense, rtol=0, atol=0)


def test_vit_dense_grid_of_non_square_images():
    backbone = Backbone("test_vit", in_chans=1, image_size=32).eval()  # dynamic_img_size
    x = torch.rand(2, 1, 32, 64)
    with torch.no_grad():
        _, dense = backbone.forward_dense(x)
        tokens = backbone.features(x)[:, backbone.model.num_prefix_tokens :]
    assert dense.shape == (2, backbone.dense_dim, 2, 4)
    torch.testing.assert_close(dense[:, :, 1, 3], tokens[:, 1 * 4 + 3])


@pytest.mark.parametrize("name", ["test_vit", "test_resnet"])
def test_masked_encoding_on_non_square_images(name: str) -> None:
    torch.manual_seed(0)
    backbone = Backbone(name, in_chans=1, image_size=32).eval()
    images = torch.rand(2, 1, 32, 64)
    stride = dense_stride(backbone)
    assert stride == (16 if name == "test_vit" else 32)
    mask = random_patch_mask(2, (2, 4), 0.5)
    token = torch.zeros(1, 1, backbone.embed_dim) if backbone.is_vit else None
    pooled, dense = encode_masked(backbone, images, mask, mask_patch_size=16, mask_token=token)
    grid = (2, 4) if backbone.is_vit else (1, 2)
    assert pooled.shape == (2, backbone.embed_dim)
    assert dense.shape == (2, backbone.embed_dim, *grid)
    _, full = backbone.forward_dense(images)
    assert full.shape == dense.shape and not torch.allclose(full, dense)


def test_masked_vit_path_without_mask_equals_dense_features():
    """The custom ViT path (vit_embed + vit_encode) is the model's own forward, token for token."""
    backbone = Backbone("test_vit", in_chans=1, image_size=32).eval()
    images = torch.rand(2, 1, 32, 32)
    nothing = torch.zeros(2, 2, 2, dtype=torch.bool)
    token = torch.zeros(1, 1, backbone.embed_dim)
    with torch.no_grad():
        masked = encode_masked(backbone, images, nothing, mask_patch_size=16, mask_token=token)
        full = backbone.forward_dense(images)
    for a, b in zip(masked, full, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("in_chans", [1, 3])
def test_normalisation_buffers_in_state_dict(in_chans):
    backbone = Backbone("test_resnet", in_chans=in_chans)
    state = backbone.state_dict()
    assert state["mean"].shape == state["std"].shape == (1, in_chans, 1, 1)
    cfg = backbone.model.pretrained_cfg
    expected_mean = torch.tensor(cfg["mean"])
    expected_std = torch.tensor(cfg["std"])
    if in_chans == 1:
        expected_mean, expected_std = expected_mean.mean(), expected_std.mean()
    torch.testing.assert_close(state["mean"].flatten(), expected_mean.expand(in_chans))
    torch.testing.assert_close(state["std"].flatten(), expected_std.expand(in_chans))
    # Normalisation happens inside: the model sees (x - mean) / std.
    x = _images(in_chans)
    backbone.eval()
    torch.testing.assert_close(backbone(x), backbone.model((x - state["mean"]) / state["std"]))


def test_unknown_name_gives_clear_error():
    with pytest.raises(ValueError, match="Unknown timm architecture 'not_a_model'"):
        Backbone("not_a_model")


def test_bad_in_chans():
    with pytest.raises(ValueError, match="in_chans"):
        Backbone("test_resnet", in_chans=0)


@pytest.mark.parametrize(("name", "in_chans"), [("test_resnet", 1), ("test_vit", 3)])
def test_weights_round_trip(tmp_path, name, in_chans):
    backbone = Backbone(name, in_chans=in_chans, image_size=32).eval()
    path = backbone.export(tmp_path / "bb")  # suffix added
    assert path.suffix == ".safetensors" and path.is_file()
    config = load_backbone_config(path)
    assert config["name"] == name and config["in_chans"] == in_chans
    assert config["img_size"] == 32 and config["embed_dim"] == backbone.embed_dim
    assert config["mean"] == backbone.mean.flatten().tolist()
    assert config["std"] == backbone.std.flatten().tolist()
    json.loads(path.with_suffix(".json").read_text())  # plain json

    x = _images(in_chans)
    expected = backbone(x)
    torch.manual_seed(1)  # different random init: the weights must come from the file
    loaded = Backbone(name, in_chans=in_chans, image_size=32, weights=str(path)).eval()
    torch.testing.assert_close(loaded(x), expected, rtol=0, atol=0)
    rebuilt = Backbone.from_export(path).eval()
    torch.testing.assert_close(rebuilt(x), expected, rtol=0, atol=0)

    # A torch state dict (optionally under "state_dict") loads too.
    pt = tmp_path / "bb.pt"
    torch.save({"state_dict": backbone.model.state_dict()}, pt)
    from_pt = Backbone(name, in_chans=in_chans, image_size=32, weights=str(pt)).eval()
    torch.testing.assert_close(from_pt(x), expected, rtol=0, atol=0)


def test_weights_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        Backbone("test_resnet", weights=str(tmp_path / "missing.safetensors"))
    path = Backbone("test_resnet").export(tmp_path / "resnet.safetensors")
    with pytest.raises(ValueError, match="do not fit"):
        Backbone("test_convnext", weights=str(path))
    with pytest.raises(FileNotFoundError, match="No backbone config"):
        load_backbone_config(tmp_path / "other.safetensors")


@pytest.mark.parametrize(
    ("name", "in_chans", "image_size"),
    [
        ("test_resnet", 3, None),
        ("test_resnet", 1, None),
        ("test_convnext", 1, None),
        ("test_vit", 3, None),
        ("test_vit", 1, 32),
    ],
)
def test_export_loads_in_plain_timm(tmp_path, name, in_chans, image_size):
    torch.manual_seed(3)
    backbone = Backbone(name, in_chans=in_chans, image_size=image_size).eval()
    with torch.no_grad():  # move BN statistics away from the defaults
        for buffer_name, buffer in backbone.model.named_buffers():
            if buffer_name.endswith("running_mean"):
                buffer.normal_()
    path = backbone.export(tmp_path / f"{name}.safetensors")

    extra = {} if image_size is None else {"img_size": image_size}
    model = timm.create_model(
        name,
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(path)),
        num_classes=0,
        in_chans=in_chans,
        **extra,
    ).eval()
    size = image_size or backbone.model.pretrained_cfg["input_size"][-1]
    x = _images(in_chans, size=size)
    config = load_backbone_config(path)
    mean = torch.tensor(config["mean"]).reshape(1, -1, 1, 1)
    std = torch.tensor(config["std"]).reshape(1, -1, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model((x - mean) / std), backbone(x), rtol=1e-5, atol=1e-6)
