"""Augmentation on the device, as a GPU user gets it, run on the CPU: ``--data.augment_on device``.

``lit-ssl fit --config recipes/vicreg.yaml --data.root DIR --data.augment_on device`` on the
user's unlabeled folder (size overrides only), with two crops per decoded frame: the workers
cut native windows, the surface preset runs batched after the transfer, training finishes and
the resolved config records the choice. A YAML policy with ``augment_on device`` is refused
before anything runs.
"""

from __future__ import annotations

import torch
import yaml
from conftest import lit_ssl, recipe_text, small

from lit_ssl.augment import policy, save_policy


def test_vicreg_trains_with_augmentation_on_the_device(fresh_project, unlabeled):
    args = ["fit", "--config", "recipes/vicreg.yaml", "--data.root", unlabeled.root]
    args += [*small(recipe_text("vicreg")), "--data.augment_on", "device"]
    args += ["--data.crop_size", "32", "--data.crops_per_frame", "2"]
    result = lit_ssl(*args, cwd=fresh_project)
    assert "Traceback" not in result.output, result.describe()
    run = fresh_project / "runs" / "vicreg" / "version_0"
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    data = yaml.safe_load((run / "config.yaml").read_text())["data"]["init_args"]
    assert data["augment_on"] == "device" and data["crops_per_frame"] == 2

    custom = fresh_project / "my_policy.yaml"
    save_policy(policy("surface", 32, 3), custom)
    refused = lit_ssl(*args, "--data.policy", custom.name, cwd=fresh_project, rc=2)
    assert "augment_on='cpu'" in refused.output, refused.describe()
