//! Column type names as users write them in a spec (`bigint`, `decimal(10,2)`, `timestamp`),
//! mapped to Arrow types that Delta Lake can store.

use datafusion::arrow::datatypes::{DataType, TimeUnit};

/// The timestamp type of every table Medallion writes: microseconds, UTC — what Delta calls
/// `timestamp`.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Parses a SQL-ish type name. Returns `None` for names it does not know.
pub fn parse_type_name(name: &str) -> Option<DataType> {
    let n = name.trim().to_ascii_lowercase();
    let dt = match n.as_str() {
        "string" | "varchar" | "text" | "utf8" => DataType::Utf8,
        "bigint" | "long" | "int64" => DataType::Int64,
        "int" | "integer" | "int32" => DataType::Int32,
        "smallint" | "short" | "int16" => DataType::Int16,
        "tinyint" | "byte" | "int8" => DataType::Int8,
        "double" | "float64" | "double precision" => DataType::Float64,
        "float" | "real" | "float32" => DataType::Float32,
        "boolean" | "bool" => DataType::Boolean,
        "date" => DataType::Date32,
        "timestamp" | "timestamptz" => timestamp_type(),
        "binary" | "bytea" => DataType::Binary,
        _ => {
            let inner = n
                .strip_prefix("decimal(")
                .or_else(|| n.strip_prefix("numeric("))?
                .strip_suffix(')')?;
            let (p, s) = inner.split_once(',')?;
            DataType::Decimal128(p.trim().parse().ok()?, s.trim().parse().ok()?)
        }
    };
    Some(dt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_names() {
        assert_eq!(parse_type_name("BIGINT"), Some(DataType::Int64));
        assert_eq!(
            parse_type_name("decimal(10, 2)"),
            Some(DataType::Decimal128(10, 2))
        );
        assert_eq!(parse_type_name("timestamp"), Some(timestamp_type()));
        assert_eq!(parse_type_name("blob"), None);
    }
}
