//! An object-storage output, `s3://bucket/prefix`: files are finished in a local spool
//! directory ([`super::spool`]) and uploaded ([`super::uploader`]) under the prefix, with the
//! directory layout plus a `host=` level, so that many hosts can share one prefix.
//!
//! The endpoint and credentials come from the standard environment variables, read by the
//! `object_store` crate: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_REGION` / `AWS_DEFAULT_REGION` (default `us-east-1`), `AWS_ENDPOINT_URL` /
//! `AWS_ENDPOINT` (an S3-compatible server), `AWS_ALLOW_HTTP` (plain HTTP; implied by an
//! `http://` endpoint), and the other `AWS_*` keys `object_store` knows (web identity, container
//! credentials, instance metadata). They are read, never printed.
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, PutPayload, RetryConfig};

use super::OutputParseError;

/// `--out` text of this kind.
pub const SYNTAX: &str = "s3://BUCKET[/PREFIX]";

/// Files roll every 10 s by default: a row waits at most that long (plus the 1 s flush tick)
/// before its file is published into the spool, where it survives a crash.
pub const DEFAULT_ROLL_AGE: Duration = Duration::from_secs(10);

/// One HTTP request at most (a frozen server fails the attempt, which is retried later).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Connecting at most.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the probe object goes, under the prefix.
const PROBE_DIR: &str = "_l7tap_probe";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketOutput {
    pub scheme: String,
    pub bucket: String,
    /// Without leading or trailing `/`; may be empty.
    pub prefix: String,
}

/// `s3://bucket[/prefix]` (`s3a://` too); `None` for text of another kind.
pub fn parse(text: &Path) -> Option<Result<BucketOutput, OutputParseError>> {
    let text = text.to_str()?;
    let (scheme, rest) = text.split_once("://")?;
    if !matches!(scheme, "s3" | "s3a") {
        return None;
    }
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !valid_bucket {
        return Some(Err(OutputParseError(format!(
            "--out {text}: {bucket:?} is not a bucket name (3 to 63 of a-z, 0-9, '-', '.')"
        ))));
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|part| part == "." || part == "..")
        || prefix.contains("//")
        || prefix.chars().any(|c| c.is_control())
    {
        return Some(Err(OutputParseError(format!(
            "--out {text}: the prefix must not hold empty, '.' or '..' levels"
        ))));
    }
    Some(Ok(BucketOutput {
        scheme: scheme.to_string(),
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
    }))
}

impl fmt::Display for BucketOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

/// Why the probe write (or a listing) failed, in words a user acts on.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    #[error("{output}: cannot configure the S3 client: {message}")]
    Config { output: String, message: String },
    #[error("{output}: endpoint {endpoint} is unreachable: {message}")]
    Unreachable {
        output: String,
        endpoint: String,
        message: String,
    },
    #[error("{output}: bucket {bucket:?} does not exist at {endpoint}")]
    NoSuchBucket {
        output: String,
        bucket: String,
        endpoint: String,
    },
    #[error("{output}: the credentials were refused ({code}); check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")]
    BadCredentials { output: String, code: String },
    #[error("{output}: no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (the instance metadata service gave none)")]
    NoCredentials { output: String },
    #[error("{output}: these credentials may not write to the bucket ({code}): a read-only user?")]
    ReadOnly { output: String, code: String },
    #[error("{output}: {action} failed: {message}")]
    Other {
        output: String,
        action: &'static str,
        message: String,
    },
}

/// An object of the output, as a reader lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteObject {
    /// Key below the prefix, e.g. `requests/date=…/hour=…/host=…/NAME.parquet`.
    pub relative_key: String,
    pub size: u64,
}

impl BucketOutput {
    /// The spool directory of this output under the spool root: one per bucket and prefix, so
    /// files left for one destination never go to another.
    pub fn spool_dir(&self, spool: &Path) -> PathBuf {
        super::spool::destination_dir(
            spool,
            &format!("{}_{}_{}", self.scheme, self.bucket, self.prefix),
        )
    }

