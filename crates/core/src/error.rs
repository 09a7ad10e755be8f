//! The one error type of the engine: a kind to branch on, plus context.
//!
//! Callers decide what a failure means to their user (the CLI maps
//! [`ErrorKind`] to exit codes); the engine only says what happened, where,
//! and whether trying again could help.

use std::fmt;

use crate::range::ByteRange;

/// What went wrong, coarsely: the axis callers branch on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Connecting, TLS, reading or a timeout: the network failed us.
    Network,
    /// The server's TLS certificate is not trusted (unknown issuer,
    /// expired, wrong name): retrying cannot help; a private CA or a
    /// TLS-inspecting proxy needs its root added
    /// ([`Config::ca_certs_pem`](crate::Config::ca_certs_pem)).
    Certificate,
    /// The server answered with an HTTP status we cannot use.
    HttpStatus(u16),
    /// The server answered something that breaks HTTP's rules for what we
    /// asked (a wrong `Content-Range`, a body of the wrong length).
    Protocol,
    /// The remote file changed (size or validator) while we held a plan for
    /// the old version.
    RemoteChanged,
    /// The bytes received do not have the expected SHA-256.
    ChecksumMismatch,
    /// Reading or writing local files failed.
    Io,
    /// The caller gave us something unusable (a malformed URL, a bad option).
    InvalidInput,
    /// The download was cancelled before it finished.
    Cancelled,
}

