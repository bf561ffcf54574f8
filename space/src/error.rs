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

/// An error and its causes on one line, `message: cause: cause`, for the places that have one line
/// to give (an HTTP error body, a log field). Each error in `ofa` prints only its own text and hands
/// on its cause as `source()`, so this is where the chain is joined; the CLI renders it as
/// `Caused by:` lines instead.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        line.push_str(": ");
        line.push_str(&c.to_string());
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("cannot read /x")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chain_joins_every_cause_once() {
        let e = Outer(std::io::Error::other("no such file"));
        assert_eq!(super::chain(&e), "cannot read /x: no such file");
        let plain = std::io::Error::other("plain");
        assert_eq!(super::chain(&plain), "plain");
    }
}
