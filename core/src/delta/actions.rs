//! Delta log actions as they appear, one JSON object per line, in a commit file (and one row
//! each in a checkpoint), and the encoding of `add.path`, which the protocol defines as a URI.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Protocol {
    pub min_reader_version: i32,
    pub min_writer_version: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reader_features: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer_features: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Format {
    pub provider: String,
    #[serde(default)]
    pub options: HashMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub format: Format,
    pub schema_string: String,
    #[serde(default)]
    pub partition_columns: Vec<String>,
    #[serde(default)]
    pub configuration: HashMap<String, Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_time: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Add {
    pub path: String,
    #[serde(default)]
    pub partition_values: HashMap<String, Option<String>>,
    pub size: i64,
    pub modification_time: i64,
    pub data_change: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<HashMap<String, Option<String>>>,
    /// Only read, to refuse tables that need deletion vectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_vector: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Remove {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<i64>,
    pub data_change: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended_file_metadata: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_values: Option<HashMap<String, Option<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
}

/// A `txn` (SetTransaction) action: the last `version` an application (`app_id`) committed to
/// the table. Written in the same commit as the data, so an application that records its
/// progress here (a stream's batch id, a CDC source's LSN) commits data and progress atomically.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Txn {
    pub app_id: String,
    pub version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<i64>,
}

/// One line of a commit file. Unknown action kinds (cdc, domainMetadata…) are ignored by
/// readers that do not need them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Action {
    #[serde(rename = "commitInfo")]
    CommitInfo(serde_json::Value),
    #[serde(rename = "protocol")]
    Protocol(Protocol),
    #[serde(rename = "metaData")]
    Metadata(Metadata),
    #[serde(rename = "add")]
    Add(Add),
    #[serde(rename = "remove")]
    Remove(Remove),
    #[serde(rename = "txn")]
    Txn(Txn),
}

impl Action {
    /// Parses one commit line; `Ok(None)` for action kinds Medallion does not use.
    pub fn parse_line(line: &str) -> Result<Option<Action>, serde_json::Error> {
        let value: serde_json::Value = serde_json::from_str(line)?;
        let known = value.as_object().is_some_and(|o| {
            o.keys().any(|k| {
                matches!(
                    k.as_str(),
                    "commitInfo" | "protocol" | "metaData" | "add" | "remove" | "txn"
                )
            })
        });
        if !known {
            return Ok(None);
        }
        serde_json::from_value(value).map(Some)
    }
}

/// Characters kept as they are in an encoded `add.path`: what RFC 3986 allows in a path
/// segment, plus `/` between segments. Everything else (space, `%`, `=`, non-ASCII…) is
/// percent-encoded, as Spark and delta-rs write it.
const PATH_KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b':')
    .remove(b'@');

/// `add.path` as written in the log, from a path relative to the table.
pub fn encode_path(relative: &str) -> String {
    percent_encoding::utf8_percent_encode(relative, PATH_KEEP).to_string()
}

/// A path relative to the table (or an absolute location) from an `add`/`remove` path as it
/// appears in the log; `None` if its escapes are not UTF-8.
pub fn decode_path(uri: &str) -> Option<String> {
    percent_encoding::percent_decode_str(uri)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip_through_uri_encoding() {
        for p in [
            "part-0.parquet",
            "region=North East/part-0.parquet",
            "k=a%2Fb=c/x.parquet",
            "name=café 日本/p.parquet",
            "n=__HIVE_DEFAULT_PARTITION__/p.parquet",
        ] {
            let e = encode_path(p);
            assert!(!e.contains(' ') && e.is_ascii(), "{e}");
            assert_eq!(decode_path(&e).as_deref(), Some(p));
        }
        assert_eq!(encode_path("a b/c%d"), "a%20b/c%25d");
    }

    #[test]
    fn txn_lines_parse() {
        let a = Action::parse_line(r#"{"txn":{"appId":"s","version":7,"lastUpdated":1}}"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            a,
            Action::Txn(Txn {
                app_id: "s".into(),
                version: 7,
                last_updated: Some(1)
            })
        );
    }
}
