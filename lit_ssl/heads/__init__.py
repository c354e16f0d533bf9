"""SSL heads: reconstruction, joint-embedding and hybrid, all on one contract (SSLHead)."""

from lit_ssl.heads.base import HeadOutput, Reconstructions, SSLHead
from lit_ssl.heads.joint_embedding import BYOL, BarlowTwins, SimCLR, VICReg

__all__ = [
    "BYOL",
    "BarlowTwins",
    "HeadOutput",
    "Reconstructions",
    "SSLHead",
    "SimCLR",
    "VICReg",
]
