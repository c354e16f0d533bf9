"""The backbone: any timm model behind one interface (pooled and dense features, normalisation
inside, weights loading).

``model.py`` holds ``Backbone`` and the weights/config files it reads; ``encoding.py`` the
dense features (timm's ``forward_intermediates``) and the masked encoding of ViTs and CNNs
used by the masked and latent heads.
"""

from lit_ssl.backbone.model import Backbone, load_backbone_config

__all__ = ["Backbone", "load_backbone_config"]
