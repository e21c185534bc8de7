//! The S3 REST protocol as data, with no I/O: where `s3://bucket/key` lives at an endpoint
//! (path-style or virtual-hosted), the ListObjectsV2 request and its XML answer, and the
//! `<Error>` document S3 sends with a failed request. [`crate::s3_storage`] does the requests.
//!
//! Pure Rust on every target, so that its tests run natively (`cargo test -p medallion-wasm`).

use std::fmt;

use quick_xml::events::Event;
use quick_xml::Reader;

/// Where a bucket's objects are reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Endpoint {
    /// `scheme://host[:port]` of an S3-compatible store; `None` is AWS S3 in `region`.
    pub endpoint: Option<String>,
    pub region: String,
    /// `endpoint/bucket/key` rather than `bucket.endpoint/key`. Defaults to path-style for a
    /// custom endpoint (MinIO, moto, Ceph) and virtual-hosted for AWS.
    pub path_style: bool,
}

impl S3Endpoint {
    pub fn new(endpoint: Option<String>, region: String, path_style: Option<bool>) -> Self {
        let endpoint = endpoint.map(|e| e.trim_end_matches('/').to_string());
        let path_style = path_style.unwrap_or(endpoint.is_some());
        Self {
            endpoint,
            region,
            path_style,
        }
    }

    /// The URL of an object (or, with an empty key, of its bucket with a trailing `/`).
    pub fn url(&self, bucket: &str, key: &str) -> String {
        let key = encode(key, false);
        // A dotted bucket name does not fit AWS's wildcard TLS certificate as a host name.
        let path_style = self.path_style || (self.endpoint.is_none() && bucket.contains('.'));
        match (&self.endpoint, path_style) {
            (Some(e), true) => format!("{e}/{bucket}/{key}"),
            (Some(e), false) => match e.split_once("://") {
                Some((scheme, host)) => format!("{scheme}://{bucket}.{host}/{key}"),
                None => format!("https://{bucket}.{e}/{key}"),
            },
            (None, true) => format!("https://s3.{}.amazonaws.com/{bucket}/{key}", self.region),
            (None, false) => format!("https://{bucket}.s3.{}.amazonaws.com/{key}", self.region),
        }
    }

    /// One ListObjectsV2 request: every key starting with `prefix`, from `token` on.
    pub fn list_url(&self, bucket: &str, prefix: &str, token: Option<&str>) -> String {
        let mut url = format!(
            "{}?list-type=2&prefix={}",
            self.url(bucket, ""),
            encode(prefix, true)
        );
        if let Some(token) = token {
            url.push_str("&continuation-token=");
            url.push_str(&encode(token, true));
        }
        url
    }

    /// What error messages call this store.
    pub fn describe(&self) -> String {
        match &self.endpoint {
            Some(e) => e.clone(),
            None => format!("AWS S3 ({})", self.region),
        }
    }
}

/// `s3://bucket/key` → (bucket, key); `None` without a bucket.
pub fn split(location: &str) -> Option<(&str, &str)> {
    let rest = location.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then_some((bucket, key.trim_start_matches('/')))
}

/// Percent-encodes all but RFC 3986's unreserved characters (and `/` in a path), as SigV4
/// expects: a key is sent exactly as the object is named, `%` and `+` included.
fn encode(s: &str, slash_too: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (b == b'/' && !slash_too)
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified_ms: Option<i64>,
}

/// One page of a ListObjectsV2 answer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub objects: Vec<Listed>,
    /// Where the next page starts, if the listing is truncated.
    pub next: Option<String>,
}

