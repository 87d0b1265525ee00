"""Remove credentials from text before it reaches a log, an error, a report or the registry.

Data locations can carry secrets: ``s3://KEY:SECRET@bucket/x`` or a presigned
``https://host/x.csv?X-Amz-Signature=...``. refit shows such a location with the secret parts
replaced by ``***``; the location itself still works where refit reads it.
"""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")
_SECRET_PARAM = re.compile(
    r"(?P<key>[?&;](?:[^=&\s]*(?:token|secret|signature|sig|password|passwd|pwd|key|credential)"
    r"[^=&\s]*))=(?P<value>[^&\s#'\"]+)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    text = _USERINFO.sub(lambda m: f"{m['scheme']}***@", text)
    return _SECRET_PARAM.sub(lambda m: f"{m['key']}=***", text)
