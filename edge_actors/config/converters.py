"""Converters: one YAML value checked and turned into its Python value, or :class:`_Invalid`.

A converter's message is the part after the key path (``must be > 0, got -5``);
the parser adds the path. Values are echoed as the user wrote them in YAML
(``true``, ``null``, ``10`` not ``10.0``) and cut to :data:`_SHOWN_CHARS`.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge_actors.config.errors import _Invalid
from edge_actors.keys import prefix_problem
from edge_actors.redact import redact_url, short_repr

_INSTANCE_RE = re.compile(r"[A-Za-z0-9_]{1,16}")
_DEVICE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_FIELD_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
_BUCKET_CHARS_RE = re.compile(r"[a-z0-9.-]+")
# PyYAML follows YAML 1.1, where ``1e6`` (no dot) is a string; YAML 1.2 and most
# people read it as a number, so number fields accept that spelling.
_EXP_FLOAT_RE = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)[eE][-+]?\d+")


#: Longest bad value echoed whole in a message; longer ones are cut.
_SHOWN_CHARS = 80


def _show(value: object) -> str:
    """Format a bad value the way the user wrote it in YAML."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # Cut: a 10 MB bad value must not come back whole in the message.
        return short_repr(value, _SHOWN_CHARS)
    if isinstance(value, (int, float)):
        return _num(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    text = repr(value)
    if len(text) > _SHOWN_CHARS:
        return f"{text[:_SHOWN_CHARS]}... ({len(text)} characters)"
    return text


def _key_text(key: object) -> str:
    """A mapping key as shown in a key path: as written when plain, else quoted and cut."""
    if isinstance(key, str):
        if key.isprintable() and len(key) <= _SHOWN_CHARS:
            return key
        return short_repr(key, _SHOWN_CHARS)
    return _show(key)


def _num(x: float) -> str:
    """Format a bound or value without a spurious ``.0`` (``10`` not ``10.0``)."""
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e16:
        return str(int(x))
    return repr(x) if isinstance(x, float) else str(x)


@dataclass(frozen=True)
class _Ctx:
    """What converters need besides the value: the folders paths resolve against."""

    #: The config file's folder: relative paths start there.
    base_dir: Path
    #: ``data_dir`` once the top-level keys are read (the default of the outbox paths).
    data_dir: Path | None = None


_Conv = Callable[[object, _Ctx], Any]


def _as_number(value: object) -> float:
    # bool is an int subclass in Python but never a number in a config file.
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _Invalid(f"must be a number, got {_show(value)}")
    if isinstance(value, str):
        if not _EXP_FLOAT_RE.fullmatch(value.strip()):
            raise _Invalid(f"must be a number, got {_show(value)}")
        result = float(value)
    else:
        result = float(value)
    if not math.isfinite(result):
        raise _Invalid(f"must be a finite number, got {_show(value)}")
    return result


def _range_text(lo: float | None, lo_incl: bool, hi: float | None, hi_incl: bool) -> str:
    if lo is not None and hi is not None:
        if lo_incl and hi_incl:
            return f"must be between {_num(lo)} and {_num(hi)}"
        return (
            f"must be {'>=' if lo_incl else '>'} {_num(lo)} "
            f"and {'<=' if hi_incl else '<'} {_num(hi)}"
        )
    if lo is not None:
        return f"must be {'>=' if lo_incl else '>'} {_num(lo)}"
    assert hi is not None
    return f"must be {'<=' if hi_incl else '<'} {_num(hi)}"


def _check_range(
    x: float, raw: object, lo: float | None, lo_incl: bool, hi: float | None, hi_incl: bool
) -> None:
    bad = (lo is not None and (x < lo if lo_incl else x <= lo)) or (
        hi is not None and (x > hi if hi_incl else x >= hi)
    )
    if bad:
        raise _Invalid(f"{_range_text(lo, lo_incl, hi, hi_incl)}, got {_show(raw)}")


def _number(
    lo: float | None = None,
    *,
    lo_incl: bool = True,
    hi: float | None = None,
    hi_incl: bool = True,
) -> _Conv:
    """Converter for a float with an optional range."""

    def conv(value: object, ctx: _Ctx) -> float:
        x = _as_number(value)
        _check_range(x, value, lo, lo_incl, hi, hi_incl)
        return x

    return conv


def _positive() -> _Conv:
    return _number(0, lo_incl=False)


def _integer(lo: int | None = None, hi: int | None = None) -> _Conv:
    """Converter for an int; integral floats such as ``1e6`` or ``100.0`` are accepted."""

    def conv(value: object, ctx: _Ctx) -> int:
        if isinstance(value, bool):
            raise _Invalid(f"must be an integer, got {_show(value)}")
        if isinstance(value, int):
            result = value
        else:
            try:
                x = _as_number(value)
            except _Invalid:
                raise _Invalid(f"must be an integer, got {_show(value)}") from None
            if not x.is_integer():
                raise _Invalid(f"must be an integer, got {_show(value)}")
            result = int(x)
        _check_range(result, value, lo, True, hi, True)
        return result

    return conv


def _boolean() -> _Conv:
    def conv(value: object, ctx: _Ctx) -> bool:
        if not isinstance(value, bool):
            raise _Invalid(f"must be true or false, got {_show(value)}")
        return value

    return conv


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"must be a string, got {_show(value)}")
    return value


def _choice(options: tuple[str, ...], *, upper: bool = False) -> _Conv:
    """Converter for one of a few words, case-insensitive, stored in canonical case."""

    def conv(value: object, ctx: _Ctx) -> str:
        allowed = ", ".join(options)
        if not isinstance(value, str):
            raise _Invalid(f"must be one of {allowed}, got {_show(value)}")
        word = value.strip().upper() if upper else value.strip().lower()
        if word not in options:
            raise _Invalid(f"must be one of {allowed}, got {_show(value)}")
        return word

    return conv


