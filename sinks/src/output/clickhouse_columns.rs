//! The tables' Arrow schemas as ClickHouse 18.16 columns, and Arrow rows as `RowBinary`.
//!
//! Everything is derived from the Arrow schema, so a column added to a table reaches the
//! ClickHouse output with no change here. [`clickhouse_type`] is the one mapping of an Arrow
//! type to a ClickHouse type. A top-level field becomes one column, except:
//! - a timestamp becomes a `DateTime('UTC')` of its name (18.16 has no DateTime64) and, for a
//!   unit finer than seconds, an exact `Int64` beside it, `<name>_us` (or `_ms`, `_ns`);
//! - a list becomes an `Array` (a null list, an empty array: ClickHouse has no
//!   `Nullable(Array)`);
//! - a map becomes a `Nested(key, value)` (18.16 has no Map type): columns `<name>.key` and
//!   `<name>.value`, arrays of the same length per row.
use std::fmt;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Field, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, Schema,
    TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};

/// A ClickHouse type, as far as the tables need one, with the Arrow array it is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClickHouseType {
    Int8,
    Int16,
    Int32,
    Int64,
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    Float32,
    Float64,
    /// `UInt8` (0 or 1), from an Arrow boolean.
    Bool,
    /// `String`, from Arrow UTF-8 text.
    Text,
    /// `String`, from Arrow bytes.
    Bytes,
    /// `DateTime('UTC')`, whole seconds of an Arrow timestamp of this unit (rounded down,
    /// clamped to 1970..2106).
    DateTimeOf(TimeUnit),
    /// `Int64`, the exact value of an Arrow timestamp of this unit.
    ExactTime(TimeUnit),
    Array(Box<ClickHouseType>),
    Nullable(Box<ClickHouseType>),
}

impl fmt::Display for ClickHouseType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClickHouseType::Int8 => f.write_str("Int8"),
            ClickHouseType::Int16 => f.write_str("Int16"),
            ClickHouseType::Int32 => f.write_str("Int32"),
            ClickHouseType::Int64 | ClickHouseType::ExactTime(_) => f.write_str("Int64"),
            ClickHouseType::UInt8 | ClickHouseType::Bool => f.write_str("UInt8"),
            ClickHouseType::UInt16 => f.write_str("UInt16"),
            ClickHouseType::UInt32 => f.write_str("UInt32"),
            ClickHouseType::UInt64 => f.write_str("UInt64"),
            ClickHouseType::Float32 => f.write_str("Float32"),
            ClickHouseType::Float64 => f.write_str("Float64"),
            ClickHouseType::Text | ClickHouseType::Bytes => f.write_str("String"),
            ClickHouseType::DateTimeOf(_) => f.write_str("DateTime('UTC')"),
            ClickHouseType::Array(inner) => write!(f, "Array({inner})"),
            ClickHouseType::Nullable(inner) => write!(f, "Nullable({inner})"),
        }
    }
}

/// An Arrow type ClickHouse 18.16 has no column for (or l7tap does not map).
#[derive(Debug, thiserror::Error)]
#[error("column {column:?}: the Arrow type {data_type} has no ClickHouse 18.16 mapping")]
pub struct UnsupportedColumn {
    pub column: String,
    pub data_type: DataType,
}

