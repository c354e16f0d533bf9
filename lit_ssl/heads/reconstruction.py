"""Reconstruction heads: MAE (ViT), MaskedReconstruction (SimMIM, any backbone) and
DenoisingAutoencoder (bottleneck, any backbone).

All predict pixels in the backbone's normalised input space; losses are computed in
float32 even under autocast; ``return_reconstructions=True`` adds images in [0, 1] for
display (input, masked or corrupted input, reconstruction).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from lit_ssl.backbone import Backbone
from lit_ssl.backbone.encoding import (
    check_mask_patch,
    check_vit,
    dense_stride,
    encode_masked,
    vit_embed,
    vit_encode,
)
from lit_ssl.heads.base import HeadOutput, Reconstructions, SSLHead
from lit_ssl.losses import NORM_PIX_EPS, denoising_loss, mae_loss, masked_pixel_loss
from lit_ssl.masking import (
    Fill,
    check_fill,
    check_mask_ratio,
    fill_masked,
    gather_tokens,
    keep_indices,
    mask_to_pixels,
    num_masked_patches,
    patch_grid,
    patchify,
    random_patch_mask,
    random_patch_mask_for,
    unpatchify,
)

__all__ = ["MAE", "DenoisingAutoencoder", "MaskedReconstruction", "sincos_2d", "to_unit_range"]


def to_unit_range(backbone: Backbone, normalised: Tensor) -> Tensor:
    """Map images from the backbone's normalised space back to [0, 1] (clamped, detached)."""
    image = normalised.detach().float() * backbone.std + backbone.mean
    return image.clamp(0.0, 1.0)


def sincos_2d(grid: tuple[int, int], dim: int, device: torch.device | None = None) -> Tensor:
    """Fixed 2D sine-cosine position embedding ``(h * w, dim)`` (MAE's decoder), any grid."""
    if dim % 4:
        raise ValueError(f"sincos position embedding needs dim divisible by 4, got {dim}.")
    h, w = grid
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, device=device, dtype=torch.float32) / (dim / 4))
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32),
        indexing="ij",
    )
    out_y, out_x = ys.reshape(-1, 1) * omega, xs.reshape(-1, 1) * omega
    return torch.cat([out_y.sin(), out_y.cos(), out_x.sin(), out_x.cos()], dim=1)


