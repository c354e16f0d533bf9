"""The ``lit-ssl`` command: LightningCLI subcommands plus the package's own tools.

``lit-ssl fit|validate|test|predict --config recipes/X.yaml [--data.root DIR] ...`` follow
LightningCLI conventions (model and data as ``class_path``/``init_args``). Outputs go to one
run folder ``runs/<recipe>/version_<n>/`` (checkpoints, exported weights, metrics CSV,
figures, resolved config). ``lit-ssl export|synth|quickstart|preview|diagnose`` are tools.
Output is quiet: lit_ssl's own lines, progress bars and real problems; ``--verbose`` shows
everything Lightning prints, ``--debug`` the traceback of an error.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from lit_ssl.cli.errors import LitSSLError, UsageError, is_parser_error_text, short_parser_error
from lit_ssl.cli.quiet import quiet_lightning

__all__ = ["main", "recipe_name"]

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")
# What a user can fix; anything else is a bug and keeps its traceback.
_USER_ERRORS = (LitSSLError, ValueError, OSError, argparse.ArgumentError)
# Lightning's refusal of a model and a datamodule that log one key with two values.
_HPARAMS_CLASH = "Error while merging hparams"
# Files a run writes before training has produced anything.
_NOTHING_USEFUL = {"config.yaml", "hparams.yaml", "metrics.csv"}


def recipe_name(argv: Sequence[str]) -> str:
    """Name of the run folder: the stem of the last ``--config`` file, else ``"default"``."""
    name = "default"
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            name = Path(argv[i + 1]).stem
        elif arg.startswith("--config="):
            name = Path(arg.split("=", 1)[1]).stem
    return name


def _lightning_cli(argv: list[str], record: dict[str, Any]) -> None:
    from lit_ssl.cli.lightning_cli import LitSSLCLI

    LitSSLCLI(args=argv, recipe=recipe_name(argv), run_record=record)


def _tools() -> dict[str, Callable[[list[str]], int | None]]:
    from lit_ssl.cli import tools

    return {
        "export": tools.export_main,
        "synth": tools.synth_main,
        "quickstart": tools.quickstart_main,
        "preview": tools.preview_main,
        "diagnose": tools.diagnose_main,
    }


@contextmanager
def _usage_errors_raise() -> Iterator[None]:
    """Make the tools' argparse parsers raise ``UsageError`` instead of printing usage."""
    original = argparse.ArgumentParser.error

    def error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
        raise UsageError(f"{message}\nSee: {parser.prog} --help")

    argparse.ArgumentParser.error = error  # type: ignore[method-assign]
    try:
        yield
    finally:
        argparse.ArgumentParser.error = original  # type: ignore[method-assign]


def _subcommands(tools: dict[str, Any]) -> str:
    """Every subcommand, Lightning's and the package's own, one line."""
    return ", ".join([*LIGHTNING_SUBCOMMANDS, *sorted(tools)])


def _run(args: list[str], record: dict[str, Any], verbose: bool = False) -> int:
    tools = _tools()
    if args and args[0] in tools:
        quiet_lightning(verbose)
        with _usage_errors_raise():
            return int(tools[args[0]](args[1:]) or 0)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        print(f"\nSubcommands: {_subcommands(tools)} (lit-ssl <subcommand> --help)")
        if not args:
            return 0
    elif not args[0].startswith("-") and args[0] not in LIGHTNING_SUBCOMMANDS:
        raise UsageError(
            f"{args[0]!r} is not a lit-ssl subcommand; choose one of: {_subcommands(tools)}.\n"
            "See: lit-ssl --help"
        )
    quiet_lightning(verbose)
    _lightning_cli(args, record)
    return 0


def _flag(args: list[str], name: str) -> bool:
    """Whether ``name`` was given (every occurrence is removed from ``args``)."""
    given = name in args
    while name in args:
        args.remove(name)
    return given


def _debug_requested(args: list[str]) -> bool:
    """``--debug`` (removed from ``args``) or ``LIT_SSL_DEBUG=1``."""
    environment = os.environ.get("LIT_SSL_DEBUG", "").strip().lower()
    return _flag(args, "--debug") or environment in ("1", "true", "yes")


