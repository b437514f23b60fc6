"""Fuzzing of the value decoder (stored values, and a cache node's GET payloads): arbitrary
or damaged bytes give a ValueError, never a crash; every encoding decodes to its value.

Bounded for CI; for a longer run set REPLIKV_FUZZ_EXAMPLES, e.g.
``REPLIKV_FUZZ_EXAMPLES=200000 python -m pytest tests/test_fuzz_values.py``.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import hypothesis.strategies as st
import pytest
import replikv
from hypothesis import HealthCheck, given, settings
from test_values_read_back import VALUES, same

EXAMPLES = int(os.environ.get("REPLIKV_FUZZ_EXAMPLES", "500"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(data=st.binary(max_size=256))
def test_fuzz_arbitrary_bytes_decode_or_are_a_value_error(data: bytes) -> None:
    try:
        replikv.decode_value(data)
    except ValueError as refused:
        assert "not a replikv value" in str(refused)


@FUZZ
@given(value=VALUES, data=st.data())
def test_fuzz_damaged_encodings_decode_or_are_a_value_error(
    value: Any, data: st.DataObject
) -> None:
    try:
        encoded = bytearray(replikv.encode_value(value))
    except (TypeError, ValueError, OverflowError):
        return
    assert same(value, replikv.decode_value(bytes(encoded)))
    damage = data.draw(
        st.lists(st.tuples(st.integers(0, len(encoded) - 1), st.integers(1, 255)), max_size=4)
    )
    for index, mask in damage:
        encoded[index] ^= mask
    cut = data.draw(st.integers(0, len(encoded)))
    for candidate in (bytes(encoded), bytes(encoded[:cut]), bytes(encoded) + b"\x00"):
        with contextlib.suppress(ValueError):
            replikv.decode_value(candidate)


def test_trailing_bytes_after_a_value_are_refused() -> None:
    encoded = replikv.encode_value({"opted_in": True})
    assert replikv.decode_value(encoded) == {"opted_in": True}
    with pytest.raises(ValueError, match="follow the end"):
        replikv.decode_value(encoded + b"\xc0")
