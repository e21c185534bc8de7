//! `medallion extract`: pulls the spec's database-backed bronze tables (PostgreSQL), each in
//! one commit. `medallion run` calls it first when the spec has such tables.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use medallion_core::extract::ExtractReport;
use medallion_core::pipeline::RunOptions;
use medallion_core::spec::ExtractMode;
use medallion_core::spec::PipelineSpec;
use medallion_core::storage::Storage;
use medallion_host::postgres::cdc::{extract_cdc, CdcCommit, CdcOptions};
use medallion_host::postgres::{extract_table, extracted_tables};
use medallion_host::SystemClock;

/// How `medallion extract` runs cdc tables.
#[derive(Debug, Clone)]
pub struct CdcArgs {
    pub follow: bool,
    pub batch_interval: std::time::Duration,
    pub max_batch_rows: u64,
}

/// Extracts `only` (or every database-backed bronze table of the spec) and prints a line per
/// table (or the reports as JSON).
pub async fn extract(
    spec_path: &Path,
    lake: &str,
    only: &[String],
    json: bool,
    cdc: &CdcArgs,
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
    if cdc.follow {
        return follow(&spec, &chosen, storage, &opts, json, cdc).await;
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

/// `--follow`: streams every chosen cdc table at once until a signal stops them.
async fn follow(
    spec: &PipelineSpec,
    tables: &[String],
    storage: Arc<dyn Storage>,
    opts: &RunOptions,
    json: bool,
    args: &CdcArgs,
) -> anyhow::Result<()> {
    let not_cdc: Vec<&String> = tables
        .iter()
        .filter(|t| spec.bronze.get(*t).and_then(|s| s.mode) != Some(ExtractMode::Cdc))
        .collect();
    if !not_cdc.is_empty() {
        anyhow::bail!(
            "--follow streams mode = \"cdc\" tables; {} {} not (choose the cdc tables with --table)",
            not_cdc.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", "),
            if not_cdc.len() == 1 { "is" } else { "are" }
        );
    }
    let stop = super::watch::Stop::install()?;
    let options = CdcOptions {
        follow: true,
        max_batch_rows: args.max_batch_rows.max(1),
        batch_interval: args.batch_interval,
        stop: stop.flag(),
    };
    let clock = SystemClock::new();
    let runs = tables.iter().map(|name| {
        let (storage, options, clock) = (storage.clone(), options.clone(), &clock);
        async move {
            let started = std::time::Instant::now();
            let mut on_commit = |c: &CdcCommit| {
                let r = &c.report;
                let shown: anyhow::Result<()> = match json {
                    true => serde_json::to_string(c)
                        .map_err(anyhow::Error::from)
                        .and_then(|j| outln!("{j}").map_err(anyhow::Error::from)),
                    false => {
                        eprintln!("{}", line(r, started.elapsed().as_secs_f64()));
                        Ok(())
                    }
                };
                if let Err(e) = shown {
                    eprintln!("{name}: cannot print the report: {e}");
                }
            };
            extract_cdc(spec, name, storage, clock, opts, &options, &mut on_commit)
                .await
                .with_context(|| format!("streaming `{name}` stopped; what it committed stays"))
        }
    });
    futures::future::try_join_all(runs).await?;
    Ok(())
}

fn line(r: &ExtractReport, seconds: f64) -> String {
    let version = match r.version {
        Some(v) => format!("version {v}"),
        None => "no new rows, unchanged".to_string(),
    };
    let watermark = match (&r.watermark, &r.lsn) {
        (Some(w), _) => format!(", {} up to {}", w.column, w.value),
        (None, Some(lsn)) => format!(", changes up to {lsn}"),
        (None, None) => String::new(),
    };
    format!(
        "extracted {} ({}): {} rows in {:.1} s, {version}{watermark}",
        r.table,
        r.mode.as_str(),
        r.rows,
        seconds
    )
}
