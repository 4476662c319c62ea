//! TLS for every HTTP client: rustls with one crypto provider, `ring`, for the whole binary.

/// Makes `ring` the process's rustls provider. Clients are built only after this ran; it is
/// cheap and safe to call any number of times.
pub fn install_provider() {
    // An error means a provider is installed already, which is the state we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
