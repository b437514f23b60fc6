"""Values as JSON holds them: the one rule every report's ``to_dict()`` follows."""

from __future__ import annotations

import base64
import datetime
import math
from typing import Any

__all__ = ["jsonable"]


def jsonable(value: Any) -> Any:
    """``value`` with only JSON types inside: datetimes as ISO 8601 strings, bytes as
    ``{"$base64": ...}``, NaN and infinities as ``None``, tuples as lists, and objects that
    have ``to_dict()`` as that dict."""
    if isinstance(value, bytes):
        return {"$base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    return value
