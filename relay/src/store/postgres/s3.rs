//! A small S3 client for message bodies over the inline limit (issue 27): PUT, GET and DELETE
//! of one object by path-style URL, and a ListObjectsV2 page for the orphan sweep, signed with AWS Signature Version 4, on the hyper +
//! hyper-rustls (ring) stack the relay already has. `object_store` would bring reqwest and its
//! own TLS stack; three verbs do not need it (docs/decisions.md).
//!
//! Credentials come from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`), never
//! from the config file. Object keys are the blob ids: random, they say nothing about a message.

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use hmac::{KeyInit, Mac};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use sha2::{Digest, Sha256};

use super::super::{Result, StoreError};

/// One request may take this long (a 30 MB body on a slow link included).
const TIMEOUT: Duration = Duration::from_secs(120);
/// Largest object read back (above `max_message_size` for any sane config).
const MAX_OBJECT: usize = 256 * 1024 * 1024;

pub(crate) struct S3 {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>,
    endpoint: String,
    host: String,
    bucket: String,
    region: String,
    access_key: String,
    secret_key: String,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// (YYYYMMDD, YYYYMMDDTHHMMSSZ) for `secs` since the epoch, UTC.
pub(crate) fn amz_dates(secs: i64) -> (String, String) {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = crate::civil::from_days(days);
    let date = format!("{y:04}{m:02}{d:02}");
    let time = format!("{date}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60);
    (date, time)
}

impl S3 {
    pub(crate) fn new(cfg: &crate::config::Blobs) -> Result<Self> {
        let key = |name: &str| {
            std::env::var(name).map_err(|_| StoreError::Busy(format!("blobs.backend = \"s3\" needs {name} set")))
        };
        let endpoint = cfg.endpoint.trim_end_matches('/').to_string();
        let host = endpoint
            .split_once("://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or(rest).to_string())
            .ok_or(StoreError::Invalid("blobs.endpoint must be http(s)://host[:port]"))?;
        let tls = crate::outbound::tls::ClientTls::new("").map_err(|e| StoreError::Busy(e.to_string()))?;
        let mut tls_cfg = (*tls.verified_https).clone();
        tls_cfg.alpn_protocols.clear();
        let https =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls_cfg).https_or_http().enable_http1().build();
        Ok(Self {
            client: Client::builder(hyper_util::rt::TokioExecutor::new()).build(https),
            endpoint,
            host,
            bucket: cfg.bucket.clone(),
            region: if cfg.region.is_empty() { "us-east-1".into() } else { cfg.region.clone() },
            access_key: key("AWS_ACCESS_KEY_ID")?,
            secret_key: key("AWS_SECRET_ACCESS_KEY")?,
        })
    }

    fn url_path(&self, key: &str) -> String {
        if key.is_empty() { format!("/{}", self.bucket) } else { format!("/{}/{key}", self.bucket) }
    }

    async fn request(&self, method: Method, key: &str, body: Bytes) -> Result<(StatusCode, Bytes)> {
        self.request_q(method, key, &[], body).await
    }

    /// `request` with a query string (`query` sorted by name, as SigV4's canonical form wants).
    async fn request_q(
        &self,
        method: Method,
        key: &str,
        query: &[(&str, &str)],
        body: Bytes,
    ) -> Result<(StatusCode, Bytes)> {
        let path = self.url_path(key);
        let payload_hash = hex(&Sha256::digest(&body));
        let (date, stamp) = amz_dates(super::super::now_secs());
        let mut q: Vec<String> = query.iter().map(|(k, v)| format!("{}={}", uri_encode(k), uri_encode(v))).collect();
        q.sort();
        let q = q.join("&");
        let canonical = format!(
            "{method}\n{path}\n{q}\nhost:{}\nx-amz-content-sha256:{payload_hash}\nx-amz-date:{stamp}\n\nhost;x-amz-content-sha256;x-amz-date\n{payload_hash}",
            self.host
        );
        let scope = format!("{date}/{}/s3/aws4_request", self.region);
        let to_sign = format!("AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}", hex(&Sha256::digest(canonical.as_bytes())));
        let k = hmac(format!("AWS4{}", self.secret_key).as_bytes(), date.as_bytes());
        let k = hmac(&k, self.region.as_bytes());
        let k = hmac(&k, b"s3");
        let k = hmac(&k, b"aws4_request");
        let signature = hex(&hmac(&k, to_sign.as_bytes()));
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={signature}",
            self.access_key
        );
        let req = Request::builder()
            .method(method)
            .uri(if q.is_empty() { format!("{}{path}", self.endpoint) } else { format!("{}{path}?{q}", self.endpoint) })
            .header("x-amz-content-sha256", payload_hash)
            .header("x-amz-date", stamp)
            .header("authorization", auth)
            .body(Body::from(body))
            .map_err(|e| StoreError::Busy(format!("object store request: {e}")))?;
        let io = |e: String| StoreError::Busy(format!("object store: {e}"));
        let resp = tokio::time::timeout(TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| io("timed out".into()))?
            .map_err(|e| io(e.to_string()))?;
        let status = resp.status();
        let bytes =
            axum::body::to_bytes(Body::new(resp.into_body()), MAX_OBJECT).await.map_err(|e| io(e.to_string()))?;
        Ok((status, bytes))
    }

    /// Create the bucket if it is missing (a bucket that exists, or no right to create one, is
    /// fine: the first PUT tells).
    pub(crate) async fn ensure_bucket(&self) {
        match self.request(Method::PUT, "", Bytes::new()).await {
            Ok((s, _)) if s.is_success() || s == StatusCode::CONFLICT => {}
            Ok((s, _)) => tracing::debug!(status = %s, "object store: bucket not created"),
            Err(e) => tracing::warn!(error = %e, "object store unreachable"),
        }
    }

    /// Store an object; `Ok` only once the store answered 200 (the body is durable there).
    /// A missing bucket (404) is created once and the PUT repeated.
    pub(crate) async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let (mut s, _) = self.request(Method::PUT, key, data.clone()).await?;
        if s == StatusCode::NOT_FOUND {
            self.ensure_bucket().await;
            s = self.request(Method::PUT, key, data).await?.0;
        }
        if s.is_success() { Ok(()) } else { Err(StoreError::Busy(format!("object store PUT: {s}"))) }
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Vec<u8>> {
        let (s, body) = self.request(Method::GET, key, Bytes::new()).await?;
        match s {
            s if s.is_success() => Ok(body.to_vec()),
            StatusCode::NOT_FOUND => Err(StoreError::NotFound),
            s => Err(StoreError::Busy(format!("object store GET: {s}"))),
        }
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<()> {
        let (s, _) = self.request(Method::DELETE, key, Bytes::new()).await?;
        if s.is_success() || s == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(StoreError::Busy(format!("object store DELETE: {s}")))
        }
    }

    /// One ListObjectsV2 page of keys after `start_after`, in key order: (key, LastModified as
    /// `YYYY-MM-DDTHH:MM:SS`) and whether more follow.
    pub(crate) async fn list(&self, start_after: &str, max: usize) -> Result<(Vec<(String, String)>, bool)> {
        let max = max.to_string();
        let mut query = vec![("list-type", "2"), ("max-keys", max.as_str())];
        if !start_after.is_empty() {
            query.push(("start-after", start_after));
        }
        let (s, body) = self.request_q(Method::GET, "", &query, Bytes::new()).await?;
        if !s.is_success() {
            return Err(StoreError::Busy(format!("object store LIST: {s}")));
        }
        Ok(parse_list(&String::from_utf8_lossy(&body)))
    }
}

/// RFC 3986 percent-encoding of everything but the unreserved characters (SigV4).
fn uri_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The text of the first `<tag>...</tag>` in `s`, entities decoded.
fn xml_field<'a>(s: &'a str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = s.find(&open)? + open.len();
    let end = start + s[start..].find(&format!("</{tag}>"))?;
    let raw: &'a str = &s[start..end];
    Some(
        raw.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// The keys and dates of a ListBucketResult, and `IsTruncated`. Only what the sweep needs; an
/// entry without a key or a date is skipped.
fn parse_list(xml: &str) -> (Vec<(String, String)>, bool) {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find("<Contents>") {
        let after = &rest[i + "<Contents>".len()..];
        let Some(j) = after.find("</Contents>") else { break };
        let entry = &after[..j];
        if let (Some(k), Some(d)) = (xml_field(entry, "Key"), xml_field(entry, "LastModified")) {
            out.push((k, d.chars().take(19).collect()));
        }
        rest = &after[j..];
    }
    let truncated = xml_field(xml, "IsTruncated").is_some_and(|t| t == "true");
    (out, truncated)
}

/// `secs` as `YYYY-MM-DDTHH:MM:SS` (UTC), comparable as a string with `list`'s dates.
pub(crate) fn iso_seconds(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = crate::civil::from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_pages_parse() {
        let xml = r#"<?xml version="1.0"?><ListBucketResult><IsTruncated>true</IsTruncated><Contents><Key>i0a</Key><LastModified>2026-12-07T22:41:24.000Z</LastModified></Contents><Contents><Key>a&amp;b</Key><LastModified>2026-12-07T22:41:25.000Z</LastModified></Contents><Contents><Key>nodate</Key></Contents></ListBucketResult>"#;
        let (keys, more) = parse_list(xml);
        assert!(more);
        assert_eq!(
            keys,
            vec![("i0a".to_string(), "2026-12-07T22:41:24".to_string()), ("a&b".into(), "2026-12-07T22:41:25".into())]
        );
        assert_eq!(
            parse_list("<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>"),
            (vec![], false)
        );
        assert_eq!(iso_seconds(1_709_164_800 + 3661), "2024-02-29T01:01:01");
        assert!(iso_seconds(0).as_str() < "2026-12-07T22:41:24");
        assert_eq!(uri_encode("a b/~"), "a%20b%2F~");
    }

    #[test]
    fn dates() {
        assert_eq!(amz_dates(0), ("19700101".into(), "19700101T000000Z".into()));
        assert_eq!(amz_dates(1_709_164_800 + 3661), ("20240229".into(), "20240229T010101Z".into()));
    }

    /// The signing key derivation of AWS's SigV4 documentation example.
    #[test]
    fn signing_key_matches_the_documented_example() {
        let k = hmac(b"AWS4wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", b"20120215");
        let k = hmac(&k, b"us-east-1");
        let k = hmac(&k, b"iam");
        let k = hmac(&k, b"aws4_request");
        assert_eq!(hex(&k), "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d");
    }
}
