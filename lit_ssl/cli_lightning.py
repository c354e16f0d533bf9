"""LightningCLI subclass behind ``lit-ssl fit|validate|test|predict``."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

from lit_ssl.callbacks.run_folder import RUNS_DIR, ExportOnFitEnd

__all__ = ["LitSSLCLI"]


class LitSSLCLI(LightningCLI):
    """LightningCLI with lit_ssl's defaults.

    * model and data are given as ``class_path``/``init_args`` (any LightningModule or
      DataModule, so users can plug in their own classes);
    * every run writes to ``runs/<recipe>/version_<n>/``: ``checkpoints/``, ``metrics.csv``,
      ``config.yaml`` (the resolved config), figures and the exported weights.

    Args:
        recipe: run-folder name (the recipe file's stem).
        **kwargs: forwarded to ``LightningCLI``.
    """

    def __init__(self, recipe: str = "default", **kwargs: Any) -> None:
        self.recipe = recipe
        defaults = {
            "default_root_dir": f"{RUNS_DIR}/{recipe}",
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": RUNS_DIR, "name": recipe},
            },
        }
        defaults.update(kwargs.pop("trainer_defaults", {}) or {})
        super().__init__(
            model_class=LightningModule,
            datamodule_class=LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            trainer_defaults=defaults,
            save_config_kwargs={"overwrite": True},
            **kwargs,
        )

    def instantiate_trainer(self, **kwargs: Any):
        """Add the export-at-end callback to whatever the recipe asked for."""
        trainer = super().instantiate_trainer(**kwargs)
        if not any(isinstance(cb, ExportOnFitEnd) for cb in trainer.callbacks):
            trainer.callbacks.append(ExportOnFitEnd())
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None and checkpoint.save_last is None:
            checkpoint.save_last = True  # runs/<recipe>/version_N/checkpoints/last.ckpt
        return trainer
