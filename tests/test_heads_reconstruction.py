"""Reconstruction heads: MAE, MaskedReconstruction, DenoisingAutoencoder."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from _head_data import BATCH, SIZE, gratings, make_views

from lit_ssl.backbone import Backbone
from lit_ssl.heads import MAE, DenoisingAutoencoder, MaskedReconstruction, SSLHead
from lit_ssl.losses import mae_loss, masked_pixel_loss
from lit_ssl.module import SSLModule

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: one thread


def build(name: str, head: SSLHead, chans: int, size: int = SIZE) -> Backbone:
    torch.manual_seed(0)
    backbone = Backbone(name, in_chans=chans, image_size=size)
    head.check_backbone(backbone)
    head.build(backbone)
    return backbone


def train_steps(
    name: str, head: SSLHead, chans: int, steps: int = 20, lr: float = 3e-3, size: int = SIZE
) -> list[float]:
    """AdamW steps on one fixed batch; returns the losses."""
    backbone = build(name, head, chans, size)
    params = [p for m in (backbone, head) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    views = make_views(head, gratings(BATCH, chans, size))
    losses = []
    for step in range(steps):
        output = head(backbone, views)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        head.on_optimizer_step(backbone, step / steps)
        losses.append(output.loss.item())
    return losses


def assert_overfits(losses: list[float], factor: float = 0.85) -> None:
    assert all(math.isfinite(v) for v in losses), losses
    start, end = sum(losses[:2]) / 2, sum(losses[-3:]) / 3
    assert end < factor * start, f"loss {start:.4f} -> {end:.4f}: {losses}"


HEADS: dict[str, Callable[[str], SSLHead]] = {
    "mae": lambda name: MAE(decoder_dim=64, decoder_depth=1, decoder_heads=2),
    # CNN: 8 px mask patches give a 4x4 mask grid on 32 px images (stride 32 -> 1x1 cells).
    "simmim": lambda name: MaskedReconstruction(mask_patch_size=16 if "vit" in name else 8),
    "dae": lambda name: DenoisingAutoencoder(decoder_channels=32),
}
CASES = [
    (head, name, chans)
    for head in HEADS
    for name in ("test_vit", "test_resnet")
    for chans in (1, 3)
    if not (head == "mae" and name == "test_resnet")
]


@pytest.mark.parametrize(("head", "name", "chans"), CASES)
def test_trains_and_overfits_fixed_batch(head: str, name: str, chans: int) -> None:
    assert_overfits(train_steps(name, HEADS[head](name), chans))


@pytest.mark.parametrize(("head", "name"), [(h, n) for h, n, c in CASES if c == 3])
def test_reconstructions_for_display(head: str, name: str) -> None:
    model = HEADS[head](name)
    backbone = build(name, model, 3)
    x = gratings(4, 3)
    views = make_views(model, x)
    output = model(backbone, views, return_reconstructions=True)
    rec = output.reconstructions
    assert rec is not None
    for image in (rec.input, rec.masked_input, rec.reconstruction):
        assert image.shape == x.shape and not image.requires_grad
        assert image.min() >= 0 and image.max() <= 1
    assert torch.equal(rec.input, views[-1])  # the clean view for the denoiser
    assert not torch.allclose(rec.masked_input, rec.input)
    if head != "dae":  # visible pixels are copied from the input, masked ones predicted
        visible = rec.masked_input == rec.input
        assert torch.equal(rec.reconstruction[visible], rec.input[visible])
    assert model(backbone, make_views(model, x)).reconstructions is None


@pytest.mark.parametrize(("head", "name"), [(h, n) for h, n, c in CASES if c == 1])
def test_bf16_autocast_step_keeps_float32_loss(head: str, name: str) -> None:
    model = HEADS[head](name)
    backbone = build(name, model, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(backbone, make_views(model, gratings(4, 1)))
    assert output.loss.dtype == torch.float32 and torch.isfinite(output.loss)
    output.loss.backward()
    grads = [p.grad for p in backbone.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_mae_rejects_cnn_with_clear_error() -> None:
    with pytest.raises(
        ValueError, match="needs a ViT backbone.*not a plain ViT.*MaskedReconstruction"
    ):
        SSLModule("test_resnet", head=MAE())


def test_mae_encoder_sees_visible_tokens_only() -> None:
    model = MAE(decoder_dim=32, decoder_depth=1, decoder_heads=2)
    backbone = build("test_vit", model, 3, size=64)
    lengths = []
    backbone.model.blocks[0].register_forward_hook(lambda m, i, o: lengths.append(i[0].shape[1]))
    model(backbone, [torch.rand(2, 3, 64, 64)])
    assert lengths == [1 + 4]  # class token + 4 of 16 patches (mask_ratio 0.75)


def test_mae_on_standard_vit() -> None:
    model = MAE(decoder_dim=32, decoder_depth=1, decoder_heads=2)
    backbone = build("vit_tiny_patch16_224", model, 1, size=64)
    output = model(backbone, [torch.rand(2, 1, 64, 64)], return_reconstructions=True)
    output.loss.backward()
    assert torch.isfinite(output.loss)
    assert output.reconstructions.reconstruction.shape == (2, 1, 64, 64)


def test_mae_loss_matches_definition() -> None:
    pred, target = torch.randn(2, 4, 12), torch.randn(2, 4, 12)
    mask = torch.tensor([[1, 0, 0, 1], [0, 1, 1, 1]], dtype=torch.bool)
    norm = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    expected = ((pred - norm) ** 2).mean(-1)[mask].mean()
    assert torch.allclose(mae_loss(pred, target, mask, True), expected, atol=1e-6)
    raw = ((pred - target) ** 2).mean(-1)[mask].mean()
    assert torch.allclose(mae_loss(pred, target, mask, False), raw, atol=1e-6)


def test_masked_pixel_loss_ignores_visible_pixels() -> None:
    pred, target = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    mask = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    mask[..., :4, :] = True
    loss = masked_pixel_loss(pred, target, mask, "l1")
    assert torch.allclose(loss, (pred - target).abs()[..., :4, :].mean())
    pred[..., 4:, :] += 10.0
    assert torch.allclose(masked_pixel_loss(pred, target, mask, "l1"), loss)
    assert torch.allclose(
        masked_pixel_loss(pred, target, mask, "l2"), ((pred - target) ** 2)[..., :4, :].mean()
    )


def test_masked_reconstruction_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="multiple of the ViT patch size"):
        SSLModule("test_vit", head=MaskedReconstruction(mask_patch_size=8), image_size=32)
    model = MaskedReconstruction(mask_patch_size=8)
    backbone = build("test_resnet", model, 1)
    with pytest.raises(ValueError, match="not a multiple"):
        model(backbone, [torch.rand(2, 1, 36, 36)])
    with pytest.raises(ValueError, match="mask_ratio"):
        MaskedReconstruction(mask_ratio=1.0)


def test_masked_reconstruction_on_non_square_cnn_images() -> None:
    model = MaskedReconstruction(mask_patch_size=16)
    backbone = build("test_resnet", model, 1)
    output = model(backbone, [torch.rand(2, 1, 32, 64)], return_reconstructions=True)
    assert output.reconstructions.reconstruction.shape == (2, 1, 32, 64)


def test_denoising_autoencoder_needs_clean_view_and_any_size() -> None:
    model = DenoisingAutoencoder(decoder_channels=16)
    assert model.num_views == 1 and model.clean_view
    backbone = build("test_resnet", model, 1)
    with pytest.raises(ValueError, match="clean"):
        model(backbone, [torch.rand(2, 1, 32, 32)])
    x = torch.rand(2, 1, 32, 48)
    output = model(backbone, [x, x], return_reconstructions=True)
    assert output.reconstructions.reconstruction.shape == x.shape
    assert output.features.shape == (2, backbone.embed_dim)


@pytest.mark.parametrize("make_head", [MaskedReconstruction, DenoisingAutoencoder])
def test_convnext_backbone(make_head: Callable[[], SSLHead]) -> None:
    model = make_head()
    backbone = build("test_convnext", model, 1)
    output = model(backbone, make_views(model, gratings(2, 1)), return_reconstructions=True)
    output.loss.backward()
    assert torch.isfinite(output.loss)
    assert output.reconstructions.reconstruction.shape == (2, 1, SIZE, SIZE)


@pytest.mark.parametrize("head", ["mae", "simmim"])
def test_non_square_images_on_dynamic_size_vit(head: str) -> None:
    model = HEADS[head]("test_vit")  # timm's test_vit has dynamic_image_size=True
    backbone = build("test_vit", model, 1)
    output = model(backbone, [torch.rand(2, 1, 32, 64)], return_reconstructions=True)
    output.loss.backward()
    assert torch.isfinite(output.loss)
    assert output.reconstructions.reconstruction.shape == (2, 1, 32, 64)


def test_denoising_decoder_sized_from_the_data_and_kept_by_checkpoints(
    tiny_factory_data, tmp_path, monkeypatch
) -> None:
    """No image_size anywhere but the datamodule's 32 px: the decoder decodes 32 px."""
    import lightning as L

    from lit_ssl.data import FactoryDataModule

    module = SSLModule("test_resnet", DenoisingAutoencoder(decoder_channels=16), in_chans=1)
    assert module.head.decoder is None  # not built for a guessed 224 px
    data = FactoryDataModule(
        str(tiny_factory_data), image_size=32, in_chans=1, batch_size=8, policy="minimal"
    )
    trainer = L.Trainer(
        max_steps=1, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(module, datamodule=data)
    head = module.head
    assert head.output_size == 32 and head.layout == (4, 3)
    assert module.hparams.head["init_args"]["image_size"] == 32

    def no_resize(*args, **kwargs):
        raise AssertionError("the decoder output was resized")

    x = torch.rand(2, 1, 32, 32)
    with monkeypatch.context() as patch:
        patch.setattr(torch.nn.functional, "interpolate", no_resize)
        output = head(module.backbone, [x, x], return_reconstructions=True)
    assert output.reconstructions.reconstruction.shape == (2, 1, 32, 32)

    path = tmp_path / "dae.ckpt"
    trainer.save_checkpoint(path)
    loaded = SSLModule.load_from_checkpoint(path)
    assert loaded.head.output_size == 32
    key = "head.decoder.0.weight"
    assert torch.equal(loaded.state_dict()[key], module.state_dict()[key])
    fresh = SSLModule("test_resnet", DenoisingAutoencoder(decoder_channels=16), in_chans=1)
    fresh.load_state_dict(module.state_dict())  # a lazily sized decoder exists before loading
    assert fresh.head.output_size == 32


def test_denoising_decoder_layouts_and_unsized_forward() -> None:
    sides = {n: DenoisingAutoencoder.decoder_layout(n) for n in (32, 48, 64, 224, 72)}
    assert sides == {32: (4, 3), 48: (3, 4), 64: (4, 4), 224: (7, 5), 72: (5, 4)}
    head = DenoisingAutoencoder(decoder_channels=16)
    backbone = Backbone("test_resnet", in_chans=1)
    head.build(backbone)
    x = torch.rand(2, 1, 48, 48)
    with pytest.raises(RuntimeError, match="image_size"):
        head(backbone, [x, x])
    head.configure_image_size(48)
    assert head(backbone, [x, x]).loss.isfinite()
    assert head.output_size == 48 and head._init_args["image_size"] == 48