/// An XML document S3 sent that this module could not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError(pub String);

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Walks a document, calling `on_close(path, text)` as each element closes, `path` being the
/// names of the open elements (`["ListBucketResult", "Contents", "Key"]`) and `text` its
/// text since its last child element. Entities and CDATA are resolved.
fn walk(xml: &str, mut on_close: impl FnMut(&[String], &str)) -> Result<(), XmlError> {
    let mut reader = Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    let bad = |e: &dyn fmt::Display, at: u64| XmlError(format!("malformed XML at byte {at}: {e}"));
    loop {
        let at = reader.buffer_position();
        let event = reader.read_event().map_err(|e| bad(&e, at))?;
        match event {
            Event::Start(e) => {
                text.clear();
                path.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
            }
            Event::Text(t) => text.push_str(&t.xml_content().map_err(|e| bad(&e, at))?),
            Event::CData(t) => text.push_str(&t.decode().map_err(|e| bad(&e, at))?),
            Event::GeneralRef(r) => {
                if let Some(c) = r.resolve_char_ref().map_err(|e| bad(&e, at))? {
                    text.push(c);
                } else {
                    let name = r.decode().map_err(|e| bad(&e, at))?;
                    let resolved = quick_xml::escape::resolve_predefined_entity(&name)
                        .ok_or_else(|| XmlError(format!("unknown entity &{name}; at byte {at}")))?;
                    text.push_str(resolved);
                }
            }
            Event::End(_) => {
                on_close(&path, &text);
                text.clear();
                path.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !path.is_empty() {
        return Err(XmlError(format!(
            "the document ends inside <{}>",
            path.join("><")
        )));
    }
    Ok(())
}

/// Reads one page of a ListObjectsV2 answer.
pub fn parse_list(xml: &str) -> Result<ListPage, XmlError> {
    let mut page = ListPage::default();
    let mut truncated = false;
    let mut token = None;
    let mut current: Option<Listed> = None;
    let mut bad_size = None;
    let mut root = None;
    walk(xml, |path, text| {
        let names: Vec<&str> = path.iter().map(String::as_str).collect();
        match names.as_slice() {
            [root_name] => root = Some(root_name.to_string()),
            [_, "Contents"] => page.objects.extend(current.take()),
            [_, "IsTruncated"] => truncated = text.trim() == "true",
            [_, "NextContinuationToken"] => token = Some(text.to_string()),
            [_, "Contents", field] => {
                let object = current.get_or_insert_with(|| Listed {
                    key: String::new(),
                    size: 0,
                    etag: None,
                    last_modified_ms: None,
                });
                match *field {
                    "Key" => object.key = text.to_string(),
                    "Size" => match text.trim().parse() {
                        Ok(n) => object.size = n,
                        Err(_) => bad_size = Some(text.to_string()),
                    },
                    "ETag" => object.etag = Some(text.to_string()),
                    "LastModified" => {
                        object.last_modified_ms = chrono::DateTime::parse_from_rfc3339(text.trim())
                            .ok()
                            .map(|t| t.timestamp_millis())
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    })?;
    if root.as_deref() != Some("ListBucketResult") {
        return Err(XmlError(format!(
            "expected a <ListBucketResult> document, got <{}>",
            root.unwrap_or_default()
        )));
    }
    if let Some(size) = bad_size {
        return Err(XmlError(format!(
            "an object's <Size> is `{size}`, not a number"
        )));
    }
    if let Some(object) = page.objects.iter().find(|o| o.key.is_empty()) {
        return Err(XmlError(format!(
            "a listed object has no <Key> ({object:?})"
        )));
    }
    if truncated {
        match token {
            Some(t) if !t.is_empty() => page.next = Some(t),
            _ => {
                return Err(XmlError(
                    "the listing is truncated but gives no <NextContinuationToken>".into(),
                ))
            }
        }
    }
    Ok(page)
}

/// `(Code, Message)` of an S3 `<Error>` document; `None` if the body is not one.
pub fn parse_error(xml: &str) -> Option<(String, String)> {
    let mut code = None;
    let mut message = String::new();
    walk(xml, |path, text| match path {
        [root, field] if root == "Error" && field == "Code" => code = Some(text.to_string()),
        [root, field] if root == "Error" && field == "Message" => message = text.to_string(),
        _ => {}
    })
    .ok()?;
    code.map(|c| (c, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_become_urls_path_style_for_custom_endpoints() {
        let moto = S3Endpoint::new(
            Some("http://127.0.0.1:9000/".into()),
            "us-east-1".into(),
            None,
        );
        assert_eq!(
            moto.url("shop", "lake/gold/t/_delta_log/00000000000000000000.json"),
            "http://127.0.0.1:9000/shop/lake/gold/t/_delta_log/00000000000000000000.json"
        );
        // Keys are sent as named: a decoded partition folder keeps its `%`, spaces and `+`.
        assert_eq!(
            moto.url("shop", "t/k=a%2Fb c+d/f.parquet"),
            "http://127.0.0.1:9000/shop/t/k%3Da%252Fb%20c%2Bd/f.parquet"
        );
        let r2 = S3Endpoint::new(
            Some("https://acc.r2.example".into()),
            "auto".into(),
            Some(false),
        );
        assert_eq!(r2.url("shop", "a/b"), "https://shop.acc.r2.example/a/b");
        let aws = S3Endpoint::new(None, "eu-west-1".into(), None);
        assert_eq!(
            aws.url("shop", "a"),
            "https://shop.s3.eu-west-1.amazonaws.com/a"
        );
        assert_eq!(
            aws.url("my.shop", "a"),
            "https://s3.eu-west-1.amazonaws.com/my.shop/a"
        );
        assert_eq!(
            aws.list_url("shop", "lake/gold/", Some("a/b+c=")),
            "https://shop.s3.eu-west-1.amazonaws.com/?list-type=2&prefix=lake%2Fgold%2F&continuation-token=a%2Fb%2Bc%3D"
        );
    }

    #[test]
    fn split_takes_bucket_and_key() {
        assert_eq!(split("s3://shop/lake/x"), Some(("shop", "lake/x")));
        assert_eq!(split("s3://shop"), Some(("shop", "")));
        assert_eq!(split("s3:///x"), None);
        assert_eq!(split("http://h/x"), None);
    }

    const PAGE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>shop</Name><Prefix>lake/</Prefix><KeyCount>2</KeyCount><MaxKeys>1000</MaxKeys>
  <IsTruncated>true</IsTruncated>
  <Contents>
    <Key>lake/a &amp; b/&#x41;.json</Key>
    <LastModified>2026-11-30T15:00:01.500Z</LastModified>
    <ETag>&quot;9b2cf535f27731c974343645a3985328&quot;</ETag>
    <Size>1024</Size><StorageClass>STANDARD</StorageClass>
    <Owner><ID>x</ID><DisplayName>y</DisplayName></Owner>
  </Contents>
  <Contents><Key><![CDATA[lake/<odd>.parquet]]></Key><Size>0</Size></Contents>
  <NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>
</ListBucketResult>"#;

    #[test]
    fn a_listing_page_gives_keys_sizes_tags_times_and_the_next_token() {
        let page = parse_list(PAGE).unwrap();
        assert_eq!(
            page.objects,
            vec![
                Listed {
                    key: "lake/a & b/A.json".into(),
                    size: 1024,
                    etag: Some("\"9b2cf535f27731c974343645a3985328\"".into()),
                    last_modified_ms: Some(1_796_050_801_500),
                },
                Listed {
                    key: "lake/<odd>.parquet".into(),
                    size: 0,
                    etag: None,
                    last_modified_ms: None,
                },
            ]
        );
        assert_eq!(
            page.next.as_deref(),
            Some("1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=")
        );
        let last = PAGE.replace("<IsTruncated>true", "<IsTruncated>false");
        assert_eq!(parse_list(&last).unwrap().next, None);
        let empty = r#"<ListBucketResult><IsTruncated>false</IsTruncated><KeyCount>0</KeyCount></ListBucketResult>"#;
        assert_eq!(parse_list(empty).unwrap(), ListPage::default());
    }

    #[test]
    fn broken_listings_are_errors_not_short_listings() {
        let no_token = PAGE
            .replace("<NextContinuationToken>", "<Other>")
            .replace("</NextContinuationToken>", "</Other>");
        assert!(parse_list(&no_token)
            .unwrap_err()
            .0
            .contains("NextContinuationToken"));
        let cut = &PAGE[..PAGE.len() / 2];
        assert!(parse_list(cut).is_err());
        let bad_size = PAGE.replace("<Size>1024", "<Size>big");
        assert!(parse_list(&bad_size).unwrap_err().0.contains("big"));
        let error = "<Error><Code>AccessDenied</Code><Message>no</Message></Error>";
        assert!(parse_list(error).unwrap_err().0.contains("<Error>"));
        assert!(parse_list("<a>&bogus;</a>").is_err());
    }

    #[test]
    fn error_documents_give_code_and_message() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message><BucketName>nope</BucketName></Error>"#;
        assert_eq!(
            parse_error(body),
            Some((
                "NoSuchBucket".into(),
                "The specified bucket does not exist".into()
            ))
        );
        assert_eq!(parse_error("<html>502 Bad Gateway</html>"), None);
        assert_eq!(parse_error(""), None);
        assert_eq!(parse_error("not xml <"), None);
    }
}
