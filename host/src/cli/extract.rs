//! `medallion extract`: pulls the spec's database-backed bronze tables (PostgreSQL), each in
//! one commit. `medallion run` calls it first when the spec has such tables.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use medallion_core::extract::ExtractReport;
use medallion_core::pipeline::RunOptions;
use medallion_core::spec::PipelineSpec;
use medallion_core::storage::Storage;
use medallion_host::postgres::{extract_table, extracted_tables};
use medallion_host::SystemClock;

/// Extracts `only` (or every database-backed bronze table of the spec) and prints a line per
/// table (or the reports as JSON).
pub async fn extract(
    spec_path: &Path,
    lake: &str,
    only: &[String],
    json: bool,
    storage: Arc<dyn Storage>,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(spec_path)
        .with_context(|| format!("cannot read the pipeline spec {}", spec_path.display()))?;
    let spec =
        PipelineSpec::from_toml(&text).with_context(|| format!("in {}", spec_path.display()))?;
    let opts = super::run::run_options(spec_path, lake, Default::default())?;
    let tables = extracted_tables(&spec);
    for name in only {
        if !tables.contains(name) {
            anyhow::bail!(
                "`{name}` is not a bronze table extracted from a database source in {} (those are: {})",
                spec_path.display(),
                if tables.is_empty() { "none".to_string() } else { tables.join(", ") }
            );
        }
    }
    let chosen: Vec<String> = match only.is_empty() {
        true => tables,
        false => only.to_vec(),
    };
    if chosen.is_empty() {
        anyhow::bail!(
            "{} has no bronze table with a `source` (a database in [sources]) to extract",
            spec_path.display()
        );
    }
    let reports = extract_all(&spec, &chosen, storage, &opts, !json).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&reports)?)?;
    }
    Ok(())
}

/// Extracts `tables` one after the other; stops at the first failure (earlier tables stay
/// committed, the failed one is unchanged). Prints a line per table to stderr if `show`.
pub async fn extract_all(
    spec: &PipelineSpec,
    tables: &[String],
    storage: Arc<dyn Storage>,
    opts: &RunOptions,
    show: bool,
) -> anyhow::Result<Vec<ExtractReport>> {
    let clock = SystemClock::new();
    let mut reports = Vec::new();
    for name in tables {
        let started = std::time::Instant::now();
        let report = extract_table(spec, name, storage.clone(), &clock, opts)
            .await
            .with_context(|| match reports.is_empty() {
                true => format!("extracting `{name}` failed; no table was changed"),
                false => format!(
                    "extracting `{name}` failed; it is unchanged, the tables before it were committed"
                ),
            })?;
        if show {
            eprintln!("{}", line(&report, started.elapsed().as_secs_f64()));
        }
        reports.push(report);
    }
    Ok(reports)
}

fn line(r: &ExtractReport, seconds: f64) -> String {
    let version = match r.version {
        Some(v) => format!("version {v}"),
        None => "no new rows, unchanged".to_string(),
    };
    let watermark = match &r.watermark {
        Some(w) => format!(", {} up to {}", w.column, w.value),
        None => String::new(),
    };
    format!(
        "extracted {} ({}): {} rows in {:.1} s, {version}{watermark}",
        r.table,
        r.mode.as_str(),
        r.rows,
        seconds
    )
}
