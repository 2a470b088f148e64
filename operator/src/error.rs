//! The library's error type.

/// Everything that can go wrong in the operator library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The policy could not be compiled.
    #[error(transparent)]
    Compile(#[from] crate::compile::CompileError),
    /// A key could not be generated.
    #[error(transparent)]
    Key(#[from] crate::secrets::KeyError),
    /// Some objects could not be written; the others were.
    #[error("{count} write(s) failed, the rest applied; first: {first}")]
    Partial {
        /// How many writes failed.
        count: usize,
        /// The first failure, with what it concerned.
        first: String,
    },
    /// The caches never synced.
    #[error("the resource caches did not sync: {0}")]
    NotSynced(String),
}
