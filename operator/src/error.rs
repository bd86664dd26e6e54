//! Errors of the operator library.

/// Everything that can go wrong while reconciling a hub.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The hub's spec cannot be turned into objects (reported as `Degraded`, not retried).
    #[error("invalid hub: {0}")]
    InvalidHub(String),
    /// The hub object could not be decoded into the current types.
    #[error("undecodable hub object: {0}")]
    Undecodable(String),
    /// Rendering the data-plane configuration failed.
    #[error("rendering the data-plane config: {0}")]
    Render(String),
    /// A call to the Kubernetes API failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// (De)serializing an object failed.
    #[error("serialization: {0}")]
    Json(#[from] serde_json::Error),
    /// Leader election could not proceed.
    #[error("leader election: {0}")]
    Lease(String),
}

impl Error {
    /// Short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidHub(_) => "invalid_hub",
            Error::Undecodable(_) => "undecodable",
            Error::Render(_) => "render",
            Error::Kube(_) => "kube",
            Error::Json(_) => "json",
            Error::Lease(_) => "lease",
        }
    }
}

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