def _user_message(error: BaseException, args: list[str]) -> str:
    """At most two lines: what was wrong and what to do."""
    if isinstance(error, argparse.ArgumentError) or is_parser_error_text(str(error)):
        prog = "lit-ssl " + args[0] if args and not args[0].startswith("-") else "lit-ssl"
        text = short_parser_error(str(error), prog)
    elif isinstance(error, OSError) and error.filename and str(error.filename) not in str(error):
        text = f"{error.strerror or error}: {error.filename}"
    else:
        text = str(error) or type(error).__name__
    lines = [line for line in text.strip().splitlines() if line.strip()] or [type(error).__name__]
    return "\n".join(lines[:2])


def _remove_empty_run_folder(record: dict[str, Any]) -> None:
    """Remove this run's ``version_N/`` if the failed run left nothing in it worth keeping."""
    folder = record.get("folder")
    if folder is None or record.get("resumed") or not Path(folder).is_dir():
        return
    files = [path for path in Path(folder).rglob("*") if path.is_file()]
    for path in files:
        if path.name == "metrics.csv" and len(path.read_text().splitlines()) > 1:
            return  # training logged something: keep it to look at
        if path.name not in _NOTHING_USEFUL:
            return
    shutil.rmtree(folder)
    for parent in record.get("new_parents", []):
        if parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()


def _hparams_clash_message(error: RuntimeError, args: Sequence[str] = ()) -> str:
    """Two lines: which keys the model and the data disagree on, and what to do.

    With ``--ckpt_path`` the model's values are the checkpoint's: the data must follow them.
    """
    keys = re.findall(r"'(\w+)'", str(error).split("present", 1)[0]) or ["a setting"]
    if any(arg.split("=", 1)[0] == "--ckpt_path" for arg in args):
        example = " ".join(f"--data.{k}" for k in keys)
        return (
            f"the checkpoint (--ckpt_path) was fit with another {', '.join(keys)} than the "
            f"data's.\nGive the checkpoint's value ({example}; see hparams.yaml in its run "
            "folder), or fit a new model."
        )
    example = " ".join(f"--model.{k} V --data.{k} V" for k in keys)
    return (
        f"the model and the data were given different {', '.join(keys)}.\n"
        f"Give both the same value ({example}), or set it on one side only."
    )


def _stopped(stop: SystemExit) -> int:
    """Exit code of a ``SystemExit`` (e.g. ``--print_config``, ``--help``); Lightning's SIGTERM
    stop becomes 143."""
    if type(stop).__name__ != "SIGTERMException":
        if stop.code is None or isinstance(stop.code, int):
            return int(stop.code or 0)
        raise stop
    print(
        "lit-ssl: stopped by SIGTERM; to continue, run the same command with --ckpt_path last",
        file=sys.stderr,
    )
    return 143


def _process_group_initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _release_process_group(had_group: bool) -> None:
    """Destroy the default process group a DDP run started in this process (Lightning leaves
    it), so ``main`` called again in the same process (a notebook, a test) starts clean."""
    if not had_group and _process_group_initialized():
        import torch.distributed as dist

        dist.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lit-ssl`` console script.

    User errors (bad config, paths, data) print ``lit-ssl: error: ...`` in one or two lines
    and return 2; ``--debug`` or ``LIT_SSL_DEBUG=1`` prints the traceback too.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(args)
    verbose = _flag(args, "--verbose")
    record: dict[str, Any] = {}
    had_group = _process_group_initialized()
    try:
        return _run(args, record, verbose)
    except KeyboardInterrupt:
        print("lit-ssl: interrupted", file=sys.stderr)
        return 130
    except SystemExit as stop:
        return _stopped(stop)
    except RuntimeError as error:
        if not str(error).startswith(_HPARAMS_CLASH):
            raise
        print(f"lit-ssl: error: {_hparams_clash_message(error, args)}", file=sys.stderr)
        return 2
    except _USER_ERRORS as error:
        if debug:
            traceback.print_exc()
        print(f"lit-ssl: error: {_user_message(error, args)}", file=sys.stderr)
        return 2
    finally:
        _remove_empty_run_folder(record)
        _release_process_group(had_group)


if __name__ == "__main__":
    raise SystemExit(main())
