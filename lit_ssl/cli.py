"""The ``lit-ssl`` command: LightningCLI subcommands plus the package's own tools.

``lit-ssl fit|validate|test|predict --config recipes/X.yaml [--data.root DIR] ...`` follow
LightningCLI conventions (model and data as ``class_path``/``init_args``). Outputs go to one
run folder ``runs/<recipe>/version_<n>/`` (checkpoints, exported weights, metrics CSV,
figures, resolved config). ``lit-ssl export|synth|quickstart|preview|diagnose`` are tools.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__all__ = ["main", "recipe_name"]


def recipe_name(argv: Sequence[str]) -> str:
    """Name of the run folder: the stem of the last ``--config`` file, else ``"default"``."""
    name = "default"
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            name = Path(argv[i + 1]).stem
        elif arg.startswith("--config="):
            name = Path(arg.split("=", 1)[1]).stem
    return name


def _lightning_cli(argv: list[str], from_command_line: bool) -> None:
    from lit_ssl.cli_lightning import LitSSLCLI

    LitSSLCLI(args=None if from_command_line else argv, recipe=recipe_name(argv))


def _tools() -> dict[str, Callable[[list[str]], int | None]]:
    from lit_ssl import tools

    return {
        "export": tools.export_main,
        "synth": tools.synth_main,
        "quickstart": tools.quickstart_main,
        "preview": tools.preview_main,
        "diagnose": tools.diagnose_main,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lit-ssl`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    tools = _tools()
    if args and args[0] in tools:
        return int(tools[args[0]](args[1:]) or 0)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("\nTools: " + ", ".join(sorted(tools)) + " (lit-ssl <tool> --help)")
        if not args:
            return 0
    _lightning_cli(args, from_command_line=argv is None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
