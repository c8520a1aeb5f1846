"""The instance's environment file, applied to the master's environment at start, re-exec and HUP.

systemd reads the unit's EnvironmentFile= only when the service starts. A USR2 upgrade or a HUP
would keep that environment, so a rotated secret would wait for a restart. The unit names the
same file in GRACEFUL_GUNICORN_ENV_FILE; the launcher applies it before gunicorn builds its
configuration (a re-executed master reads it fresh) and the arbiter applies it again at every
HUP, before the configuration reload, so the next generation of workers sees it.

Format: what the collection's role writes (one `KEY="value"` a line, the value double-quoted with
`\\`, `"`, `$` and backquote escaped by a backslash), plain `KEY=value` with no quoting, escaping,
`$`, backquote or whitespace in it, comment lines starting with `#` and blank lines. Anything else
is refused with the line number; values never appear in a message.

The names set from the file are recorded in GRACEFUL_GUNICORN_ENV_KEYS, so that a name removed
from the file is removed from the environment at the next read.
"""

from __future__ import annotations

import os
import re

FILE_ENV = "GRACEFUL_GUNICORN_ENV_FILE"
KEYS_ENV = "GRACEFUL_GUNICORN_ENV_KEYS"
RESERVED = frozenset({FILE_ENV, KEYS_ENV})
MAX_BYTES = 1 << 20

# (path, names set, names removed) as the launcher applied the file; logged once the master logs.
STARTUP: tuple | None = None

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLAIN = re.compile(r"[^\s\"'\\$`]*")
_ESCAPABLE = frozenset('\\"$`')


class EnvFileError(ValueError):
    """The file cannot be read or a line is not in the accepted format (never names a value)."""


def _quoted(text: str, lineno: int) -> str:
    """The value of a double-quoted field: `"..."` with only \\\\, \\", \\$ and \\` escapes."""
    if len(text) < 2 or not text.endswith('"'):
        raise EnvFileError(f"line {lineno}: the quoted value does not end with a double quote")
    out = []
    chars = iter(text[1:-1])
    for char in chars:
        if char == "\\":
            escaped = next(chars, None)
            if escaped is None or escaped not in _ESCAPABLE:
                raise EnvFileError(f'line {lineno}: only \\\\, \\", \\$ and \\` escapes are accepted')
            out.append(escaped)
        elif char in '"$`':
            raise EnvFileError(f"line {lineno}: an unescaped {char} inside the quoted value")
        else:
            out.append(char)
    return "".join(out)


def parse(text: str) -> dict[str, str]:
    """Name -> value of every assignment in `text`; EnvFileError naming the first bad line."""
    values: dict[str, str] = {}
    for lineno, line in enumerate(text.split("\n"), 1):
        if "\r" in line or "\0" in line:
            raise EnvFileError(f"line {lineno}: carriage return or NUL character")
        stripped = line.strip(" \t")
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not _KEY.fullmatch(key):
            raise EnvFileError(f"line {lineno}: not NAME=value with a name of letters, digits and underscores")
        if key in RESERVED:
            raise EnvFileError(f"line {lineno}: {key} is set by the service, not by the environment file")
        if value.startswith('"'):
            values[key] = _quoted(value, lineno)
        elif _PLAIN.fullmatch(value):
            values[key] = value
        else:
            raise EnvFileError(
                f"line {lineno}: {key}: an unquoted value may not hold whitespace, quotes, backslashes, $ or `;"
                ' write it as NAME="value" with \\, ", $ and ` escaped'
            )
    return values


def read(path: str) -> dict[str, str]:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise EnvFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise EnvFileError(f"{path} is larger than {MAX_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise EnvFileError(f"line {line}: not UTF-8") from None
    return parse(text)


def apply(values: dict[str, str], environ=None) -> tuple[list[str], list[str]]:
    """Set `values` in `environ` and drop the names the previous read set that are gone now.

    Returns (names set, names removed).
    """
    environ = os.environ if environ is None else environ
    previous = [name for name in environ.get(KEYS_ENV, "").split(",") if _KEY.fullmatch(name)]
    removed = [name for name in previous if name not in values and name not in RESERVED]
    for name in removed:
        environ.pop(name, None)
    environ.update(values)
    environ[KEYS_ENV] = ",".join(sorted(values))
    return sorted(values), removed


def reload_from_environment(environ=None) -> tuple[str, list[str], list[str]] | None:
    """Read the file GRACEFUL_GUNICORN_ENV_FILE names and apply it; None when it names none.

    Returns (path, names set, names removed); raises EnvFileError and leaves `environ` alone when
    the file cannot be read or parsed.
    """
    environ = os.environ if environ is None else environ
    path = environ.get(FILE_ENV)
    if not path:
        return None
    if not os.path.isabs(path):
        raise EnvFileError(f"{FILE_ENV} must be an absolute path")
    values = read(path)
    return (path, *apply(values, environ))
