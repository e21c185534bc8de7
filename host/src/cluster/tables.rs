//! A table version as an explicit list of Parquet files, in the form Ballista's stock codecs
//! serialise: a `ListingTable` per list of files (each file its own table path, so nothing is
//! listed beyond the files named), unioned per partition with the partition values as
//! literal columns. Medallion's own `ParquetFilesTable` reads through the client's storage
//! and has no codec; this has the same rows and columns, in the same order.

use std::collections::BTreeMap;
use std::sync::Arc;

use medallion_core::arrow::datatypes::{FieldRef, SchemaRef};
use medallion_core::datafusion::catalog::view::ViewTable;
use medallion_core::datafusion::catalog::TableProvider;
use medallion_core::datafusion::common::ScalarValue;
use medallion_core::datafusion::datasource::file_format::parquet::ParquetFormat;
use medallion_core::datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use medallion_core::datafusion::logical_expr::{cast, lit, Expr, LogicalPlanBuilder};
use medallion_core::datafusion::prelude::{col, SessionContext};
use medallion_core::delta::{self, LiveFile};
use medallion_core::error::{Error, Result};
use medallion_core::query::ParquetFilesTable;

use super::Context;

/// A table of exactly `files`, with `schema` (a Delta table's: the partition columns'
/// values come from each file's entry, the other columns from the files).
pub fn file_list_table(
    ctx: &SessionContext,
    table: &str,
    schema: SchemaRef,
    partition_columns: &[String],
    files: &[LiveFile],
) -> Result<Arc<dyn TableProvider>> {
    let file_schema = delta::file_schema(&schema, partition_columns);
    // The column order of Medallion's own table over the same files (`SELECT *` agrees).
    let scan_schema = ParquetFilesTable::scan_schema(&schema, partition_columns);
    if files.is_empty() {
        return empty_table(table, &scan_schema);
    }
    if partition_columns.is_empty() {
        let locations: Vec<&str> = files.iter().map(|f| f.location.as_str()).collect();
        return listing_table(ctx, table, file_schema, &locations);
    }
    let partition_fields: Vec<FieldRef> = delta::partition_fields(&schema, partition_columns)
        .into_iter()
        .map(Arc::new)
        .collect();
    // One scan per combination of partition values, each adding them as literals.
    let mut groups: BTreeMap<Vec<Option<String>>, Vec<&str>> = BTreeMap::new();
    for f in files {
        groups
            .entry(f.partition_values.clone())
            .or_default()
            .push(f.location.as_str());
    }
    let mut union: Option<LogicalPlanBuilder> = None;
    for (values, locations) in groups {
        let scan = listing_table(ctx, table, file_schema.clone(), &locations)?;
        let mut columns: Vec<Expr> = file_schema
            .fields()
            .iter()
            .map(|f| col(quoted(f.name())))
            .collect();
        for (i, field) in partition_fields.iter().enumerate() {
            let value = values.get(i).cloned().flatten();
            let typed = delta::typed_value(field, value.as_deref(), locations[0])?;
            columns.push(cast(lit(typed), field.data_type().clone()).alias(field.name()));
        }
        let plan = LogicalPlanBuilder::scan(
            table,
            medallion_core::datafusion::datasource::provider_as_source(scan),
            None,
        )
        .and_then(|b| b.project(columns))
        .context(|| format!("table `{table}`: partition scan"))?;
        union = Some(match union {
            None => plan,
            Some(u) => u
                .union(plan.build().context(|| format!("table `{table}`"))?)
                .context(|| format!("table `{table}`: partitions"))?,
        });
    }
    let plan = union
        .ok_or_else(|| Error::Table {
            table: table.to_string(),
            message: "no files".into(),
        })?
        .build()
        .context(|| format!("table `{table}`"))?;
    Ok(Arc::new(ViewTable::new(plan, None)))
}

/// A `ListingTable` over `locations`, read with the session's Parquet options.
fn listing_table(
    ctx: &SessionContext,
    table: &str,
    file_schema: SchemaRef,
    locations: &[&str],
) -> Result<Arc<dyn TableProvider>> {
    let urls = locations
        .iter()
        .map(|l| ListingTableUrl::parse(l).context(|| format!("table `{table}`: data file {l}")))
        .collect::<Result<Vec<_>>>()?;
    let state = ctx.state();
    let format = ParquetFormat::default().with_options(state.table_options().parquet.clone());
    // The paths are files, not folders: no extension filter, nothing else listed.
    let options = ListingOptions::new(Arc::new(format)).with_file_extension("");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(file_schema);
    let listing = ListingTable::try_new(config).context(|| format!("table `{table}`"))?;
    Ok(Arc::new(listing))
}

/// A table with `schema` and no rows, as a plan the codecs carry (typed NULLs, filtered out).
fn empty_table(table: &str, schema: &SchemaRef) -> Result<Arc<dyn TableProvider>> {
    let columns: Vec<Expr> = schema
        .fields()
        .iter()
        .map(|f| {
            let null = ScalarValue::try_from(f.data_type()).unwrap_or(ScalarValue::Null);
            cast(lit(null), f.data_type().clone()).alias(f.name())
        })
        .collect();
    let plan = LogicalPlanBuilder::empty(true)
        .project(columns)
        .and_then(|b| b.filter(lit(false)))
        .and_then(|b| b.build())
        .context(|| format!("table `{table}`: empty"))?;
    Ok(Arc::new(ViewTable::new(plan, None)))
}

/// A column name as an identifier `col` takes literally (case and dots preserved).
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
