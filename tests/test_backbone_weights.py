"""``Backbone(name, weights=FILE)`` with checkpoints as users have them (timm / ImageNet style)."""

from __future__ import annotations

import logging
import os

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models import adapt_input_conv

from lit_ssl import Backbone, SSLModule
from lit_ssl.checkpoints import UntrustedCheckpointError

X = torch.rand(2, 3, 32, 32)


def _imagenet_model(name: str = "test_resnet", **kwargs) -> torch.nn.Module:
    """A timm model with its classifier, as an ImageNet checkpoint holds it."""
    torch.manual_seed(1)
    return timm.create_model(name, pretrained=False, num_classes=10, **kwargs).eval()


def _same_features(backbone: Backbone, model: torch.nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        expected = model.forward_head(model.forward_features(backbone.normalize(x)), True)
        torch.testing.assert_close(backbone.eval()(x), expected)


@pytest.mark.parametrize("wrapper", ["plain", "state_dict", "model", "ddp_module"])
def test_imagenet_style_torch_checkpoints_load_and_the_classifier_is_dropped(
    tmp_path, wrapper, caplog
):
    model = _imagenet_model()
    state = model.state_dict()
    assert "fc.weight" in state
    if wrapper == "ddp_module":
        state = {f"module.{k}": v for k, v in state.items()}
    payload = state if wrapper in ("plain", "ddp_module") else {wrapper: state, "epoch": 90}
    path = tmp_path / "resnet_imagenet.pth"
    torch.save(payload, path)
    with caplog.at_level(logging.WARNING, logger="lit_ssl.backbone.weights"):
        backbone = Backbone("test_resnet", weights=str(path))
    assert "dropped the classifier (fc.bias, fc.weight)" in caplog.text
    _same_features(backbone, model, X)


def test_hub_style_model_safetensors_loads(tmp_path):
    model = _imagenet_model("test_vit", img_size=32)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    backbone = Backbone("test_vit", image_size=32, weights=str(path))
    _same_features(backbone, model, X)


def test_three_channel_stem_fits_a_mono_backbone_as_timm_does(tmp_path, caplog):
    model = _imagenet_model()
    path = tmp_path / "rgb.pth"
    torch.save(model.state_dict(), path)
    with caplog.at_level(logging.WARNING, logger="lit_ssl.backbone.weights"):
        mono = Backbone("test_resnet", in_chans=1, weights=str(path))
    assert "3-channel stem" in caplog.text
    key = "conv1.0.weight"
    expected = adapt_input_conv(1, model.state_dict()[key])
    torch.testing.assert_close(mono.model.state_dict()[key], expected)


def test_vit_position_embedding_is_resampled_to_the_grid(tmp_path):
    model = _imagenet_model("test_vit", img_size=64)
    path = tmp_path / "vit64.pth"
    torch.save(model.state_dict(), path)
    backbone = Backbone("test_vit", image_size=32, weights=str(path))
    assert backbone(X).shape == (2, backbone.embed_dim)


def test_a_dinov2_hub_release_loads_with_its_mask_token_and_swiglu_names(tmp_path):
    """Meta's torch.hub DINOv2 files carry ``mask_token`` and name SwiGLU layers w12/w3:
    timm's ViT checkpoint filter converts them; the features are the model's own."""
    model = _imagenet_model("test_vit", img_size=32)
    state = {k.replace("mlp.fc1", "mlp.w12").replace("mlp.fc2", "mlp.w3"): v
             for k, v in model.state_dict().items()}  # fmt: skip
    state["mask_token"] = torch.zeros(1, model.embed_dim)
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(state, path)
    backbone = Backbone("test_vit", image_size=32, weights=str(path))
    _same_features(backbone, model, X)


def test_a_key_that_does_not_fit_is_named(tmp_path):
    state = _imagenet_model().state_dict()
    state.pop("layer1.0.conv1.weight")
    state["layer9.weight"] = torch.zeros(3)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"layer1\.0\.conv1\.weight.*layer9\.weight"):
        Backbone("test_resnet", weights=str(path))


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "vit.pth"
    torch.save(_imagenet_model("test_vit", img_size=32).state_dict(), path)
    with pytest.raises(ValueError, match="do not fit this backbone"):
        Backbone("test_resnet", weights=str(path))


def test_a_pickled_payload_in_a_weights_file_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'MARKER'}",)

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": _imagenet_model().state_dict(), "x": Payload()}, path)
    with pytest.raises(UntrustedCheckpointError):
        Backbone("test_resnet", weights=str(path))
    assert not (tmp_path / "MARKER").exists()


def test_pretrained_offline_is_a_clear_error(monkeypatch):
    create = timm.create_model

    def offline(name, pretrained=False, **kwargs):  # what the hub client raises offline
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co' to load this file")
        return create(name, pretrained=False, **kwargs)

    monkeypatch.setattr("lit_ssl.backbone.model.timm.create_model", offline)
    with pytest.raises(RuntimeError, match="Offline.*pass weights=FILE") as error:
        Backbone("resnet18", pretrained=True)
    assert len(str(error.value).splitlines()) == 2
    assert Backbone("test_resnet").embed_dim > 0  # without pretrained nothing is fetched


def test_ssl_module_continues_from_imagenet_weights(tmp_path):
    model = _imagenet_model()
    path = tmp_path / "imagenet.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    module = SSLModule("test_resnet", weights=str(path))
    _same_features(module.backbone, model, X)
    assert module.hparams.weights is None  # the weights live in the checkpoint from now on
