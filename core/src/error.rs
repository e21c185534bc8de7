//! The core's errors. Each variant carries what a user needs to act on it: the table, file,
//! column, line or byte range concerned.

use std::ops::Range;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not found: {location}")]
    NotFound { location: String },

    #[error("already exists: {location}")]
    AlreadyExists { location: String },

    /// A read, write or listing that failed (for reads, with the byte range).
    #[error("{location}{}: {message}", fmt_range(.range))]
    Io {
        location: String,
        range: Option<Range<u64>>,
        message: String,
    },

    #[error("pipeline spec: {0}")]
    Spec(String),

    /// A location Medallion cannot use: a scheme it does not speak, a bucket that is not there.
    #[error("{location}: {message}")]
    Location { location: String, message: String },

    #[error("table `{table}`: {message}")]
    Table { table: String, message: String },

    #[error("{location}: {message}")]
    Format { location: String, message: String },

    #[error(
        "table `{table}`: expectation `{expectation}` failed on {violations} row(s) \
         (on_violation = \"fail\"); first failing row: {sample}"
    )]
    ExpectationFailed {
        table: String,
        expectation: String,
        violations: u64,
        sample: String,
    },

    #[error(
        "commit conflict on {table}: version {version} was written by another writer \
         while this run was in progress; re-run to build on the new version"
    )]
    CommitConflict { table: String, version: u64 },

    #[error(
        "table `{table}`: the outcome of committing version {version} is not certain: {message}. \
         Its data files were kept, since the log may reference them; the next run reads the log \
         and carries on from whatever version is there"
    )]
    CommitUncertain {
        table: String,
        version: u64,
        message: String,
    },

    /// A run that committed some tables before one failed: which did, which did not.
    #[error("{source}\n{}", fmt_partial(.committed, .not_committed))]
    PartialCommit {
        /// `(table, version)` pairs that are committed.
        committed: Vec<(String, u64)>,
        /// Tables whose new version was not committed (or is uncertain, see `source`).
        not_committed: Vec<String>,
        source: Box<Error>,
    },

    #[error("Delta table {location}: {message}")]
    Delta { location: String, message: String },

    #[error("{context}: {source}")]
    DataFusion {
        context: String,
        #[source]
        source: datafusion::error::DataFusionError,
    },

    #[error("{context}: {source}")]
    Arrow {
        context: String,
        #[source]
        source: datafusion::arrow::error::ArrowError,
    },

    #[error("{context}: {source}")]
    Parquet {
        context: String,
        #[source]
        source: datafusion::parquet::errors::ParquetError,
    },
}

fn fmt_partial(committed: &[(String, u64)], not_committed: &[String]) -> String {
    let done: Vec<String> = committed
        .iter()
        .map(|(t, v)| format!("{t} at version {v}"))
        .collect();
    format!(
        "committed before the failure: {}; not committed: {}. The next run rebuilds what is stale.",
        if done.is_empty() {
            "none".to_string()
        } else {
            done.join(", ")
        },
        if not_committed.is_empty() {
            "none".to_string()
        } else {
            not_committed.join(", ")
        }
    )
}

impl Error {
    /// Whether a failed run changed no table (nothing committed, nothing uncertain).
    pub fn changed_nothing(&self) -> bool {
        match self {
            Error::PartialCommit {
                committed, source, ..
            } => committed.is_empty() && source.changed_nothing(),
            Error::CommitUncertain { .. } => false,
            _ => true,
        }
    }
}

fn fmt_range(range: &Option<Range<u64>>) -> String {
    match range {
        Some(r) => format!(" bytes {}-{}", r.start, r.end.saturating_sub(1)),
        None => String::new(),
    }
}

/// Adds context (what was being done, to which table or file) to library errors.
pub(crate) trait Context<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for Result<T, datafusion::error::DataFusionError> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::datafusion(context(), source))
    }
}

impl Error {
    /// A DataFusion error in `context`; one over the memory limit says so in words.
    pub fn datafusion(mut context: String, source: datafusion::error::DataFusionError) -> Error {
        if matches!(
            source.find_root(),
            datafusion::error::DataFusionError::ResourcesExhausted(_)
        ) {
            context.push_str(
                " (over the engine's memory limit, in a part of the query that could not spill to disk; give it a larger limit)",
            );
        }
        Error::DataFusion { context, source }
    }
}

impl<T> Context<T> for Result<T, datafusion::arrow::error::ArrowError> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Arrow {
            context: context(),
            source,
        })
    }
}

impl<T> Context<T> for Result<T, datafusion::parquet::errors::ParquetError> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Parquet {
            context: context(),
            source,
        })
    }
}
