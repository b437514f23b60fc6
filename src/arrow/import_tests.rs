use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{
    BinaryArray, BinaryViewArray, FixedSizeListArray, Int64Array, LargeBinaryArray, StructArray,
};

use super::super::shape::{ENCODING_KEY, PACKED};
use super::*;
use crate::codec::{encode_key, encode_timestamp, Reader};

/// A column of one cell: `[[...[7]...]]`, `levels` lists deep.
fn nested_lists(levels: usize) -> ArrayRef {
    let mut array: ArrayRef = Arc::new(Int64Array::from(vec![7]));
    for _ in 0..levels {
        let field = Arc::new(Field::new_list_field(array.data_type().clone(), true));
        array = Arc::new(FixedSizeListArray::new(field, 1, array, None));
    }
    array
}

/// A column of one cell: `{'s': {'s': ... 7}}`, `levels` structs deep.
fn nested_structs(levels: usize) -> ArrayRef {
    let mut array: ArrayRef = Arc::new(Int64Array::from(vec![7]));
    for _ in 0..levels {
        let field = Arc::new(Field::new("s", array.data_type().clone(), true));
        array = Arc::new(StructArray::from(vec![(field, array)]));
    }
    array
}

fn packed_field(data_type: DataType) -> Field {
    Field::new("c", data_type, true).with_metadata(HashMap::from([(
        ENCODING_KEY.to_owned(),
        PACKED.to_owned(),
    )]))
}

fn write(array: &dyn Array, field: Option<&Field>) -> Result<Vec<u8>, Refusal> {
    let mut out = Vec::new();
    CellWriter::new(array, field, Naive::Refuse).write(0, &mut out)?;
    Ok(out)
}

#[test]
fn cells_nest_as_deep_as_put_allows_and_no_deeper() {
    // A cell is a field of its row's dict: 127 lists put its int at depth 128, as
    // `put(t, k, {'c': [[...[7]...]]})` allows; 128 lists are refused as `put` refuses.
    let stored = write(nested_lists(127).as_ref(), None).unwrap();
    let (_, depth) = Reader::new(&stored).value_and_depth().unwrap();
    assert_eq!(depth, 127);
    let refusal = write(nested_lists(128).as_ref(), None).unwrap_err();
    assert_eq!(refusal.kind, RefusalKind::Value);
    assert_eq!(
        refusal.reason,
        "values nested deeper than 128 levels are refused"
    );
    assert_eq!(
        refusal.path(),
        format!("{}...(128 levels down)", "[0]".repeat(8))
    );

    assert!(write(nested_structs(127).as_ref(), None).is_ok());
    let refusal = write(nested_structs(128).as_ref(), None).unwrap_err();
    assert_eq!(refusal.kind, RefusalKind::Value);
    assert!(refusal.path().starts_with("['s']['s']"));
}

#[test]
fn packed_cells_nest_as_deep_as_put_allows_and_no_deeper() {
    let field = packed_field(DataType::Binary);
    let nested = |levels: usize| [vec![0x91; levels], vec![0x07]].concat();
    let cells = BinaryArray::from_vec(vec![&nested(127), &nested(128)]);
    let mut out = Vec::new();
    let writer = CellWriter::new(&cells, Some(&field), Naive::Refuse);
    writer.write(0, &mut out).unwrap();
    assert_eq!(out, nested(127));
    let refusal = writer.write(1, &mut out).unwrap_err();
    assert_eq!(refusal.kind, RefusalKind::Value);
}