/// The ClickHouse type of a value of Arrow type `data_type` (nullability aside): the one
/// mapping. A timestamp maps to its exact integer here (inside a list); the top level adds
/// the `DateTime` beside it ([`columns`]).
pub fn clickhouse_type(data_type: &DataType) -> Option<ClickHouseType> {
    let mapped = match data_type {
        DataType::Boolean => ClickHouseType::Bool,
        DataType::Int8 => ClickHouseType::Int8,
        DataType::Int16 => ClickHouseType::Int16,
        DataType::Int32 => ClickHouseType::Int32,
        DataType::Int64 => ClickHouseType::Int64,
        DataType::UInt8 => ClickHouseType::UInt8,
        DataType::UInt16 => ClickHouseType::UInt16,
        DataType::UInt32 => ClickHouseType::UInt32,
        DataType::UInt64 => ClickHouseType::UInt64,
        DataType::Float32 => ClickHouseType::Float32,
        DataType::Float64 => ClickHouseType::Float64,
        DataType::Utf8 => ClickHouseType::Text,
        DataType::Binary => ClickHouseType::Bytes,
        DataType::Timestamp(unit, _) => ClickHouseType::ExactTime(*unit),
        DataType::List(item) => ClickHouseType::Array(Box::new(value_type(item)?)),
        DataType::Null
        | DataType::Float16
        | DataType::Date32
        | DataType::Date64
        | DataType::Time32(_)
        | DataType::Time64(_)
        | DataType::Duration(_)
        | DataType::Interval(_)
        | DataType::FixedSizeBinary(_)
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::ListView(_)
        | DataType::FixedSizeList(_, _)
        | DataType::LargeList(_)
        | DataType::LargeListView(_)
        | DataType::Struct(_)
        | DataType::Union(_, _)
        | DataType::Dictionary(_, _)
        | DataType::Decimal128(_, _)
        | DataType::Decimal256(_, _)
        | DataType::Map(_, _)
        | DataType::RunEndEncoded(_, _) => return None,
    };
    Some(mapped)
}

/// The type of a list item or map value: `Nullable(...)` when the field is nullable, but for
/// an array (ClickHouse has no `Nullable(Array)`; a null list is written as an empty one).
fn value_type(field: &Field) -> Option<ClickHouseType> {
    let inner = clickhouse_type(field.data_type())?;
    Some(
        if field.is_nullable() && !matches!(inner, ClickHouseType::Array(_)) {
            ClickHouseType::Nullable(Box::new(inner))
        } else {
            inner
        },
    )
}

/// Which part of an Arrow field a column holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// The value itself.
    Value,
    /// The whole seconds of a timestamp.
    Seconds,
    /// A map's keys.
    Keys,
    /// A map's values.
    Values,
}

/// One ClickHouse column of a table: its name, type and where its values come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClickHouseColumn {
    pub name: String,
    pub column_type: ClickHouseType,
    /// Index of the Arrow field it is read from.
    field: usize,
    part: Part,
}

/// A column's definition in `CREATE TABLE`: one per column, but one `Nested` per map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnDefinition(pub String);

/// The ClickHouse columns of an Arrow schema, in the order `RowBinary` rows hold them, and
/// the definitions that create them.
pub fn columns(
    schema: &Schema,
) -> Result<(Vec<ClickHouseColumn>, Vec<ColumnDefinition>), UnsupportedColumn> {
    let mut out = Vec::new();
    let mut definitions = Vec::new();
    for (index, field) in schema.fields().iter().enumerate() {
        let unsupported = || UnsupportedColumn {
            column: field.name().clone(),
            data_type: field.data_type().clone(),
        };
        let nullable = |t: ClickHouseType| {
            if field.is_nullable() {
                ClickHouseType::Nullable(Box::new(t))
            } else {
                t
            }
        };
        let mut push = |name: String, column_type: ClickHouseType, part: Part| {
            out.push(ClickHouseColumn {
                name,
                column_type,
                field: index,
                part,
            })
        };
        match field.data_type() {
            DataType::Timestamp(unit, _) => {
                let seconds = nullable(ClickHouseType::DateTimeOf(*unit));
                definitions.push(ColumnDefinition(format!(
                    "{} {seconds}",
                    quote_identifier(field.name())
                )));
                push(field.name().clone(), seconds, Part::Seconds);
                let suffix = match unit {
                    TimeUnit::Second => None,
                    TimeUnit::Millisecond => Some("ms"),
                    TimeUnit::Microsecond => Some("us"),
                    TimeUnit::Nanosecond => Some("ns"),
                };
                if let Some(suffix) = suffix {
                    let name = format!("{}_{suffix}", field.name());
                    let exact = nullable(ClickHouseType::ExactTime(*unit));
                    definitions.push(ColumnDefinition(format!(
                        "{} {exact}",
                        quote_identifier(&name)
                    )));
                    push(name, exact, Part::Value);
                }
            }
            DataType::Map(entries, _) if !field.is_nullable() => {
                let DataType::Struct(parts) = entries.data_type() else {
                    return Err(unsupported());
                };
                let [key, value] = &parts.iter().collect::<Vec<_>>()[..] else {
                    return Err(unsupported());
                };
                let key_type = value_type(key).ok_or_else(unsupported)?;
                let value_type = value_type(value).ok_or_else(unsupported)?;
                definitions.push(ColumnDefinition(format!(
                    "{} Nested({} {key_type}, {} {value_type})",
                    quote_identifier(field.name()),
                    quote_identifier(key.name()),
                    quote_identifier(value.name())
                )));
                push(
                    format!("{}.{}", field.name(), key.name()),
                    ClickHouseType::Array(Box::new(key_type)),
                    Part::Keys,
                );
                push(
                    format!("{}.{}", field.name(), value.name()),
                    ClickHouseType::Array(Box::new(value_type)),
                    Part::Values,
                );
            }
            // ClickHouse has no Nullable(Array(...)): a null list is written as an empty one.
            data_type @ DataType::List(_) => {
                let column_type = clickhouse_type(data_type).ok_or_else(unsupported)?;
                definitions.push(ColumnDefinition(format!(
                    "{} {column_type}",
                    quote_identifier(field.name())
                )));
                push(field.name().clone(), column_type, Part::Value);
            }
            data_type => {
                let column_type = nullable(clickhouse_type(data_type).ok_or_else(unsupported)?);
                definitions.push(ColumnDefinition(format!(
                    "{} {column_type}",
                    quote_identifier(field.name())
                )));
                push(field.name().clone(), column_type, Part::Value);
            }
        }
    }
    Ok((out, definitions))
}

