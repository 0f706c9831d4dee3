//! Stage 6, detect: rules over parsed events (issue 4). Pure: no I/O.
//!
//! So far: the Sigma condition language compiled against a rule's named searches (`condition`), Sigma string
//! values with wildcards, escapes and the position modifiers (`pattern`), and one field's test with every modifier
//! the issue lists (`value`), one named search over an event's fields (`search`), and a rule's whole `detection`
//! block (`detection`). Capturing those fields in the parse pass, YAML rule loading, correlations and alert
//! delivery build on these.

pub mod condition;
pub mod detection;
pub mod pattern;
pub mod rule;
pub mod ruleset;
pub mod search;
pub mod value;

#[cfg(test)]
mod builtin_tests;
