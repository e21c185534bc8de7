//! Helpers shared by the cross-runtime tests: run a spec into a temporary lake, read tables
//! back as sorted text rows so results compare across runtimes and partition counts.

use std::path::Path;
use std::sync::Arc;

use medallion_core::arrow::util::display::{ArrayFormatter, FormatOptions};
use medallion_core::pipeline::{run, RunOptions};
use medallion_core::query::{collect_sql, new_context, register_location, EngineOptions};
use medallion_core::report::RunReport;
use medallion_core::spec::PipelineSpec;
use medallion_core::storage::Storage;
use medallion_host::local_fs::LocalFs;
use medallion_host::SystemClock;

pub fn storage() -> Arc<dyn Storage> {
    Arc::new(LocalFs)
}

/// Runs `spec` (TOML text) with sources relative to `base`, into `lake`.
pub async fn run_spec(
    spec: &str,
    base: &Path,
    lake: &Path,
    partitions: usize,
) -> medallion_core::Result<RunReport> {
    let spec = PipelineSpec::from_toml(spec)?;
    let opts = RunOptions {
        lake: lake.to_string_lossy().into_owned(),
        base: base.to_string_lossy().into_owned(),
        run_id: medallion_host::new_run_id(),
        engine: EngineOptions {
            target_partitions: partitions,
            ..Default::default()
        },
        max_files_per_table: None,
        max_bytes_per_table: None,
    };
    run(&spec, storage(), &SystemClock::new(), &opts, &|_| {}).await
}

/// The rows of `sql` over the Delta table at `table` (registered as `t`), each row as
/// `a|b|c`, sorted.
pub async fn rows(table: &Path, sql: &str) -> Vec<String> {
    let ctx = new_context(EngineOptions::default());
    register_location(&ctx, &storage(), "t", &format!("delta:{}", table.display()))
        .await
        .unwrap_or_else(|e| panic!("open {}: {e}", table.display()));
    let (_, batches) = collect_sql(&ctx, "test", sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let opts = FormatOptions::default().with_null("∅");
    let mut out = Vec::new();
    for b in &batches {
        let fmts: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap())
            .collect();
        for r in 0..b.num_rows() {
            out.push(
                fmts.iter()
                    .map(|f| f.value(r).to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            );
        }
    }
    out.sort();
    out
}

/// The version numbers in a table's log.
pub fn versions(table: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(table.join("_delta_log"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json")?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Parquet files in a table folder, committed or not.
pub fn data_files(table: &Path) -> usize {
    std::fs::read_dir(table)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
                .count()
        })
        .unwrap_or(0)
}

pub fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// The physical plan of an `EXPLAIN`'s result, as text.
pub fn physical_plan(explained: &[medallion_core::arrow::array::RecordBatch]) -> String {
    let plan = medallion_core::arrow::util::pretty::pretty_format_batches(explained)
        .unwrap()
        .to_string();
    plan[plan.find("physical_plan").expect("a physical plan")..].to_string()
}
