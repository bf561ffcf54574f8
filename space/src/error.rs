//! Errors of the search-space crate.

/// What can go wrong with a space or an architecture.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpaceError {
    /// A preset name that does not exist.
    #[error("unknown search-space preset `{name}` (known: {known})")]
    UnknownPreset {
        /// The name asked for.
        name: String,
        /// The presets that exist.
        known: String,
    },
    /// A space that is inconsistent.
    #[error("invalid search space: {0}")]
    InvalidSpace(String),
    /// An architecture that does not fit its space.
    #[error("invalid architecture: {0}")]
    InvalidArch(String),
    /// Malformed JSON.
    #[error("malformed JSON: {0}")]
    Json(String),
    /// A sampling restriction outside the space.
    #[error("invalid choices: {0}")]
    InvalidChoices(String),
}