def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class MAE(SSLHead):
    """Masked autoencoder (He et al. 2022) for timm ViT backbones.

    A random ``mask_ratio`` of the patches is dropped; the backbone's blocks see only the
    visible tokens (plus class/register tokens); a light transformer decoder (fixed 2D
    sin-cos positions, works for any patch grid) predicts the pixels of all patches and the
    loss is taken on the masked ones, against per-patch normalised targets by default.

    Args:
        mask_ratio: fraction of patches masked (exact per image, rounded).
        decoder_dim: decoder width (divisible by 4 and by ``decoder_heads``).
        decoder_depth: number of decoder transformer blocks.
        decoder_heads: attention heads of the decoder.
        norm_pix_loss: normalise each target patch by its mean/std (MAE's best setting).
    """

    family = "reconstruction"
    num_views = 1

    def __init__(
        self,
        mask_ratio: float = 0.75,
        decoder_dim: int = 256,
        decoder_depth: int = 2,
        decoder_heads: int = 8,
        norm_pix_loss: bool = True,
    ) -> None:
        super().__init__()
        check_mask_ratio(mask_ratio)
        if decoder_dim % 4 or decoder_dim % decoder_heads:
            raise ValueError(
                f"decoder_dim={decoder_dim} must be divisible by 4 and by decoder_heads="
                f"{decoder_heads}."
            )
        self.mask_ratio = mask_ratio
        self.decoder_dim = decoder_dim
        self.decoder_depth = decoder_depth
        self.decoder_heads = decoder_heads
        self.norm_pix_loss = norm_pix_loss
        self.decoder: nn.ModuleDict | None = None
        self.mask_token: nn.Parameter | None = None

    def check_backbone(self, backbone: Backbone) -> None:
        check_vit(backbone, "MAE")

    def build(self, backbone: Backbone) -> None:
        self.check_backbone(backbone)
        dim, patch = self.decoder_dim, int(backbone.patch_size)
        norm = partial(nn.LayerNorm, eps=1e-6)
        blocks = [
            Block(dim, self.decoder_heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=norm)
            for _ in range(self.decoder_depth)
        ]
        self.decoder = nn.ModuleDict(
            {
                "embed": nn.Linear(backbone.dense_dim, dim),
                "blocks": nn.Sequential(*blocks),
                "norm": norm(dim),
                "pred": nn.Linear(dim, patch * patch * backbone.in_chans),
            }
        )
        self.decoder.apply(_init_linear)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.mask_token, std=0.02)

    def _counts(self, grid: tuple[int, int]) -> tuple[int, int]:
        total = grid[0] * grid[1]
        num_masked = num_masked_patches(total, self.mask_ratio)
        if not 0 < num_masked < total:
            raise ValueError(
                f"mask_ratio={self.mask_ratio} masks {num_masked} of {total} patches; MAE needs "
                "at least one masked and one visible patch. Use larger images or another ratio."
            )
        return num_masked, total - num_masked

    def _decode(self, latent: Tensor, ids_keep: Tensor, grid: tuple[int, int]) -> Tensor:
        visible = self.decoder["embed"](latent)
        batch, num_patches = visible.shape[0], grid[0] * grid[1]
        tokens = self.mask_token.to(visible.dtype).expand(batch, num_patches, -1)
        index = ids_keep.unsqueeze(-1).expand(-1, -1, visible.shape[-1])
        tokens = tokens.scatter(1, index, visible)
        tokens = tokens + sincos_2d(grid, self.decoder_dim, tokens.device).to(tokens.dtype)
        return self.decoder["pred"](self.decoder["norm"](self.decoder["blocks"](tokens)))

    def forward(
        self, backbone: Backbone, views: list[Tensor], return_reconstructions: bool = False
    ) -> HeadOutput:
        if self.decoder is None or self.mask_token is None:
            raise RuntimeError("MAE.build(backbone) must be called before forward.")
        x = views[0]
        patch = int(backbone.patch_size)
        grid = patch_grid(tuple(x.shape[-2:]), patch)
        _, num_keep = self._counts(grid)
        mask = random_patch_mask(x.shape[0], grid, self.mask_ratio, device=x.device)
        ids_keep = keep_indices(mask, num_keep)
        prefix, patches = vit_embed(backbone, x)
        encoded = vit_encode(backbone, torch.cat([prefix, gather_tokens(patches, ids_keep)], 1))
        pred = self._decode(encoded[:, prefix.shape[1] :], ids_keep, grid)
        target = patchify(backbone.normalize(x), patch)
        flat_mask = mask.reshape(mask.shape[0], -1)
        loss = mae_loss(pred, target, flat_mask, self.norm_pix_loss)
        recon = None
        if return_reconstructions:
            recon = self._reconstructions(backbone, x, mask, pred, target)
        return HeadOutput(loss=loss, terms={}, reconstructions=recon)

    @torch.no_grad()
    def _reconstructions(
        self, backbone: Backbone, x: Tensor, mask: Tensor, pred: Tensor, target: Tensor
    ) -> Reconstructions:
        pred = pred.float()
        if self.norm_pix_loss:  # back to pixels with the true patch statistics (display only)
            target = target.float()
            std = (target.var(dim=-1, keepdim=True) + NORM_PIX_EPS).sqrt()
            pred = pred * std + target.mean(dim=-1, keepdim=True)
        patch = int(backbone.patch_size)
        grid = tuple(mask.shape[-2:])
        image = to_unit_range(backbone, unpatchify(pred, patch, grid, x.shape[1]))
        pixel_mask = mask_to_pixels(mask, patch)
        x = x.detach().float()
        return Reconstructions(
            input=x,
            masked_input=fill_masked(x, pixel_mask, "mean"),
            reconstruction=torch.where(pixel_mask, image, x),
        )


