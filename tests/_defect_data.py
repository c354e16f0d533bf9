"""Tiny in-memory synthetic inspection data for the classifier / probe / export tests.

Images are 3x32x32 floats in [0, 1]: a random illumination gradient plus sensor noise
(nuisance); defects are a bright blob ("blob") or a bright horizontal line ("scratch").
Batch formats follow the lit_ssl data contract (classify: ``(image, label[, path])``;
SSL: ``([view1, view2], label)`` with ``-1`` for unknown labels).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

CLASSES = ["good", "blob", "scratch"]
BINARY = ["good", "defect"]


def make_images(
    labels: Tensor, size: int = 32, seed: int = 0, strength: float = 0.8, nuisance: float = 1.0
) -> Tensor:
    """Images for ``labels`` (0 good, 1 blob, 2 scratch), deterministic for ``seed``.

    ``nuisance`` scales the illumination variation (brightness offset and gradient).
    """
    gen = torch.Generator().manual_seed(seed)
    n = labels.numel()
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    slope = (torch.rand(n, 2, generator=gen) - 0.5) * nuisance
    base = 0.4 + 0.2 * nuisance * (torch.rand(n, 1, 1, generator=gen) - 0.5)
    images = base + slope[:, :1, None] * yy * 0.4 + slope[:, 1:, None] * xx * 0.4
    images = images[:, None].repeat(1, 3, 1, 1)
    images = images + 0.03 * torch.randn(n, 3, size, size, generator=gen)
    centres = torch.randint(6, size - 6, (n, 2), generator=gen)
    for i in range(n):
        cy, cx = centres[i].tolist()
        if labels[i] == 1:
            blob = torch.exp(-((yy * size - cy) ** 2 + (xx * size - cx) ** 2) / (2 * 2.5**2))
            images[i] += strength * blob
        elif labels[i] == 2:
            images[i, :, cy, cx - 5 : cx + 5] += strength
    return images.clamp(0, 1)


def make_labels(n: int, fractions: list[float], seed: int = 0) -> Tensor:
    """``n`` labels with class fractions ``fractions`` (exact counts), shuffled."""
    counts = [int(round(f * n)) for f in fractions]
    counts[0] = n - sum(counts[1:])
    labels = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    return labels[torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))]


class ClassifyDataset(Dataset):
    """``(image, label)`` or ``(image, label, path)`` samples; exposes ``labels``."""

    def __init__(
        self,
        n: int,
        fractions: list[float],
        seed: int = 0,
        with_paths: bool = False,
        binary: bool = False,
        strength: float = 0.8,
        nuisance: float = 1.0,
    ) -> None:
        types = make_labels(n, fractions, seed)
        self.images = make_images(types, seed=seed, strength=strength, nuisance=nuisance)
        self.labels = (types > 0).long() if binary else types.long()
        self.with_paths = with_paths

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        sample = (self.images[i], self.labels[i])
        return (*sample, f"img_{i:04d}.png") if self.with_paths else sample


class UncountedDataset(Dataset):
    """Wraps a dataset hiding its ``labels`` (forces counting by iteration)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return self.dataset[i]


class SSLDataset(Dataset):
    """``([view1, view2], label)``: two noisy/flipped views; labels hidden where ``unlabelled``."""

    def __init__(self, n: int, seed: int = 0, labelled_fraction: float = 0.5) -> None:
        types = make_labels(n, [0.5, 0.5], seed)
        self.images = make_images(types, seed=seed)
        known = torch.rand(n, generator=torch.Generator().manual_seed(seed + 2))
        self.labels = torch.where(known < labelled_fraction, (types > 0).long(), -1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        image = self.images[i]
        views = [
            (image + 0.05 * torch.randn_like(image)).clamp(0, 1),
            torch.flip(image, dims=[2]),
        ]
        return views, self.labels[i]


def loader(dataset: Dataset, batch_size: int = 32, shuffle: bool = False) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=0)


def trainer_kwargs(root, **overrides) -> dict:
    """Quiet, fast CPU Trainer settings for tests."""
    kwargs = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(root),
        deterministic=True,
    )
    kwargs.update(overrides)
    return kwargs
