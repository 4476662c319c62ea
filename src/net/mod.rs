//! What every networked part shares (destinations, notifications, health pings): the TLS
//! provider, the retry budget and its loop, and error chains for messages.
//!
//! A leaf: it depends on no other module of ours.

pub mod retry;
pub mod tls;

pub use retry::{RetryPolicy, retries};

/// An error with its causes, `outer: cause: root cause`, leaving out causes the message
/// already contains (HTTP clients often say only "error sending request" at the top).
/// Whether an error chain says the server answered a TLS handshake with something else:
/// `https` against a port that speaks plain HTTP (rustls: "corrupt message of type
/// InvalidContentType"; others: "wrong version number", "not a TLS handshake").
pub fn is_tls_mismatch(chain: &str) -> bool {
    [
        "InvalidContentType",
        "wrong version number",
        "not a TLS handshake",
        "HandshakeFailure: http",
    ]
    .iter()
    .any(|needle| chain.contains(needle))
}

pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}
