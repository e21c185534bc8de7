//! Progress on stderr while a pipeline runs: one bar over the tables, the current table and
//! file in its message. Hidden when stderr is not a terminal.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use medallion_core::pipeline::Progress;

pub struct RunProgress {
    bar: ProgressBar,
}

impl RunProgress {
    pub fn new(visible: bool) -> Self {
        let bar = ProgressBar::with_draw_target(
            Some(0),
            if visible {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} tables  {wide_msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        Self { bar }
    }

    pub fn on(&self, event: Progress) {
        match event {
            Progress::Planned { tables } => self.bar.set_length(tables.len() as u64),
            Progress::TableStarted { table, layer } => {
                self.bar.set_message(format!("{layer} {table}"))
            }
            Progress::FileIngested { table, file, bytes } => {
                let name = file.rsplit('/').next().unwrap_or(file);
                self.bar.set_message(format!(
                    "bronze {table} ← {name} ({})",
                    medallion_core::report::human_bytes(bytes)
                ));
            }
            Progress::TableFinished { .. } => self.bar.inc(1),
            Progress::Committing { tables } => self
                .bar
                .set_message(format!("committing {tables} table version(s)")),
        }
    }

    /// An event a guest instance reported (JSON, see `host/guest/src/request.rs`).
    pub fn on_guest(&self, event: &serde_json::Value) {
        let text = |key: &str| event[key].as_str().unwrap_or_default().to_string();
        match event["event"].as_str() {
            Some("planned") => {
                let tables: Vec<String> =
                    serde_json::from_value(event["tables"].clone()).unwrap_or_default();
                self.on(Progress::Planned { tables: &tables });
            }
            Some("table_started") => {
                if let Ok(layer) = serde_json::from_value(event["layer"].clone()) {
                    self.on(Progress::TableStarted {
                        table: &text("table"),
                        layer,
                    });
                }
            }
            Some("file_ingested") => self.on(Progress::FileIngested {
                table: &text("table"),
                file: &text("file"),
                bytes: event["bytes"].as_u64().unwrap_or(0),
            }),
            Some("table_finished") => self.on(Progress::TableFinished {
                table: &text("table"),
                rows: event["rows"].as_u64().unwrap_or(0),
                skipped: event["skipped"].as_bool().unwrap_or(false),
            }),
            Some("committing") => self.on(Progress::Committing {
                tables: event["tables"].as_u64().unwrap_or(0) as usize,
            }),
            _ => {}
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
