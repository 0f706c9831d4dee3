//! Stage 6, detect: rules over parsed events (issue 4). Pure: no I/O.
//!
//! This first slice is the Sigma condition language, compiled against a rule's named searches; the search
//! matchers, rule loading and alert delivery build on it.

pub mod condition;
