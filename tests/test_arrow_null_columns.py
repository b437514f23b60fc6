"""A field that holds no value in any row (an `unsubscribed_at` never set) is a column of
Arrow's null type, in every batch of an export however many batches it takes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
import replikv


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with replikv.Store(tmp_path / "s") as s:
        yield s


@pytest.mark.parametrize(
    "value",
    [
        lambda i: {"x": i, "unsubscribed_at": None},
        lambda i: {"x": i, "unsubscribed_at": None} if i % 2 else {"x": i},
    ],
    ids=["none-in-every-row", "none-or-missing"],
)
def test_a_field_with_no_value_is_a_null_column_in_every_batch(store: Any, value: Any) -> None:
    store.put_many("subs", ((i, value(i)) for i in range(1000)))
    table = store.table("subs")
    batches = list(pa.RecordBatchReader.from_stream(table.to_arrow_batches(batch_rows=64)))
    assert [b.num_rows for b in batches] == [64] * 15 + [40]
    for batch in batches:
        assert batch.schema.field("unsubscribed_at").type == pa.null()
        assert batch.column("unsubscribed_at").null_count == batch.num_rows
    whole = table.to_arrow()
    assert whole.num_rows == 1000
    assert whole.column("x").to_pylist() == list(range(1000))
    stream = table.to_arrow_batches(batch_rows=100)
    assert stream.num_rows == 1000
    counted = duckdb.sql("select count(*), count(unsubscribed_at) from stream")
    assert counted is not None
    assert counted.fetchall() == [(1000, 0)]
    assert table.to_pandas()["unsubscribed_at"].isna().all()


def test_a_table_of_none_values_exports_in_batches(store: Any) -> None:
    store.put_many("flags", ((i, None) for i in range(300)))
    batches = list(
        pa.RecordBatchReader.from_stream(store.table("flags").to_arrow_batches(batch_rows=128))
    )
    assert [b.num_rows for b in batches] == [128, 128, 44]
    assert all(b.column("value").null_count == b.num_rows for b in batches)
