"""``DetectorModel``: the anomaly detector as a plain torch model, its one inference path.

Backbone, patch feature aggregation, the memory bank of good patch features, anomaly maps,
image scores and the decision rule in one ``nn.Module``. ``AnomalyDetector`` (the
LightningModule around it) fills its bank (``lit_ssl.anomaly.memory_bank``: coreset,
SIGTERM polling) and scores validation, test and predict batches with it; the ONNX export
(``lit_ssl.anomaly.export``) traces a CPU copy of it, bank inside.

Scores (:func:`lit_ssl.anomaly.scoring.anomaly_maps`): each patch's distance to its nearest
bank row, upsampled to the input as the anomaly map; the image score is the maximum of the
patch map. Decision: ``defect = score > threshold`` (:mod:`lit_ssl.decision`, the rule of
every lit_ssl model); the threshold is ``inf`` (nothing flagged) until validation sets it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from lit_ssl.anomaly.scoring import anomaly_maps, patch_features
from lit_ssl.backbone import Backbone
from lit_ssl.decision import is_defect
from lit_ssl.input_size import FitSizeModel

__all__ = ["DetectorModel"]


class DetectorModel(FitSizeModel):
    """Anomaly maps and scores of images ``(B, C, H, W)`` float in [0, 1], from a bank.

    Args:
        backbone: the feature extractor (frozen, in eval mode here).
        layers: backbone stages whose feature maps are used (``scoring.check_layers``).
        neighbourhood: side of the local average over each feature map.

    Example:
        >>> model = DetectorModel(Backbone("test_resnet"), (1, 2), 3)
        >>> model.memory_bank = model.patch_features(torch.rand(2, 3, 32, 32)).flatten(2)[0].T
        >>> anomaly_map, score = model(torch.rand(1, 3, 32, 32))
        >>> tuple(anomaly_map.shape), tuple(score.shape), model.is_defect(score).tolist()
        ((1, 1, 32, 32), (1,), [False])
    """

    what = "detector"

    def __init__(self, backbone: Backbone, layers: Sequence[int], neighbourhood: int) -> None:
        super().__init__()
        self.backbone = backbone.eval().requires_grad_(False)
        self.layers = tuple(int(v) for v in layers)
        self.neighbourhood = int(neighbourhood)
        self.register_buffer("memory_bank", torch.zeros(0))
        self.register_buffer("threshold", torch.tensor(float("inf")))

    def patch_features(self, images: Tensor) -> Tensor:
        """Locally aggregated patch features ``(B, C, h, w)`` of the chosen stages."""
        return patch_features(self.backbone, images, self.layers, self.neighbourhood)

    def maps(
        self, images: Tensor, should_stop: Callable[[], bool] | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(anomaly_map (B, 1, H, W), score (B,))``; ``should_stop`` is polled over the bank
        blocks (``memory_bank.nearest_distances``; ``StopRequested`` when it turns True)."""
        return anomaly_maps(
            self.backbone, self.memory_bank, images, self.layers, self.neighbourhood, should_stop
        )

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(anomaly_map, anomaly_score)``: the outputs of the ONNX graph."""
        return self.maps(images)

    def is_defect(self, scores: Tensor) -> Tensor:
        """Boolean ``(B,)``: scores above the stored threshold."""
        return is_defect(scores, self.threshold)
