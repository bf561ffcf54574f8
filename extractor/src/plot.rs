//! Front plots (placeholder, filled in below).
