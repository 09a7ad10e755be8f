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
    /// A short stable name for logs and JSON: `network`, `http`,
    /// `remote-changed`, `integrity`, `io`, `input`, `cancelled`.
    pub fn class(self) -> &'static str {
        match self {
            ErrorKind::Network => "network",
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
    message: String,
    url: Option<String>,
    range: Option<ByteRange>,
    attempts: u32,
    retry_after: Option<std::time::Duration>,
    permanent: bool,
    source: Option<Source>,
}

impl Error {
    /// A new error of `kind` with a lowercase message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            url: None,
            range: None,
            attempts: 0,
            retry_after: None,
            permanent: false,
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

    /// How long the server asked us to wait (`Retry-After`), if it did.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        self.retry_after
    }

    pub(crate) fn with_source(mut self, source: impl Into<Source>) -> Self {
        self.source = Some(source.into());
        self
    }

    pub(crate) fn with_url(mut self, url: &reqwest::Url) -> Self {
        self.url = Some(redact_url(url));
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
            context.push(url.clone());
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

/// The URL without user name and password, safe for messages and logs.
pub fn redact_url(url: &reqwest::Url) -> String {
    if url.username().is_empty() && url.password().is_none() {
        return url.to_string();
    }
    let mut clean = url.clone();
    // Both setters only fail for URLs that cannot carry credentials at all,
    // in which case there is nothing to remove.
    let _ = clean.set_username("");
    let _ = clean.set_password(None);
    clean.to_string()
}

/// A `Result` whose error is the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

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
