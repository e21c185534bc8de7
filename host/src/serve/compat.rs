//! Functions that drivers call on connect and that DataFusion's pg_catalog lacks or answers
//! in a way they cannot parse: SQLAlchemy reads the server version from `version()` and
//! refuses anything but `PostgreSQL <major>.<minor>`; it asks `pg_get_serial_sequence` when
//! reflecting columns (a lake table has no serial columns: NULL).

use std::sync::Arc;

use medallion_core::datafusion::arrow::datatypes::DataType;
use medallion_core::datafusion::common::ScalarValue;
use medallion_core::datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
use medallion_core::datafusion::prelude::SessionContext;

/// What `version()` says: the protocol level the server speaks first, as clients expect.
pub const VERSION: &str = concat!(
    "PostgreSQL 16.6 on x86_64-pc-linux-gnu (medallion serve ",
    env!("CARGO_PKG_VERSION"),
    ", Apache DataFusion 55)"
);

pub fn register(ctx: &SessionContext) {
    ctx.register_udf(create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|_| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
                VERSION.to_string(),
            ))))
        }),
    ));
    ctx.register_udf(create_udf(
        "pg_get_serial_sequence",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|_| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)))),
    ));
}