    /// The key of a file whose path below the spool directory is `relative`.
    pub fn key_of(&self, relative: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(relative)
        } else {
            ObjectPath::from(format!("{}/{relative}", self.prefix))
        }
    }

    /// The endpoint requests go to (for messages; holds no credentials).
    pub fn endpoint(&self) -> String {
        std::env::var("AWS_ENDPOINT_URL")
            .or_else(|_| std::env::var("AWS_ENDPOINT"))
            .unwrap_or_else(|_| "https://s3.amazonaws.com".to_string())
    }

    /// A client for the bucket, configured from the environment. Requests are not retried by
    /// the client: the uploader retries whole files with its own backoff.
    pub fn store(&self) -> Result<Arc<dyn ObjectStore>, BucketError> {
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&self.bucket);
        if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
            builder = builder.with_region("us-east-1");
        }
        let mut client = ClientOptions::new()
            .with_timeout(REQUEST_TIMEOUT)
            .with_connect_timeout(CONNECT_TIMEOUT);
        if self.endpoint().starts_with("http://") {
            client = client.with_allow_http(true);
        }
        let retry = RetryConfig {
            max_retries: 0,
            retry_timeout: REQUEST_TIMEOUT,
            ..RetryConfig::default()
        };
        builder
            .with_client_options(client)
            .with_retry(retry)
            .build()
            .map(|store| Arc::new(store) as Arc<dyn ObjectStore>)
            .map_err(|e| BucketError::Config {
                output: self.to_string(),
                message: one_line(&e),
            })
    }

    /// Writes a small object under the prefix, reads its size back and removes it: finds an
    /// unreachable endpoint, a missing bucket, refused credentials and a read-only user before
    /// anything else starts.
    pub fn probe(&self, host: &str) -> Result<(), BucketError> {
        let store = self.store()?;
        let runtime = runtime().map_err(|e| self.other("starting the S3 client", &e))?;
        let key = self.key_of(&format!(
            "{PROBE_DIR}/{}-{}",
            crate::sink::sanitize_host(host),
            std::process::id()
        ));
        runtime.block_on(async {
            store
                .put(&key, PutPayload::from_static(b"l7tap write probe\n"))
                .await
                .map_err(|e| self.classify(e, "writing a probe object"))?;
            let removed = store.delete(&key).await;
            removed.map_err(|e| self.classify(e, "removing the probe object"))
        })
    }

    /// Every object under `<prefix>/<table>/` (keys relative to the prefix).
    pub fn list_table(
        &self,
        store: &dyn ObjectStore,
        runtime: &tokio::runtime::Runtime,
        table: &str,
    ) -> Result<Vec<RemoteObject>, BucketError> {
        let root = self.key_of(table);
        let skip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        runtime.block_on(async {
            let objects: Vec<_> = store
                .list(Some(&root))
                .try_collect()
                .await
                .map_err(|e| self.classify(e, "listing the bucket"))?;
            Ok(objects
                .into_iter()
                .map(|meta| RemoteObject {
                    relative_key: meta.location.as_ref()[skip..].to_string(),
                    size: meta.size,
                })
                .collect())
        })
    }

    /// Downloads the object at `relative_key` into `to` (written under a temporary name, then
    /// renamed).
    pub fn download(
        &self,
        store: &dyn ObjectStore,
        runtime: &tokio::runtime::Runtime,
        relative_key: &str,
        to: &Path,
    ) -> Result<(), BucketError> {
        let key = self.key_of(relative_key);
        let bytes = runtime.block_on(async {
            let object = store.get(&key).await?;
            object.bytes().await
        });
        let bytes = bytes.map_err(|e| self.classify(e, "reading an object"))?;
        let temp = to.with_extension("download");
        std::fs::write(&temp, &bytes)
            .and_then(|()| std::fs::rename(&temp, to))
            .map_err(|e| self.other("saving a downloaded object", &e))
    }

    fn other(&self, action: &'static str, error: &dyn std::error::Error) -> BucketError {
        BucketError::Other {
            output: self.to_string(),
            action,
            message: one_line(error),
        }
    }

    /// Names what `error` means for this output.
    pub fn classify(&self, error: object_store::Error, action: &'static str) -> BucketError {
        let output = self.to_string();
        let text = one_line(&error);
        let code = s3_error_code(&text);
        // Without keys in the environment the client asks the instance metadata service.
        if text.contains("169.254.169.254") {
            return BucketError::NoCredentials { output };
        }
        match (&error, code.as_deref()) {
            (_, Some("NoSuchBucket")) => BucketError::NoSuchBucket {
                output,
                bucket: self.bucket.clone(),
                endpoint: self.endpoint(),
            },
            (
                _,
                Some(
                    code @ ("InvalidAccessKeyId"
                    | "SignatureDoesNotMatch"
                    | "InvalidClientTokenId"
                    | "ExpiredToken"
                    | "InvalidToken"),
                ),
            ) => BucketError::BadCredentials {
                output,
                code: code.to_string(),
            },
            (_, Some(code @ ("AccessDenied" | "AllAccessDisabled"))) => BucketError::ReadOnly {
                output,
                code: code.to_string(),
            },
            (object_store::Error::Unauthenticated { .. }, _) => BucketError::BadCredentials {
                output,
                code: "401".to_string(),
            },
            (object_store::Error::PermissionDenied { .. }, _) => BucketError::ReadOnly {
                output,
                code: "403".to_string(),
            },
            _ if is_connection_error(&error) => BucketError::Unreachable {
                output,
                endpoint: self.endpoint(),
                message: root_cause(&error),
            },
            _ => BucketError::Other {
                output,
                action,
                message: text,
            },
        }
    }
}

