//! Extraction pipeline (filled in below).
