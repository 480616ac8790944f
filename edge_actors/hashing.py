"""SHA-256 without loading OpenSSL into the ML process.

``hashlib`` pulls in OpenSSL's libcrypto, about 3.5 MB of private memory per
process, which is most of the producer handle's budget. CPython also ships a
builtin SHA-256 (``_sha2`` from 3.12, ``_sha256`` before); use it when present.
"""

from __future__ import annotations

import importlib
from typing import Any


def _constructor() -> Any:
    for module, name in (("_sha2", "sha256"), ("_sha256", "sha256")):
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    import hashlib

    return hashlib.sha256


# Process-global singleton: the constructor chosen on first use (a module
# attribute, no lock: choosing it twice in two threads picks the same one).
# After fork() the child inherits it and may use it as is: it is a plain
# function holding no state, file descriptor or lock; each call makes a new
# hash object.
_SHA256 = None


def sha256_digest(data: bytes) -> bytes:
    """The SHA-256 digest of ``data``."""
    global _SHA256
    if _SHA256 is None:
        _SHA256 = _constructor()
    return bytes(_SHA256(data).digest())