impl ErrorKind {
    /// A short stable name for logs and JSON: `network`, `tls`, `http`,
    /// `remote-changed`, `integrity`, `io`, `input`, `cancelled`.
    pub fn class(self) -> &'static str {
        match self {
            ErrorKind::Network => "network",
            ErrorKind::Certificate => "tls",
            ErrorKind::HttpStatus(_) | ErrorKind::Protocol => "http",
            ErrorKind::RemoteChanged => "remote-changed",
            ErrorKind::ChecksumMismatch => "integrity",
            ErrorKind::Io => "io",
            ErrorKind::InvalidInput => "input",
            ErrorKind::Cancelled => "cancelled",
        }
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An engine error: an [`ErrorKind`], a message, and where it happened.
///
/// The message never contains URL credentials; the underlying cause, if
/// any, is available through [`std::error::Error::source`].
pub struct Error {
    kind: ErrorKind,
    message: Box<str>,
    url: Option<Box<str>>,
    range: Option<ByteRange>,
    attempts: u32,
    retry_after: Option<std::time::Duration>,
    permanent: bool,
    metalink: bool,
    kept_bytes: Option<u64>,
    source: Option<Source>,
}

impl Error {
    /// A new error of `kind` with a lowercase message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into().into_boxed_str(),
            url: None,
            range: None,
            attempts: 0,
            retry_after: None,
            permanent: false,
            metalink: false,
            kept_bytes: None,
            source: None,
        }
    }

    /// Marks a failure of a normally transient kind as not worth retrying
    /// (a certificate error, a refused redirect).
    pub(crate) fn permanent(mut self) -> Self {
        self.permanent = true;
        self
    }

    pub(crate) fn with_retry_after(mut self, delay: Option<std::time::Duration>) -> Self {
        self.retry_after = delay;
        self
    }

    pub(crate) fn serving_metalink(mut self) -> Self {
        self.metalink = true;
        self
    }

    /// The URL answered with a Metalink document (`Content-Type:
    /// application/metalink4+xml` or `application/metalink+xml`) instead
    /// of the file: a caller that reads Metalinks fetches the document and
    /// downloads the file it describes. Nothing was written.
    pub fn serves_metalink(&self) -> bool {
        self.metalink
    }

    pub(crate) fn with_kept_bytes(mut self, bytes: u64) -> Self {
        self.kept_bytes = Some(bytes);
        self
    }

    /// For a cancelled download: the bytes of the file kept in its part
    /// file and recorded in its journal, which the next run of the same
    /// download resumes from (`None` when the download was cancelled
    /// before it had a part file).
    pub fn kept_bytes(&self) -> Option<u64> {
        self.kept_bytes
    }

    /// How long the server asked us to wait (`Retry-After`), if it did.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        self.retry_after
    }

    pub(crate) fn with_source(mut self, source: impl Into<Source>) -> Self {
        self.source = Some(source.into());
        self
    }

    pub(crate) fn with_url(mut self, url: &reqwest::Url) -> Self {
        self.url = Some(redact_url(url).into_boxed_str());
        self
    }

    pub(crate) fn with_range(mut self, range: ByteRange) -> Self {
        self.range = Some(range);
        self
    }

    pub(crate) fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    pub(crate) fn io(message: impl Into<String>, source: std::io::Error) -> Self {
        Self::new(ErrorKind::Io, message).with_source(source)
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The HTTP status, when the server answered with an unusable one.
    pub fn status(&self) -> Option<u16> {
        match self.kind {
            ErrorKind::HttpStatus(code) => Some(code),
            _ => None,
        }
    }

    /// The URL involved, with any credentials removed.
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// The byte range being fetched when this happened, if any.
    pub fn range(&self) -> Option<ByteRange> {
        self.range
    }

    /// How many attempts were made before giving up (0 when not retried).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Whether trying the same request again could succeed.
    pub fn is_retryable(&self) -> bool {
        if self.permanent {
            return false;
        }
        match self.kind {
            ErrorKind::Network | ErrorKind::Protocol => true,
            ErrorKind::HttpStatus(code) => crate::retry::status_is_transient(code),
            _ => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        let mut context = Vec::new();
        if let Some(url) = &self.url {
            context.push(url.to_string());
        }
        if let Some(range) = self.range {
            context.push(format!("bytes {range}"));
        }
        if self.attempts > 1 {
            context.push(format!("after {} attempts", self.attempts));
        }
        if !context.is_empty() {
            write!(f, " ({})", context.join(", "))?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("url", &self.url)
            .field("range", &self.range)
            .field("attempts", &self.attempts)
            .field("source", &self.source)
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

/// The URL without user name, password or credentials in its query, safe
/// for messages, events, logs and the journal: `user:password` goes, and
/// the value of every query parameter that carries a signature or a token
/// (see [`is_credential_param`]) becomes `REDACTED`.
pub fn redact_url(url: &reqwest::Url) -> String {
    let has_credentials = !url.username().is_empty() || url.password().is_some();
    let has_secret_query = url
        .query_pairs()
        .any(|(name, _)| is_credential_param(&name));
    if !has_credentials && !has_secret_query {
        return url.to_string();
    }
    let mut clean = url.clone();
    // Both setters only fail for URLs that cannot carry credentials at all,
    // in which case there is nothing to remove.
    let _ = clean.set_username("");
    let _ = clean.set_password(None);
    if has_secret_query {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(name, value)| {
                let value = if is_credential_param(&name) {
                    "REDACTED".to_owned()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        clean.query_pairs_mut().clear().extend_pairs(pairs);
    }
    clean.to_string()
}

/// What names one object on a server, whatever signed the request for it:
/// the URL without credentials and without the query parameters a signing
/// scheme adds (signature, credential, expiry, date, policy, token). A
/// newly signed URL for the same object has the same identity, so a resume
/// through it is a resume; other query parameters (`?id=5`) still tell
/// objects apart.
pub(crate) fn object_identity(url: &reqwest::Url) -> String {
    let mut clean = url.clone();
    let _ = clean.set_username("");
    let _ = clean.set_password(None);
    clean.set_fragment(None);
    let signed_azure = url.query_pairs().any(|(name, _)| name == "sig");
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(name, _)| !is_signing_param(name, signed_azure))
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    if kept.is_empty() {
        clean.set_query(None);
    } else {
        clean.query_pairs_mut().clear().extend_pairs(kept);
    }
    clean.to_string()
}

/// Query parameters whose values are credentials: presigned-URL
/// signatures and credentials (S3, GCS, CloudFront, Azure SAS) and bearer
/// tokens passed in the query.
pub(crate) fn is_credential_param(name: &str) -> bool {
    const SECRET: [&str; 14] = [
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
        "x-goog-signature",
        "x-goog-credential",
        "signature",
        "sig",
        "token",
        "access_token",
        "auth",
        "api_key",
        "apikey",
        "password",
        "secret",
    ];
    SECRET
        .iter()
        .any(|secret| name.eq_ignore_ascii_case(secret))
}

/// Query parameters that belong to a request's signature rather than to
/// the object: the credentials above, and the dates, expiries and policies
/// signed with them (Azure's SAS fields only beside its `sig`).
fn is_signing_param(name: &str, signed_azure: bool) -> bool {
    const SIGNING: [&str; 5] = [
        "expires",
        "key-pair-id",
        "policy",
        "googleaccessid",
        "awsaccesskeyid",
    ];
    const AZURE_SAS: [&str; 10] = [
        "sv", "ss", "srt", "sp", "se", "st", "spr", "sr", "skoid", "sktid",
    ];
    let lower = name.to_ascii_lowercase();
    is_credential_param(name)
        || lower.starts_with("x-amz-")
        || lower.starts_with("x-goog-")
        || SIGNING.contains(&lower.as_str())
        || (signed_azure && AZURE_SAS.contains(&lower.as_str()))
}

/// A `Result` whose error is the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn url(raw: &str) -> reqwest::Url {
        reqwest::Url::parse(raw).expect("url")
    }

    #[test]
    fn signed_query_values_are_redacted_and_the_rest_kept() {
        let signed = url(
            "https://bucket.s3.example/img.qcow2?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F2026&X-Amz-Date=20261202T000000Z&X-Amz-Signature=abc123&part=1",
        );
        let shown = redact_url(&signed);
        assert!(!shown.contains("abc123"), "{shown}");
        assert!(!shown.contains("AKIA"), "{shown}");
        assert!(shown.contains("X-Amz-Signature=REDACTED"), "{shown}");
        assert!(
            shown.contains("X-Amz-Algorithm=AWS4-HMAC-SHA256"),
            "{shown}"
        );
        assert!(shown.contains("part=1"), "{shown}");
        for raw in [
            "https://h/f?sig=s3cr3t&sv=2024",
            "https://h/f?token=s3cr3t",
            "https://h/f?Signature=s3cr3t&Expires=1",
            "https://u:s3cr3t@h/f",
        ] {
            let shown = redact_url(&url(raw));
            assert!(!shown.contains("s3cr3t"), "{raw} → {shown}");
        }
        let plain = "https://h/dir/f.img?id=5";
        assert_eq!(redact_url(&url(plain)), plain);
    }

    #[test]
    fn a_newly_signed_url_names_the_same_object() {
        let first = url(
            "https://b.s3.example/f?X-Amz-Date=1&X-Amz-Expires=60&X-Amz-Credential=a&X-Amz-Signature=one",
        );
        let second = url(
            "https://b.s3.example/f?X-Amz-Date=2&X-Amz-Expires=60&X-Amz-Credential=a&X-Amz-Signature=two",
        );
        assert_eq!(object_identity(&first), object_identity(&second));
        assert_eq!(object_identity(&first), "https://b.s3.example/f");
        let azure_a = url("https://a.blob.example/c/f?sv=2024&se=2026-12-02&sp=r&sig=x");
        let azure_b = url("https://a.blob.example/c/f?sv=2024&se=2026-12-03&sp=r&sig=y");
        assert_eq!(object_identity(&azure_a), object_identity(&azure_b));
        // Other objects stay apart: another path, another non-signing parameter.
        assert_ne!(
            object_identity(&url("https://h/f?id=5")),
            object_identity(&url("https://h/f?id=6"))
        );
        assert_ne!(
            object_identity(&url("https://h/f?Signature=a")),
            object_identity(&url("https://h/g?Signature=a"))
        );
        // Without a `sig`, a parameter named like a SAS field is the object's.
        assert_ne!(
            object_identity(&url("https://h/f?sp=1")),
            object_identity(&url("https://h/f?sp=2"))
        );
    }

    #[test]
    fn display_keeps_range_and_attempts_without_a_url() {
        let error = Error::new(ErrorKind::Network, "connection closed")
            .with_range(ByteRange::new(0, 10))
            .with_attempts(3);
        assert_eq!(
            error.to_string(),
            "connection closed (bytes [0, 10), after 3 attempts)"
        );
        let url = reqwest::Url::parse("http://user:pw@example.org/x").expect("url");
        let with_url = error.with_url(&url);
        assert_eq!(
            with_url.to_string(),
            "connection closed (http://example.org/x, bytes [0, 10), after 3 attempts)"
        );
        assert_eq!(Error::new(ErrorKind::Io, "plain").to_string(), "plain");
    }
}
