"""SSL heads: reconstruction, joint-embedding, hybrid and distillation, all on one contract
(SSLHead)."""

from lit_ssl.heads.base import HeadOutput, Reconstructions, SSLHead
from lit_ssl.heads.distillation import Distillation
from lit_ssl.heads.hybrid import Hybrid
from lit_ssl.heads.joint_embedding import BYOL, BarlowTwins, SimCLR, VICReg
from lit_ssl.heads.latent import LatentPrediction
from lit_ssl.heads.reconstruction import MAE, DenoisingAutoencoder, MaskedReconstruction

__all__ = [
    "BYOL",
    "MAE",
    "BarlowTwins",
    "DenoisingAutoencoder",
    "Distillation",
    "HeadOutput",
    "Hybrid",
    "LatentPrediction",
    "MaskedReconstruction",
    "Reconstructions",
    "SSLHead",
    "SimCLR",
    "VICReg",
]
