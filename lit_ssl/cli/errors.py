"""User-facing errors of the ``lit-ssl`` command, and short forms of parser errors.

The CLI prints these in one or two lines (``lit-ssl: error: ...``, exit code 2) instead of a
traceback; ``--debug`` or ``LIT_SSL_DEBUG=1`` shows the traceback as well.
"""

from __future__ import annotations

import re

__all__ = ["LitSSLError", "UsageError", "is_parser_error_text", "short_parser_error"]


class LitSSLError(Exception):
    """Something the user can fix (a path, a config value); the message says what to do."""


class UsageError(LitSSLError):
    """A command line the parser rejected (unknown option, wrong type, missing argument)."""


_KEY = re.compile(r'^Parser key "([^"]+)":\s*(.*)$')
_CLASS_PATH = re.compile(r"^- Problem with given class_path '([^']+)':$")
_NOT_ACCEPTED = re.compile(r"^Option '([^']+)' is not accepted$")
_EXPECTED = re.compile(r"^Expected an? (.+?)\. Got value: (.*)$")
_BOILERPLATE = (
    "Does not validate against any of the",
    "Subtypes:",
    "Errors:",
    "- Expected a <class 'NoneType'>",
    "Given value type:",
    "Given value:",
)


def _type_names(text: str) -> str:
    """``<class 'int'>`` -> ``int``; ``<class 'pkg.Mod'>`` -> ``pkg.Mod``."""
    return re.sub(r"<class '([^']+)'>", r"\1", text)


def is_parser_error_text(message: str) -> bool:
    """Whether ``message`` is jsonargparse's explanation of a rejected value."""
    return message.startswith(("Parser key", "Does not validate against any of the"))


def short_parser_error(message: str, prog: str = "lit-ssl") -> str:
    """The essential line of a jsonargparse error, with the dotted option and what to do.

    jsonargparse explains a bad nested value as a tree (every Union member, every class it
    tried); the user needs the option, what was wrong with it and where to look.

    Args:
        message: the parser's error text.
        prog: the command, for the hint (e.g. ``"lit-ssl fit"``).

    Returns:
        One or two lines.
    """
    keys: list[str] = []
    class_path = None
    for raw in message.strip().splitlines():
        line = raw.strip()
        if match := _KEY.match(line):
            keys.append(match.group(1))
            if match.group(2):
                return _explain(match.group(2), ".".join(keys), class_path, prog)
        elif match := _CLASS_PATH.match(line):
            class_path = match.group(1)
        elif line and not line.startswith(_BOILERPLATE):
            return _explain(line, ".".join(keys), class_path, prog)
    return _type_names(message.strip().splitlines()[0]) if message.strip() else "invalid arguments"


def _explain(line: str, key: str, class_path: str | None, prog: str) -> str:
    if match := _NOT_ACCEPTED.match(line):
        option = f"--{key}.{match.group(1)}" if key else f"--{match.group(1)}"
        where = f" of {class_path}" if class_path else ""
        listing = f"{prog} --{key}.help {class_path}" if class_path and key else f"{prog} --help"
        return f"{option} is not an option{where}.\nList the accepted options with: {listing}"
    if match := _EXPECTED.match(line):
        expected, given = match.groups()
        return (
            f"--{key}: expected {_type_names(expected)}, got {given!r}.\n"
            "Fix the value on the command line or in the --config file."
        )
    line = _type_names(line.removeprefix("- "))
    return f"--{key}: {line}\nSee: {prog} --help" if key else line
