//! What a run did, per table: a struct for programs, JSON for machines, a summary for people.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::spec::{Layer, OnViolation};
use crate::storage::IoCounts;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunReport {
    pub pipeline: String,
    pub lake: String,
    pub run_id: String,
    /// False when the run failed; then no table was changed.
    pub ok: bool,
    pub tables: Vec<TableReport>,
    /// Time per stage: plan, bronze, silver, gold, commit.
    pub stages: Vec<StageTime>,
    pub io: IoCounts,
    pub elapsed_ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageTime {
    pub stage: String,
    pub ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableReport {
    pub table: String,
    pub layer: Layer,
    /// Rows read: from new source files (bronze) or from the SQL's result (silver, gold).
    pub rows_in: u64,
    /// Rows written to the table in this run.
    pub rows_out: u64,
    /// Rows removed by `drop` expectations or failed casts.
    pub dropped: u64,
    /// Rows written to the table's quarantine (unparseable source lines, dropped rows).
    pub quarantined: u64,
    /// Rows removed as older duplicates of a key.
    pub deduplicated: u64,
    pub expectations: Vec<ExpectationReport>,
    /// New source files ingested (bronze) and files already seen, skipped.
    pub files_ingested: u64,
    pub files_skipped: u64,
    /// New source files left for a later run (`max_files_per_table`).
    #[serde(default)]
    pub files_pending: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// The Delta version this run committed, `None` if the table did not change.
    pub version: Option<u64>,
    pub quarantine_version: Option<u64>,
    pub ms: f64,
    /// Silver and gold: how the table took in its inputs' changes, and why (`append: …`,
    /// `merge: …`, `full: …`); absent when it was up to date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<String>,
}

impl TableReport {
    pub fn new(table: &str, layer: Layer) -> Self {
        TableReport {
            table: table.to_string(),
            layer,
            rows_in: 0,
            rows_out: 0,
            dropped: 0,
            quarantined: 0,
            deduplicated: 0,
            expectations: vec![],
            files_ingested: 0,
            files_skipped: 0,
            files_pending: 0,
            bytes_read: 0,
            bytes_written: 0,
            version: None,
            quarantine_version: None,
            refresh: None,
            ms: 0.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExpectationReport {
    pub name: String,
    pub condition: String,
    pub on_violation: OnViolation,
    pub violations: u64,
}

impl RunReport {
    /// A table of counts a person can read in a terminal.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<8} {:<24} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "layer",
            "table",
            "rows in",
            "rows out",
            "dropped",
            "quarant.",
            "dedup'd",
            "version",
            "ms"
        );
        for t in &self.tables {
            let version = match t.version {
                Some(v) => v.to_string(),
                None => "-".to_string(),
            };
            let _ = writeln!(
                out,
                "{:<8} {:<24} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8.0}",
                t.layer.as_str(),
                t.table,
                t.rows_in,
                t.rows_out,
                t.dropped,
                t.quarantined,
                t.deduplicated,
                version,
                t.ms
            );
        }
        let checks: Vec<String> = self
            .tables
            .iter()
            .flat_map(|t| {
                t.expectations
                    .iter()
                    .filter(|e| e.violations > 0)
                    .map(move |e| {
                        format!(
                            "  {}.{}: {} violation(s) of `{}` ({:?})",
                            t.table, e.name, e.violations, e.condition, e.on_violation
                        )
                    })
            })
            .collect();
        if !checks.is_empty() {
            let _ = writeln!(out, "\nexpectations:");
            for c in checks {
                let _ = writeln!(out, "{c}");
            }
        }
        let stages: Vec<String> = self
            .stages
            .iter()
            .map(|s| format!("{} {:.0} ms", s.stage, s.ms))
            .collect();
        let _ = writeln!(
            out,
            "\n{} in {:.1} s ({}); read {} in {} requests, wrote {}",
            if self.ok { "done" } else { "FAILED" },
            self.elapsed_ms / 1000.0,
            stages.join(", "),
            human_bytes(self.io.bytes_read),
            self.io.read_requests,
            human_bytes(self.io.bytes_written),
        );
        out
    }
}

/// `1.5 MB`-style sizes (powers of 1000, as disks and networks count).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
