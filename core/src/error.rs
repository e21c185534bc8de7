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

    #[error("reading {location}{}: {message}", fmt_range(.range))]
    Io {
        location: String,
        range: Option<Range<u64>>,
        message: String,
    },

    #[error("pipeline spec: {0}")]
    Spec(String),

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
        self.map_err(|source| Error::DataFusion {
            context: context(),
            source,
        })
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