class MaskedReconstruction(SSLHead):
    """SimMIM-style masked image modelling (Xie et al. 2022) on any backbone.

    Masked patches are replaced by a learnable mask token after the patch embedding (ViTs)
    or filled in pixel space (CNNs: per-image mean or zeros); a light decoder (1x1 conv to
    ``stride^2 * C`` channels + pixel shuffle) maps the dense grid back to pixels and the
    L1/L2 loss is taken on masked pixels only.

    Args:
        mask_ratio: fraction of mask patches masked (exact per image, rounded).
        mask_patch_size: side of the mask patches in pixels. Default: the ViT patch size,
            or the CNN's output stride (32 for resnet/convnext) so that every cell of the
            final feature map is either masked or visible. For ViTs it must be a multiple
            of the patch size; for CNNs any divisor of the image size works.
        loss: ``"l1"`` (SimMIM) or ``"l2"``.
        fill: pixel fill of masked patches for CNNs, ``"mean"`` or ``"zero"``.
    """

    family = "reconstruction"
    num_views = 1

    def __init__(
        self,
        mask_ratio: float = 0.6,
        mask_patch_size: int | None = None,
        loss: Literal["l1", "l2"] = "l1",
        fill: Fill = "mean",
    ) -> None:
        super().__init__()
        check_mask_ratio(mask_ratio)
        if loss not in ("l1", "l2"):
            raise ValueError(f"loss must be 'l1' or 'l2', got {loss!r}.")
        check_fill(fill)
        self.mask_ratio = mask_ratio
        self.mask_patch_size = mask_patch_size
        self.loss = loss
        self.fill = fill
        self.stride = 0
        self.patch = 0
        self.decoder: nn.Module | None = None
        self.mask_token: nn.Parameter | None = None

    def check_backbone(self, backbone: Backbone) -> None:
        if backbone.is_vit:
            check_vit(backbone, "MaskedReconstruction")
        patch = self.mask_patch_size or dense_stride(backbone)
        check_mask_patch(backbone, patch)

    def build(self, backbone: Backbone) -> None:
        self.check_backbone(backbone)
        self.stride = dense_stride(backbone)
        self.patch = self.mask_patch_size or self.stride
        out_channels = self.stride**2 * backbone.in_chans
        self.decoder = nn.Sequential(
            nn.Conv2d(backbone.dense_dim, out_channels, kernel_size=1),
            nn.PixelShuffle(self.stride),
        )
        if backbone.is_vit:
            self.mask_token = nn.Parameter(torch.zeros(1, 1, backbone.dense_dim))
            nn.init.trunc_normal_(self.mask_token, std=0.02)

    def _mask(self, x: Tensor) -> Tensor:
        mask = random_patch_mask_for(x, self.patch, self.mask_ratio)
        patch_grid(tuple(x.shape[-2:]), self.stride)  # the decoder needs whole cells
        return mask

    def forward(
        self, backbone: Backbone, views: list[Tensor], return_reconstructions: bool = False
    ) -> HeadOutput:
        if self.decoder is None:
            raise RuntimeError("MaskedReconstruction.build(backbone) must be called first.")
        x = views[0]
        mask = self._mask(x)
        _, dense = encode_masked(
            backbone,
            x,
            mask,
            mask_patch_size=self.patch,
            mask_token=self.mask_token,
            fill=self.fill,
        )
        pred = self.decoder(dense)
        pixel_mask = mask_to_pixels(mask, self.patch)
        loss = masked_pixel_loss(pred, backbone.normalize(x), pixel_mask, self.loss)
        recon = None
        if return_reconstructions:
            x = x.detach().float()
            image = to_unit_range(backbone, pred)
            recon = Reconstructions(
                input=x,
                masked_input=fill_masked(x, pixel_mask, self.fill),
                reconstruction=torch.where(pixel_mask, image, x),
            )
        return HeadOutput(loss=loss, terms={}, reconstructions=recon)


