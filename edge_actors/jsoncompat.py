"""orjson where it is installed, the standard library's json behind the same API where not.

orjson is a compiled extension with wheels for x86-64, aarch64 and armv7l
hard-float, but none for Debian armel (ARMv5/ARMv6 soft-float userlands) and
other rare platforms; building it needs a Rust toolchain, hours on a Pi Zero.
There the agent and the producer still run, on :mod:`edge_actors._jsonfallback`
(same output, several times slower), with one WARNING saying so.
Modules write ``from edge_actors.jsoncompat import orjson`` and use it as
orjson.
"""

from __future__ import annotations

import logging

__all__ = ["FALLBACK", "orjson"]

log = logging.getLogger(__name__)

try:
    import orjson

    FALLBACK = False
except ImportError:
    from edge_actors import _jsonfallback as orjson  # type: ignore[no-redef]

    FALLBACK = True
    log.warning(
        "orjson is not installed (no wheel for this platform?): using the standard "
        "library's json instead, same output, several times slower"
    )