#[test]
fn a_packed_key_column_gives_the_keys_its_cells_hold() {
    let cells: Vec<&[u8]> = vec![
        &[0x01],                                                 // 1
        &[0xd0, 0x80],                                           // -128
        &[0xa1, b'a'],                                           // 'a'
        &[0xc4, 0x01, b'x'],                                     // b'x'
        &[0xcb, 0, 0, 0, 0, 0, 0, 0, 0],                         // 0.0
        &[0x91, 0x01],                                           // [1]
        &[0x01, 0x02],                                           // 1, then a byte more
        &[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // 2**64 - 1
        &[0xa2, b'a'],                                           // a str cut short
    ];
    let array = BinaryArray::from_vec(cells);
    let field = packed_field(DataType::Binary);
    let keys = KeyColumn::new(&array, Some(&field));
    let key = |row: usize| {
        let mut out = Vec::new();
        keys.encode_into(row, &mut out).map(|()| out)
    };
    assert_eq!(key(0).unwrap(), encode_key(KeyRef::Int(1)));
    assert_eq!(key(1).unwrap(), encode_key(KeyRef::Int(-128)));
    assert_eq!(key(2).unwrap(), encode_key(KeyRef::Str("a")));
    assert_eq!(key(3).unwrap(), encode_key(KeyRef::Bytes(b"x")));
    let float = key(4).unwrap_err();
    assert_eq!(float.kind, RefusalKind::Type);
    assert!(float.reason.contains("not float"), "{}", float.reason);
    assert!(key(5).unwrap_err().reason.contains("not list"));
    assert_eq!(key(6).unwrap_err().kind, RefusalKind::Value);
    assert_eq!(key(7).unwrap_err().kind, RefusalKind::Overflow);
    assert_eq!(key(8).unwrap_err().kind, RefusalKind::Value);

    // Unmarked, the same column holds byte-string keys.
    let plain = KeyColumn::new(&array, None);
    let mut out = Vec::new();
    plain.encode_into(0, &mut out).unwrap();
    assert_eq!(out, encode_key(KeyRef::Bytes(&[0x01])));
}

/// A packed cell: `{'tags': [..., <inner>]}`, the `MessagePack` of a dict.
fn packed_tags(inner: &[u8]) -> Vec<u8> {
    [&[0x81, 0xa4][..], b"tags", &[0x92, 0x01], inner].concat()
}

#[test]
fn packed_cells_that_put_would_refuse_or_no_reader_could_decode_are_refused_where_they_fail() {
    let timestamp = |secs: i64| {
        let payload = encode_timestamp(secs, 0);
        let mut cell = Vec::new();
        rmp::encode::write_ext_meta(&mut cell, payload.len() as u32, TIMESTAMP_EXT).unwrap();
        [cell, payload].concat()
    };
    let date = |days: i32| [&[0xd6, DATE_EXT as u8][..], &days.to_be_bytes()].concat();
    let cases: Vec<(Vec<u8>, RefusalKind, &str)> = vec![
        (packed_tags(&[0xa1, 0xff]), RefusalKind::Value, "not UTF-8"),
        (
            packed_tags(&[0xd4, 0x05, 0x00]),
            RefusalKind::Type,
            "extension type 5",
        ),
        (
            packed_tags(&[0xd4, 0xff, 0x00]),
            RefusalKind::Value,
            "malformed",
        ),
        (
            packed_tags(&timestamp(MAX_UNIX_SECONDS + 1)),
            RefusalKind::Value,
            "years 1-9999",
        ),
        (
            packed_tags(&date(i32::MAX)),
            RefusalKind::Value,
            "years 1-9999",
        ),
        (
            packed_tags(&[0xcf, 0xff, 0, 0, 0, 0, 0, 0, 0]),
            RefusalKind::Overflow,
            "64 bits",
        ),
        (
            packed_tags(&[0x81, 0x01, 0x02]),
            RefusalKind::Type,
            "dict keys must be str, not int",
        ),
    ];
    let field = packed_field(DataType::Binary);
    for (cell, kind, reason) in cases {
        let cells = BinaryArray::from_vec(vec![&cell]);
        let refusal = write(&cells, Some(&field)).unwrap_err();
        assert_eq!(refusal.kind, kind, "{reason}: {refusal:?}");
        assert!(refusal.reason.contains(reason), "{reason}: {refusal:?}");
        assert_eq!(refusal.path(), "['tags'][1]", "{reason}");
    }
    // What put stores reads back: each of the same cells, made well.
    let good = [
        packed_tags(&[0xa1, b'x']),
        packed_tags(&timestamp(1_700_000_000)),
        packed_tags(&date(-719_162)), // 0001-01-01
        packed_tags(&[0xcf, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
        packed_tags(&[0x81, 0xa1, b'k', 0x02]),
    ];
    for cell in good {
        let cells = BinaryArray::from_vec(vec![&cell]);
        assert_eq!(write(&cells, Some(&field)).unwrap(), cell);
    }
}

#[test]
fn packed_columns_of_every_binary_layout_hold_values_and_keys() {
    let cell = packed_tags(&[0xa1, b'x']);
    let key = [0xa1, b'k'];
    let large = (
        LargeBinaryArray::from_vec(vec![&cell]),
        LargeBinaryArray::from_vec(vec![&key]),
    );
    let view = (
        BinaryViewArray::from_iter_values([&cell]),
        BinaryViewArray::from_iter_values([&key]),
    );
    let columns: [(&dyn Array, &dyn Array); 2] = [(&large.0, &large.1), (&view.0, &view.1)];
    for (values, keys) in columns {
        let field = packed_field(values.data_type().clone());
        assert_eq!(write(values, Some(&field)).unwrap(), cell);
        let mut out = Vec::new();
        KeyColumn::new(keys, Some(&field))
            .encode_into(0, &mut out)
            .unwrap();
        assert_eq!(out, encode_key(KeyRef::Str("k")));
    }
}
