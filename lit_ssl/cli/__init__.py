"""The ``lit-ssl`` command: ``main.py`` (dispatch and error reporting), ``lightning_cli.py``
(the LightningCLI subclass behind fit/validate/test/predict), ``tools.py`` (export, synth,
preview, diagnose), ``quickstart.py``, ``errors.py`` (user errors and their two-line form).

The core never imports this package.
"""

from lit_ssl.cli.main import main, recipe_name

__all__ = ["main", "recipe_name"]