/// `name` as a ClickHouse identifier in back quotes (`a.b` for a nested column stays one
/// quoted name, as ClickHouse spells it).
pub fn quote_identifier(name: &str) -> String {
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('`');
    for c in name.chars() {
        if c == '`' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('`');
    quoted
}

/// A batch's columns do not have the types the column list was made for.
#[derive(Debug, thiserror::Error)]
#[error("column {column:?} does not hold {expected} values")]
pub struct MismatchedColumn {
    pub column: String,
    pub expected: String,
}

/// Appends the rows of `batch` to `out` in ClickHouse's `RowBinary` format, one value per
/// column of `columns` (made by [`columns`] from the batch's schema), each row followed by
/// `row_suffix` (values of further columns, the same in every row, already encoded).
pub fn write_row_binary(
    batch: &RecordBatch,
    columns: &[ClickHouseColumn],
    row_suffix: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), MismatchedColumn> {
    for row in 0..batch.num_rows() {
        for column in columns {
            let array = batch.column(column.field).as_ref();
            let mismatch = || MismatchedColumn {
                column: column.name.clone(),
                expected: column.column_type.to_string(),
            };
            match column.part {
                Part::Value | Part::Seconds => {
                    write_value(array, row, &column.column_type, out).ok_or_else(mismatch)?
                }
                Part::Keys | Part::Values => {
                    let map = array.as_map_opt().ok_or_else(mismatch)?;
                    let ClickHouseType::Array(item) = &column.column_type else {
                        return Err(mismatch());
                    };
                    let range =
                        map.value_offsets()[row] as usize..map.value_offsets()[row + 1] as usize;
                    let items = if column.part == Part::Keys {
                        map.keys()
                    } else {
                        map.values()
                    };
                    write_varint(range.len() as u64, out);
                    for i in range {
                        write_value(items.as_ref(), i, item, out).ok_or_else(mismatch)?;
                    }
                }
            }
        }
        out.extend_from_slice(row_suffix);
    }
    Ok(())
}

/// A `String` value in `RowBinary`.
pub fn write_string(text: &str, out: &mut Vec<u8>) {
    write_varint(text.len() as u64, out);
    out.extend_from_slice(text.as_bytes());
}

/// One value of `array` at `row` as `RowBinary`; `None` when the array is not of the type.
fn write_value(
    array: &dyn Array,
    row: usize,
    column_type: &ClickHouseType,
    out: &mut Vec<u8>,
) -> Option<()> {
    match column_type {
        ClickHouseType::Nullable(inner) => {
            if array.is_null(row) {
                out.push(1);
                return Some(());
            }
            out.push(0);
            write_value(array, row, inner, out)?;
        }
        ClickHouseType::Int8 => out.push(array.as_primitive_opt::<Int8Type>()?.value(row) as u8),
        ClickHouseType::Int16 => out.extend(
            array
                .as_primitive_opt::<Int16Type>()?
                .value(row)
                .to_le_bytes(),
        ),
        ClickHouseType::Int32 => out.extend(
            array
                .as_primitive_opt::<Int32Type>()?
                .value(row)
                .to_le_bytes(),
        ),
        ClickHouseType::Int64 => out.extend(
            array
                .as_primitive_opt::<Int64Type>()?
                .value(row)
                .to_le_bytes(),
        ),
        ClickHouseType::UInt8 => out.push(array.as_primitive_opt::<UInt8Type>()?.value(row)),
        ClickHouseType::UInt16 => out.extend(
            array
                .as_primitive_opt::<UInt16Type>()?
                .value(row)
                .to_le_bytes(),
        ),
        ClickHouseType::UInt32 => out.extend(
            array
                .as_primitive_opt::<UInt32Type>()?
                .value(row)
                .to_le_bytes(),
        ),
        ClickHouseType::UInt64 => out.extend(
            array
                .as_primitive_opt::<UInt64Type>()?
                .value(row)
                .to_le_bytes(),
        ),
        ClickHouseType::Float32 => out.extend(
            array
                .as_primitive_opt::<Float32Type>()?
                .value(row)
                .to_le_bytes(),
        ),
        ClickHouseType::Float64 => out.extend(
            array
                .as_primitive_opt::<Float64Type>()?
                .value(row)
                .to_le_bytes(),
        ),
        ClickHouseType::Bool => out.push(u8::from(array.as_boolean_opt()?.value(row))),
        ClickHouseType::Text => write_string(array.as_string_opt::<i32>()?.value(row), out),
        ClickHouseType::Bytes => {
            let bytes = array.as_binary_opt::<i32>()?.value(row);
            write_varint(bytes.len() as u64, out);
            out.extend_from_slice(bytes);
        }
        ClickHouseType::DateTimeOf(unit) => {
            let (value, per_second) = timestamp(array, row, *unit)?;
            let seconds = value.div_euclid(per_second).clamp(0, u32::MAX as i64) as u32;
            out.extend(seconds.to_le_bytes());
        }
        ClickHouseType::ExactTime(unit) => {
            out.extend(timestamp(array, row, *unit)?.0.to_le_bytes());
        }
        ClickHouseType::Array(item) => {
            let list = array.as_list_opt::<i32>()?;
            if list.is_null(row) {
                write_varint(0, out);
                return Some(());
            }
            let offsets = list.value_offsets();
            let range = offsets[row] as usize..offsets[row + 1] as usize;
            write_varint(range.len() as u64, out);
            let values = list.values().as_ref();
            for i in range {
                write_value(values, i, item, out)?;
            }
        }
    }
    Some(())
}

/// A timestamp's raw value and its units per second.
fn timestamp(array: &dyn Array, row: usize, unit: TimeUnit) -> Option<(i64, i64)> {
    Some(match unit {
        TimeUnit::Second => (
            array.as_primitive_opt::<TimestampSecondType>()?.value(row),
            1,
        ),
        TimeUnit::Millisecond => (
            array
                .as_primitive_opt::<TimestampMillisecondType>()?
                .value(row),
            1_000,
        ),
        TimeUnit::Microsecond => (
            array
                .as_primitive_opt::<TimestampMicrosecondType>()?
                .value(row),
            1_000_000,
        ),
        TimeUnit::Nanosecond => (
            array
                .as_primitive_opt::<TimestampNanosecondType>()?
                .value(row),
            1_000_000_000,
        ),
    })
}

/// ClickHouse's variable-length unsigned integer (LEB128), as lengths are written.
fn write_varint(mut value: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Table;

    #[test]
    fn every_table_maps_and_timestamps_keep_an_exact_column() {
        for table in Table::ALL {
            let (mapped, definitions) = super::columns(&table.schema()).unwrap();
            assert!(mapped.len() >= table.columns().len(), "{}", table.name());
            assert!(definitions.len() >= table.columns().len());
        }
        let (mapped, definitions) = super::columns(&Table::Requests.schema()).unwrap();
        let ts: Vec<_> = mapped
            .iter()
            .filter(|c| c.name.starts_with("ts"))
            .map(|c| (c.name.as_str(), c.column_type.to_string()))
            .collect();
        assert_eq!(
            ts,
            [
                ("ts", "DateTime('UTC')".to_string()),
                ("ts_us", "Int64".to_string())
            ]
        );
        assert!(definitions.contains(&ColumnDefinition("`error_code` Nullable(Int32)".into())));
        let (mapped, definitions) = super::columns(&Table::CaptureStats.schema()).unwrap();
        assert!(definitions.iter().any(|d| d
            .0
            .contains("Nested(`key` String, `value` Nullable(Int64))")));
        assert!(mapped.iter().any(|c| c.name.ends_with(".key")));
        let (_, definitions) = super::columns(&Table::Intervals.schema()).unwrap();
        assert!(definitions.contains(&ColumnDefinition(
            "`heatmap_counts` Array(Array(Nullable(Int64)))".into()
        )));
    }

    #[test]
    fn unmapped_types_are_named() {
        let schema = Schema::new(vec![Field::new("d", DataType::Date32, false)]);
        let error = super::columns(&schema).unwrap_err();
        assert_eq!(error.column, "d");
        let schema = Schema::new(vec![Field::new(
            "l",
            DataType::List(std::sync::Arc::new(Field::new_list_field(
                DataType::Date64,
                true,
            ))),
            true,
        )]);
        assert!(super::columns(&schema).is_err());
    }

    #[test]
    fn row_binary_of_each_kind_of_value() {
        use arrow::array::{
            ArrayRef, BinaryArray, BooleanArray, Int32Array, ListBuilder, StringArray,
            TimestampMicrosecondArray,
        };
        use std::sync::Arc;
        let mut list = ListBuilder::new(arrow::array::Int64Builder::new());
        list.values().append_value(5);
        list.values().append_value(300);
        list.append(true);
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("n", DataType::Int32, true),
            Field::new("s", DataType::Utf8, false),
            Field::new("b", DataType::Binary, false),
            Field::new("t", DataType::Boolean, false),
            Field::new("l", list.finish().data_type().clone(), false),
        ]));
        let mut list = ListBuilder::new(arrow::array::Int64Builder::new());
        list.values().append_value(5);
        list.values().append_value(300);
        list.append(true);
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(TimestampMicrosecondArray::from(vec![16_500_001]).with_timezone("UTC")),
            Arc::new(Int32Array::from(vec![None])),
            Arc::new(StringArray::from(vec!["ab"])),
            Arc::new(BinaryArray::from(vec![&b"\x00\xff"[..]])),
            Arc::new(BooleanArray::from(vec![true])),
            Arc::new(list.finish()),
        ];
        let batch = RecordBatch::try_new(schema.clone(), arrays).unwrap();
        let (mapped, _) = super::columns(&schema).unwrap();
        let mut out = Vec::new();
        write_row_binary(&batch, &mapped, &[7], &mut out).unwrap();
        let mut expected = vec![16, 0, 0, 0];
        expected.extend(16_500_001i64.to_le_bytes());
        expected.push(1); // null
        expected.extend([2, b'a', b'b', 2, 0, 0xff, 1, 2]);
        expected.extend([0, 5, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend([0, 44, 1, 0, 0, 0, 0, 0, 0]);
        expected.push(7); // the suffix
        assert_eq!(out, expected);
        let mut varint = Vec::new();
        write_varint(300, &mut varint);
        assert_eq!(varint, [0xac, 0x02]);
    }
}