/// A runtime for the blocking calls above (one thread: uploads go one at a time).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// `<Code>X</Code>` of an S3 error body quoted in an error's text.
fn s3_error_code(text: &str) -> Option<String> {
    let start = text.find("<Code>")? + "<Code>".len();
    let end = text[start..].find("</Code>")? + start;
    Some(text[start..end].to_string())
}

/// The error and its causes on one line.
pub fn one_line(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text.replace(['\n', '\r'], " ")
}

/// The innermost cause (e.g. "Connection refused (os error 111)").
fn root_cause(error: &dyn std::error::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Whether no HTTP answer came back (refused, unresolvable, timed out).
fn is_connection_error(error: &object_store::Error) -> bool {
    let mut cause: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::NotFound
            ) {
                return true;
            }
        }
        let text = e.to_string();
        if text.contains("error sending request")
            || text.contains("dns error")
            || text.contains("operation timed out")
            || text.contains("Connection refused")
        {
            return true;
        }
        cause = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(text: &str) -> Result<BucketOutput, OutputParseError> {
        parse(Path::new(text)).expect("an s3 URL")
    }

    #[test]
    fn urls_name_bucket_and_prefix() {
        let out = bucket("s3://logs/a/b/").unwrap();
        assert_eq!((out.bucket.as_str(), out.prefix.as_str()), ("logs", "a/b"));
        assert_eq!(
            out.key_of("requests/x.parquet").as_ref(),
            "a/b/requests/x.parquet"
        );
        let out = bucket("s3://logs").unwrap();
        assert_eq!(out.prefix, "");
        assert_eq!(
            out.key_of("requests/x.parquet").as_ref(),
            "requests/x.parquet"
        );
        assert!(bucket("s3://Bad_Bucket/x").is_err());
        assert!(bucket("s3://logs/a/../b").is_err());
        assert!(bucket("s3://logs/a//b").is_err());
        assert!(parse(Path::new("/tmp/s3")).is_none());
    }

    #[test]
    fn spool_directories_differ_per_destination() {
        let spool = Path::new("/spool");
        let a = bucket("s3://logs/a").unwrap().spool_dir(spool);
        let b = bucket("s3://logs/b").unwrap().spool_dir(spool);
        assert_ne!(a, b);
        assert_eq!(a, Path::new("/spool/s3_logs_a"));
    }

    #[test]
    fn s3_error_codes_are_read_from_the_body() {
        let text = "Client error with status 404 Not Found: <?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>x</Message></Error>";
        assert_eq!(s3_error_code(text).as_deref(), Some("NoSuchBucket"));
        assert_eq!(s3_error_code("no body"), None);
    }
}
