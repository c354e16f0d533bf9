"""Several augmented views of one image, each from its own (possibly different) policy.

albumentations 2.0.8 gives every ``Compose`` a private RNG that DataLoader workers inherit as a
copy and never reseed, so "random" views repeat across workers and epochs. :class:`MultiView`
owns its policies and exposes :meth:`MultiView.reseed`; the data module calls it from each
worker's ``worker_init_fn`` with the worker's torch seed (new for every worker and, with
non-persistent workers, every epoch).
"""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import numpy as np

from lit_ssl.augment.policies import policy, seed_policy

__all__ = ["MultiView", "multi_view"]


class MultiView:
    """Apply one policy per view to the same decoded image.

    Args:
        policies: One ``Compose`` per view.
        clean: Optional extra policy (usually ``minimal``) whose output is appended last, for
            heads that need the un-augmented image.
        seed: Initial seed; views stay reproducible for a fixed seed.
    """

    def __init__(
        self, policies: Sequence[A.Compose], clean: A.Compose | None = None, seed: int = 0
    ):
        if not policies and clean is None:
            raise ValueError("MultiView needs at least one policy")
        self.policies = list(policies)
        self.clean = clean
        self.reseed(seed)

    @property
    def num_outputs(self) -> int:
        """Number of arrays returned per image (views plus the clean one)."""
        return len(self.policies) + (self.clean is not None)

    def reseed(self, seed: int) -> None:
        """Give every policy its own RNG stream derived from ``seed``.

        Args:
            seed: Any integer (e.g. ``torch.initial_seed()`` inside a worker).
        """
        composes = [*self.policies, *([self.clean] if self.clean is not None else [])]
        states = np.random.SeedSequence(seed % 2**128).generate_state(len(composes))
        for compose, state in zip(composes, states, strict=True):
            seed_policy(compose, int(state))

    def __call__(self, image: np.ndarray, mask: np.ndarray | None = None) -> list[np.ndarray]:
        """Return one augmented array per view (then the clean one, if any).

        Args:
            image: ``H x W x C`` image.
            mask: Optional mask, transformed alongside but not returned.
        """
        extra = {} if mask is None else {"mask": mask}
        return [compose(image=image, **extra)["image"] for compose in self._composes()]

    def _composes(self) -> list[A.Compose]:
        return [*self.policies, *([self.clean] if self.clean is not None else [])]

    def each(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Apply policy ``i`` to ``images[i]`` (one image per output, the clean one last).

        The data module gives every view its own window of the frame (``crop_size``).

        Raises:
            ValueError: ``len(images)`` is not :attr:`num_outputs`.
        """
        composes = self._composes()
        if len(images) != len(composes):
            raise ValueError(f"got {len(images)} images for {len(composes)} policies")
        return [c(image=im)["image"] for c, im in zip(composes, images, strict=True)]

    def with_mask(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The first view and ``mask`` through the same geometry (resize, letterbox padding).

        Args:
            image: ``H x W x C`` image.
            mask: ``H x W`` float mask (1 defect, 0 good, -1 unknown); padding becomes -1.
        """
        out = self.policies[0](image=image, mask=mask)
        return out["image"], out["mask"]


def multi_view(
    policies: str | Sequence[str],
    num_views: int,
    image_size: int = 64,
    in_chans: int = 3,
    clean_view: bool = False,
    seed: int = 0,
) -> MultiView:
    """Build a :class:`MultiView` from policy names (or YAML paths).

    Args:
        policies: One name for every view, or one name per view (length ``num_views``).
        num_views: Number of augmented views.
        image_size: Output side in pixels.
        in_chans: Input channels.
        clean_view: Append the ``minimal`` (resize-only) view.
        seed: Initial seed.

    Returns:
        The multi-view transform.

    Raises:
        ValueError: The number of policy names matches neither 1 nor ``num_views``.
    """
    names = [policies] if isinstance(policies, str) else list(policies)
    if len(names) == 1:
        names = names * num_views
    if len(names) != num_views:
        raise ValueError(
            f"got {len(names)} policies for {num_views} views; give one policy or one per view"
        )
    composes = [policy(name, image_size, in_chans) for name in names]
    clean = policy("minimal", image_size, in_chans) if clean_view else None
    return MultiView(composes, clean, seed)
