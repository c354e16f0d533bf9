"""Every loss of lit_ssl as a small pure function, computed in float32 and DDP-aware.

Joint-embedding losses (``info_nce``, ``negative_cosine``, ``byol``, ``vicreg``,
``barlow_twins``) follow their paper's definition (VICReg and Barlow Twins: the papers'
Algorithm 1; ``convention="released"`` gives the authors' released code, whose
hyperparameters differ, see :data:`Convention`); batch statistics and negatives are taken
over all DDP ranks (see ``lit_ssl.distributed.gather``). Reconstruction and latent losses
(``mae_loss``, ``masked_pixel_loss``, ``denoising_loss``, ``masked_latent_loss``) are local
means (every rank holds a full copy of the model; Lightning averages the gradients).
``float32_loss`` disables autocast inside, so every loss is computed in float32 under
``bf16-mixed``/``16-mixed`` precision.
Classification losses (``focal_loss``, ``per_sample_focal``, ``balanced_class_weights``) are
the defect classifier's.

Files: ``base.py`` (``float32_loss``, conventions), ``joint_embedding.py``,
``reconstruction.py``, ``classification.py``.
"""

from lit_ssl.losses.base import (
    BARLOW_BN_EPS,
    CONVENTIONS,
    NORM_PIX_EPS,
    Convention,
    _check_convention,
    float32_loss,
)
from lit_ssl.losses.classification import balanced_class_weights, focal_loss, per_sample_focal
from lit_ssl.losses.joint_embedding import (
    _off_diagonal_sq_sum,
    barlow_twins,
    byol,
    info_nce,
    negative_cosine,
    vicreg,
    vicreg_terms,
    vicreg_weighted,
)
from lit_ssl.losses.reconstruction import (
    denoising_loss,
    mae_loss,
    masked_latent_loss,
    masked_pixel_loss,
    normalise_patches,
)

__all__ = [
    "BARLOW_BN_EPS",
    "CONVENTIONS",
    "NORM_PIX_EPS",
    "Convention",
    "_check_convention",
    "_off_diagonal_sq_sum",
    "balanced_class_weights",
    "barlow_twins",
    "byol",
    "denoising_loss",
    "float32_loss",
    "focal_loss",
    "info_nce",
    "mae_loss",
    "masked_latent_loss",
    "masked_pixel_loss",
    "negative_cosine",
    "normalise_patches",
    "per_sample_focal",
    "vicreg",
    "vicreg_terms",
    "vicreg_weighted",
]
