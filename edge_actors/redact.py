"""Make untrusted text safe to show: no secrets from URLs, bounded length.

Secrets: ``redact_url``/``redact_urls`` remove them from URLs before they reach
a log line, ``status`` or the outbox.

An S3-compatible endpoint URL may carry credentials in its user-info
(``http://USER:PASS@host/``) or a query string (``?X-Amz-Security-Token=...``).
The config refuses both, but error texts also come from botocore and the network
stack, so every error text the uploader records goes through :func:`redact_urls`.
"""

from __future__ import annotations

import re

__all__ = ["REDACTED", "redact_url", "redact_urls", "short_repr"]

#: What replaces a user-info part or a query string.
REDACTED = "***"

# A scheme, "://", then anything up to a blank, a quote or an angle bracket: the
# forms a URL takes inside an exception message.
_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,15}://[^\s'\"<>`]+")


def redact_url(url: str) -> str:
    """Return ``url`` with its user-info, query string and fragment replaced by ``***``.

    The scheme, host, port and path stay, so the text still says where the
    request went. Works on malformed URLs too (no parsing that can fail), and on
    a value without ``scheme://`` (``user:pass@host``).
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        authority = f"{REDACTED}@{authority.rpartition('@')[2]}"
    path, qmark, _query = tail.partition("?")
    if qmark:
        tail = f"{path}?{REDACTED}"
    elif "#" in tail:
        tail = f"{tail.partition('#')[0]}#{REDACTED}"
    return f"{scheme}{sep}{authority}{tail}"


def redact_urls(text: str) -> str:
    """Redact every URL found in ``text`` (see :func:`redact_url`); the rest is unchanged."""
    if "://" not in text:
        return text
    return _URL_RE.sub(lambda m: redact_url(m.group(0)), text)


def short_repr(text: str, limit: int = 60) -> str:
    """``repr(text)``, cut to its first ``limit`` characters when longer.

    A bad value of 10 MB must not be echoed whole into an error message; the
    cut form says how long the original was: ``'xxxx...' (10485760 characters)``.
    ``repr`` also escapes control and bidirectional characters, so the value
    cannot rewrite the terminal it is printed on.
    """
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"