def _text() -> _Conv:
    def conv(value: object, ctx: _Ctx) -> str:
        return _string(value)

    return conv


def _nullable(inner: _Conv) -> _Conv:
    def conv(value: object, ctx: _Ctx) -> Any:
        return None if value is None else inner(value, ctx)

    return conv


def _path() -> _Conv:
    """Converter for a path: ``~`` expanded, relative to the config file's folder."""

    def conv(value: object, ctx: _Ctx) -> Path:
        if not isinstance(value, str):
            raise _Invalid(f"must be a path string, got {_show(value)}")
        if not value.strip():
            raise _Invalid("must be a non-empty path, got ''")
        if "\0" in value:
            raise _Invalid(f"must not contain a NUL character, got {_show(value)}")
        p = Path(os.path.expanduser(value))
        # abspath normalises ``configs/../var`` so status output shows a clean path.
        return Path(os.path.abspath(ctx.base_dir / p))

    return conv


def _pattern(regex: re.Pattern[str], rule: str) -> _Conv:
    def conv(value: object, ctx: _Ctx) -> str:
        s = _string(value)
        if not regex.fullmatch(s):
            raise _Invalid(f"must be {rule}, got {_show(value)}")
        return s

    return conv


_DEVICE_RULE = "1 to 64 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"


def _device_name() -> _Conv:
    """Converter for names that end up in S3 keys and file paths."""

    base = _pattern(_DEVICE_RE, _DEVICE_RULE)

    def conv(value: object, ctx: _Ctx) -> str:
        s: str = base(value, ctx)
        if ".." in s:
            raise _Invalid(f"must not contain '..', got {_show(value)}")
        return s

    return conv


def _version() -> _Conv:
    """Converter for a model version: a name as for devices; an integer is taken as text.

    A YAML float (``1.4``) is refused: ``1.10`` would silently become ``1.1``.
    """
    base = _device_name()

    def conv(value: object, ctx: _Ctx) -> str:
        if isinstance(value, float):
            raise _Invalid(f"must be a string (quote it: '{value}'), got the number {value}")
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        result: str = base(value, ctx)
        return result

    return conv


def _bucket() -> _Conv:
    """Converter applying the S3 bucket naming rules, reporting the first broken one."""

    def conv(value: object, ctx: _Ctx) -> str:
        s = _string(value)
        shown = _show(value)
        if not 3 <= len(s) <= 63:
            raise _Invalid(f"must be 3 to 63 characters long, got {shown} ({len(s)})")
        if not _BUCKET_CHARS_RE.fullmatch(s):
            raise _Invalid(
                f"may contain only lowercase letters, digits, dots and hyphens, got {shown}"
            )
        if not (s[0].isalnum() and s[-1].isalnum()):
            raise _Invalid(f"must start and end with a lowercase letter or digit, got {shown}")
        if ".." in s:
            raise _Invalid(f"must not contain two adjacent dots, got {shown}")
        try:
            ipaddress.IPv4Address(s)
        except ValueError:
            pass
        else:
            raise _Invalid(f"must not be formatted as an IP address, got {shown}")
        if s.startswith(("xn--", "sthree-")):
            raise _Invalid(f"must not start with 'xn--' or 'sthree-', got {shown}")
        if s.endswith(("-s3alias", "--ol-s3")):
            raise _Invalid(f"must not end with '-s3alias' or '--ol-s3', got {shown}")
        return s

    return conv


def _prefix() -> _Conv:
    """Converter for the object key prefix: the sinks' own rules, then a ``/`` appended."""

    def conv(value: object, ctx: _Ctx) -> str:
        if value is None:
            return ""
        s = _string(value)
        # The very function every sink applies: what loads here is never refused later.
        problem = prefix_problem(s)
        if problem is not None:
            raise _Invalid(problem)
        if s and not s.endswith("/"):
            s += "/"
        return s

    return conv


_CREDENTIALS_CHAIN = (
    "credentials belong in the AWS credential chain (AWS_ACCESS_KEY_ID/"
    "AWS_SECRET_ACCESS_KEY, ~/.aws/credentials or an instance role)"
)


def _url() -> _Conv:
    """Converter for an endpoint URL: http(s), a host, and no credentials in it.

    A user name, password or query string (``?X-Amz-Security-Token=...``) in the
    URL would travel into every log line, ``status`` and the outbox; messages
    here show the URL redacted.
    """

    def conv(value: object, ctx: _Ctx) -> str:
        s = _string(value)
        shown = short_repr(redact_url(s))
        try:
            parts = urlsplit(s)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise _Invalid(f"must be a valid URL ({exc}), got {shown}") from None
        if parts.scheme not in ("http", "https") or not s.startswith(("http://", "https://")):
            raise _Invalid(f"must start with http:// or https://, got {shown}")
        if "@" in parts.netloc:
            raise _Invalid(
                f"must not contain a user name or password; {_CREDENTIALS_CHAIN}, got {shown}"
            )
        if parts.query or "?" in s:
            raise _Invalid(f"must not contain a query string; {_CREDENTIALS_CHAIN}, got {shown}")
        if parts.fragment or "#" in s:
            raise _Invalid(f"must not contain a '#' fragment, got {shown}")
        if not parts.hostname:
            raise _Invalid(f"must name a host, got {shown}")
        if any(ord(c) <= 32 or ord(c) == 127 for c in s):
            raise _Invalid(f"must not contain blanks or control characters, got {shown}")
        return s

    return conv