class DenoisingAutoencoder(SSLHead):
    """Bottleneck denoising autoencoder: reconstruct the clean image from an augmented view.

    The augmented view is encoded to the pooled embedding ``(B, D)`` (the bottleneck), a
    small conv-transpose decoder maps it back to pixels and the MSE to the un-augmented
    image (the data's clean last view) is minimised: the deep analogue of the linear
    reconstruction objective of Van Assel et al. 2025 (Thm 3.1).

    The decoder is sized for the images it will see, so it never decodes more pixels than
    the data has: from ``image_size`` if given, else the backbone's fixed ``image_size``
    (ViTs), else the datamodule's ``image_size`` (``SSLModule.setup`` calls
    :meth:`configure_image_size`, before the optimizer and any checkpoint are loaded; the
    size is then recorded in the head's arguments, so checkpoints rebuild the same decoder).
    A side ``s * 2^k`` with ``3 <= s <= 8`` (32, 48, 64, 96, 128, 224, 256, ...) is decoded
    exactly; other sides (and non-square batches) are decoded at the next such side and
    resized bilinearly (:attr:`output_size` says which).

    Args:
        image_size: image side the decoder is built for. Default: the backbone's
            ``image_size``, else the data's (see above).
        decoder_channels: channels of the first decoder stage (halved at every upsampling,
            at least 16).
    """

    family = "reconstruction"
    num_views = 1
    clean_view = True
    start_size = 4  # the smallest ``image_size``
    exact_start = (3, 8)  # start grids tried for an exact decoder (smallest Linear first)

    def __init__(self, image_size: int | None = None, decoder_channels: int = 256) -> None:
        super().__init__()
        if image_size is not None and image_size < self.start_size:
            raise ValueError(f"image_size must be >= {self.start_size}, got {image_size}.")
        if decoder_channels < 1:
            raise ValueError(f"decoder_channels must be >= 1, got {decoder_channels}.")
        self.image_size = image_size
        self.decoder_channels = decoder_channels
        self.decoder: nn.Module | None = None
        self.layout: tuple[int, int] | None = None  # (start grid side, upsampling stages)
        self._dims: tuple[int, int] | None = None  # (backbone embed_dim, in_chans)

    @classmethod
    def decoder_layout(cls, image_size: int) -> tuple[int, int]:
        """``(start grid side s, upsampling stages k)`` of the decoder for ``image_size``.

        The smallest output side ``s * 2^k >= image_size`` with ``s`` in ``exact_start`` and
        ``k >= 1`` (``image_size`` itself when it has that form), the most stages first.

        Example:
            >>> [DenoisingAutoencoder.decoder_layout(n) for n in (32, 48, 224, 72)]
            [(4, 3), (3, 4), (7, 5), (5, 4)]
        """
        low, high = cls.exact_start
        options = [
            (side * 2**k, -k, side)
            for k in range(1, max(2, math.ceil(math.log2(image_size)) + 1))
            for side in range(low, high + 1)
            if side * 2**k >= image_size
        ]
        _, minus_k, side = min(options)
        return side, -minus_k

    @property
    def output_size(self) -> int | None:
        """Side of the images the decoder produces (``None`` until it is built)."""
        return None if self.layout is None else self.layout[0] * 2 ** self.layout[1]

    def build(self, backbone: Backbone) -> None:
        self._dims = (backbone.embed_dim, backbone.in_chans)
        size = self.image_size or backbone.image_size
        if size is not None:
            self._build_decoder(self.decoder_layout(size))

    def configure_image_size(self, image_size: int | None) -> None:
        """Build the decoder for the data's ``image_size`` unless it already has a size.

        With no size anywhere (plain dataloaders, no ``image_size`` argument) the decoder
        is built for 224 px with a warning: images of another side are then resized.
        """
        if self.decoder is not None:
            if image_size is not None and self.output_size != image_size:
                rank_zero_warn(
                    f"DenoisingAutoencoder decodes {self.output_size} px and resizes to the "
                    f"data's {image_size} px: pass image_size={image_size} to the head."
                )
            return
        if image_size is None:
            rank_zero_warn(
                "DenoisingAutoencoder does not know the image size (no image_size argument, "
                "none on the backbone or the datamodule): decoding 224 px and resizing. Pass "
                "DenoisingAutoencoder(image_size=...) to decode your images' size directly."
            )
        self.image_size = image_size or 224
        self._init_args["image_size"] = self.image_size  # checkpoints rebuild this decoder
        self._build_decoder(self.decoder_layout(self.image_size))

    def _build_decoder(self, layout: tuple[int, int]) -> None:
        if self._dims is None:
            raise RuntimeError("DenoisingAutoencoder.build(backbone) must be called first.")
        (embed_dim, in_chans), (s, num_up) = self._dims, layout
        channels = [max(self.decoder_channels // 2**i, 16) for i in range(num_up + 1)]
        layers: list[nn.Module] = [
            nn.Linear(embed_dim, channels[0] * s * s),
            nn.Unflatten(1, (channels[0], s, s)),
            nn.BatchNorm2d(channels[0]),
            nn.ReLU(inplace=True),
        ]
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.Conv2d(channels[-1], in_chans, kernel_size=3, padding=1))
        self.decoder = nn.Sequential(*layers)
        self.layout = layout

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        """Rebuild the decoder in the stored layout first (fresh head, older checkpoints)."""
        layout = _stored_layout(state_dict, prefix + "decoder.")
        if layout is not None and layout != self.layout and self._dims is not None:
            self._build_decoder(layout)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(
        self, backbone: Backbone, views: list[Tensor], return_reconstructions: bool = False
    ) -> HeadOutput:
        if self.decoder is None:
            raise RuntimeError(
                "DenoisingAutoencoder's decoder is not built: it is sized for the images. "
                "Pass image_size=... to the head, train through SSLModule with a datamodule "
                "that has an image_size, or call head.configure_image_size(side) first."
            )
        if len(views) < 2:
            raise ValueError(
                "DenoisingAutoencoder needs the augmented view and the clean (un-augmented) "
                f"view last; got {len(views)} view(s). Let SSLModule configure the data "
                "(clean_view=True) or append the clean image as the last view."
            )
        x, clean = views[0], views[-1]
        pooled = backbone(x)
        pred = self.decoder(pooled)
        if pred.shape[-2:] != clean.shape[-2:]:
            pred = F.interpolate(pred, size=clean.shape[-2:], mode="bilinear", align_corners=False)
        loss = denoising_loss(pred, backbone.normalize(clean))
        recon = None
        if return_reconstructions:
            recon = Reconstructions(
                input=clean.detach().float(),
                masked_input=x.detach().float(),
                reconstruction=to_unit_range(backbone, pred),
            )
        features = pooled.detach()
        return HeadOutput(
            loss=loss, terms={}, embeddings=features, features=features, reconstructions=recon
        )


def _stored_layout(state_dict: dict[str, Tensor], prefix: str) -> tuple[int, int] | None:
    """``(start side, stages)`` of a stored DenoisingAutoencoder decoder, if there is one.

    The decoder is ``Linear, Unflatten, BatchNorm, ReLU``, three modules per upsampling
    stage, then the output ``Conv2d``: the index of that conv gives the stages, the Linear's
    width over the first BatchNorm's channels the start grid.
    """
    linear, norm = state_dict.get(prefix + "0.weight"), state_dict.get(prefix + "2.weight")
    if linear is None or norm is None:
        return None
    indices = {int(k[len(prefix) :].split(".")[0]) for k in state_dict if k.startswith(prefix)}
    side = math.isqrt(linear.shape[0] // norm.shape[0])
    return side, (max(indices) - 4) // 3
