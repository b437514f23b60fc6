"""How stored keys and values are written as JSON and CSV text, and read back.

JSON cannot hold every stored value, so the data commands write:

* ``bytes`` as ``{"$base64": "<standard base64>"}`` (a key too); reading JSON lines back
  (``replikv import``) turns such an object into bytes again;
* a ``datetime`` (stored in UTC) as an ISO 8601 string, ``"2026-07-01T12:00:00+00:00"``;
  it is read back as that string (parquet keeps datetimes as datetimes);
* a float that is not finite as the string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``;
  it is read back as that string.

In CSV a cell is text: ``None`` is an empty cell, ``True``/``False`` are ``true``/``false``,
a float that is not finite is ``NaN``, ``Infinity`` or ``-Infinity`` (as in JSON, not
Python's ``nan``/``inf``), bytes are base64 text, a datetime is ISO 8601 and a list or dict
is its JSON text.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
from typing import Any

from .._plain import BYTES_TAG, to_json

__all__ = ["RENDERING_HELP", "csv_cell", "from_json", "to_json"]

#: Shown at the end of the help of every command that prints or reads values.
RENDERING_HELP = (
    'Values JSON cannot hold are written as: bytes -> {"$base64": "..."} (read back as '
    'bytes by import), datetime -> ISO 8601 text in UTC, NaN/inf -> "NaN"/"Infinity"/'
    '"-Infinity" (import reads datetimes and these back as text). In CSV, None is an empty '
    "cell, bools are true/false, NaN/inf are NaN/Infinity/-Infinity, lists and dicts are "
    "their JSON text."
)


def _untagged(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and isinstance(obj.get(BYTES_TAG), str):
        return base64.b64decode(obj[BYTES_TAG], validate=True)
    return obj


def from_json(line: str) -> Any:
    """A JSON text read back, with ``{"$base64": ...}`` objects as bytes.

    Raises:
        ValueError: not JSON, or nested deeper than Python's parser can follow.
    """
    try:
        return json.loads(line, object_hook=_untagged)
    except RecursionError:
        raise ValueError(
            "JSON nested too deeply to be read (a stored value has at most 128 levels)"
        ) from None


def csv_cell(value: Any) -> str:
    """A stored value as one CSV cell's text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dt.date):  # a datetime is a date too
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        # JSON's names, not Python's "nan"/"inf": one spelling in every format.
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, int | float):
        return str(value)
    return to_json(value)
