"""Values as JSON holds them: `jsonable` for the `to_dict()` of every report, and
`to_json` for the lossless JSON text of stored keys and values (CLI, divergence files)."""

from __future__ import annotations

import base64
import datetime
import json
import math
from typing import Any

__all__ = ["BYTES_TAG", "jsonable", "tagged", "to_json"]

#: How bytes are written in JSON: ``{"$base64": "<standard base64>"}``.
BYTES_TAG = "$base64"


def jsonable(value: Any) -> Any:
    """``value`` with only JSON types inside: datetimes as ISO 8601 strings, bytes as
    ``{"$base64": ...}``, NaN and infinities as ``None``, tuples as lists, and objects that
    have ``to_dict()`` as that dict."""
    if isinstance(value, bytes | datetime.datetime):
        return tagged(value)
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


def tagged(value: object) -> object:
    """Bytes as ``{"$base64": ...}``, a datetime or a date as ISO 8601; anything else is a
    ``TypeError`` (the ``default`` hook of ``json.dumps``)."""
    if isinstance(value, bytes):
        return {BYTES_TAG: base64.b64encode(value).decode("ascii")}
    if isinstance(value, datetime.date):  # a datetime is a date too
        return value.isoformat()
    raise TypeError(f"cannot write a {type(value).__name__} as JSON")


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by its name."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {name: _finite(item) for name, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def to_json(value: Any) -> str:
    """One line of JSON for a stored key, value or row, nothing lost: bytes and datetimes
    as ``tagged`` writes them, a float that is not finite as ``"NaN"``, ``"Infinity"`` or
    ``"-Infinity"`` (JSON has no such numbers)."""
    try:
        return json.dumps(value, default=tagged, ensure_ascii=False, allow_nan=False)
    except ValueError:  # a NaN or an infinity somewhere: the rare case pays for a walk
        return json.dumps(_finite(value), default=tagged, ensure_ascii=False)
