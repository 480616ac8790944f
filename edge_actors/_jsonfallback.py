"""The part of orjson's API that edge-actors uses, on the standard library's json.

Used only where orjson cannot be installed (see :mod:`edge_actors.jsoncompat`).
Same results as orjson for what the agent encodes: UTF-8 bytes, compact; NaN
and infinities as ``null``; numpy arrays and scalars as JSON numbers and lists
(``OPT_SERIALIZE_NUMPY``); non-string keys as strings (``OPT_NON_STR_KEYS``);
datetimes as ISO-8601; ``default`` for anything else. Decoding rejects
``NaN``/``Infinity`` and reports nesting too deep for the interpreter's stack
as ``depth limit exceeded``, like orjson.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import math
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

#: Accepted for compatibility: this module always does what these options ask.
OPT_NON_STR_KEYS = 1 << 2
OPT_SERIALIZE_NUMPY = 1 << 4
#: Honoured: keys in sorted order (the outbox hashes record schemas by their text).
OPT_SORT_KEYS = 1 << 5
#: orjson's limit: deeper documents are refused, not recursed into.
MAX_DEPTH = 1024


class JSONDecodeError(json.JSONDecodeError):
    """Invalid JSON (a ValueError, like orjson's)."""


class JSONEncodeError(TypeError):
    """An object that cannot be serialized."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse one JSON document."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JSONDecodeError(f"str is not valid UTF-8: {exc}", "", 0) from None
    else:
        text = data
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise JSONDecodeError(exc.msg, exc.doc, exc.pos) from None
    except RecursionError:
        raise JSONDecodeError("depth limit exceeded", text[:80], 0) from None
    except ValueError as exc:
        raise JSONDecodeError(str(exc), text[:80], 0) from None


def _key(k: Any) -> str:
    if isinstance(k, str):
        return k
    if isinstance(k, np.generic):
        k = k.item()
    if isinstance(k, bool) or k is None:
        return json.dumps(k)
    if isinstance(k, (int, float)):
        return json.dumps(k) if not isinstance(k, float) or math.isfinite(k) else "null"
    if isinstance(k, (dt.datetime, dt.date, dt.time)):
        return k.isoformat()
    if isinstance(k, enum.Enum):
        return _key(k.value)
    if isinstance(k, uuid.UUID):
        return str(k)
    raise JSONEncodeError(f"dict key must be str or a number, not {type(k).__name__}")


def _plain(obj: Any, default: Callable[[Any], Any] | None, depth: int) -> Any:
    """``obj`` as dicts, lists, str, int, finite float, bool and None."""
    if depth > MAX_DEPTH:
        raise JSONEncodeError("recursion limit reached")
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {_key(k): _plain(v, default, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v, default, depth + 1) for v in obj]
    if isinstance(obj, (np.ndarray, np.generic)):
        return _plain(obj.tolist(), default, depth + 1)
    if isinstance(obj, (dt.datetime, dt.date, dt.time)):
        return obj.isoformat()
    if isinstance(obj, enum.Enum):
        return _plain(obj.value, default, depth + 1)
    if isinstance(obj, uuid.UUID):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _plain(
            {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}, default, depth + 1
        )
    if default is None:
        raise JSONEncodeError(f"Type is not JSON serializable: {type(obj).__name__}")
    return _plain(default(obj), default, depth + 1)


def dumps(
    obj: Any, default: Callable[[Any], Any] | None = None, option: int | None = None
) -> bytes:
    """Compact UTF-8 JSON of ``obj`` (options implied, except ``OPT_SORT_KEYS``)."""
    sort_keys = bool(option and option & OPT_SORT_KEYS)
    try:
        plain = _plain(obj, default, 0)
    except RecursionError:
        raise JSONEncodeError("recursion limit reached") from None
    text = json.dumps(
        plain, ensure_ascii=False, separators=(",", ":"), allow_nan=False, sort_keys=sort_keys
    )
    try:
        return text.encode()
    except UnicodeEncodeError as exc:  # a lone surrogate: orjson refuses it too
        raise JSONEncodeError(f"str is not valid UTF-8: {exc}") from None
