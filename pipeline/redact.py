"""Remove credentials from URLs before they reach logs, errors or metrics."""

from __future__ import annotations

import re

_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:@/]*)(:[^@/]*)?@")
_SECRET_QUERY = re.compile(r"(?i)([?&](?:password|passwd|pwd|token|secret|key)=)[^&]*")


def redact_url(url: str) -> str:
    """`rtsp://user:secret@host/x?token=t` -> `rtsp://user:***@host/x?token=***`."""
    redacted = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@" if m[3] else m[0], url)
    return _SECRET_QUERY.sub(r"\1***", redacted)


_USERINFO_IN_TEXT = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:@/\s]*):[^@/\s]*@"
)


def redact_text(text: str) -> str:
    """Every URL password in free text (a log line, an exception message) replaced by ***."""
    redacted = _USERINFO_IN_TEXT.sub(r"\g<scheme>\g<user>:***@", text)
    return _SECRET_QUERY.sub(r"\1***", redacted)
