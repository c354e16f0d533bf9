"""Augmentation policies for factory imagery (albumentations), nuisance transforms, multi-view.

Public API: :func:`policy`, :data:`PRESETS`, :func:`save_policy`, :func:`load_policy`,
:func:`policy_to_yaml`, :func:`policy_from_yaml`, :class:`MultiView`, :func:`multi_view` and the
transforms :class:`IlluminationGradient`, :class:`Vignetting`, :class:`PoissonGaussianNoise`.
"""

from lit_ssl.augment.policies import (
    PRESETS,
    load_policy,
    policy,
    policy_from_yaml,
    policy_to_yaml,
    save_policy,
)
from lit_ssl.augment.transforms import (
    IlluminationGradient,
    PoissonGaussianNoise,
    Vignetting,
)
from lit_ssl.augment.views import MultiView, multi_view

__all__ = [
    "PRESETS",
    "IlluminationGradient",
    "MultiView",
    "PoissonGaussianNoise",
    "Vignetting",
    "load_policy",
    "multi_view",
    "policy",
    "policy_from_yaml",
    "policy_to_yaml",
    "save_policy",
]
