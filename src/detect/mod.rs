//! Stage 6, detect: rules over parsed events (issue 4). Pure: no I/O.
//!
//! So far: the Sigma condition language compiled against a rule's named searches (`condition`), and Sigma string
//! values with wildcards, escapes and the position modifiers (`pattern`). Field access on the parsed event, the
//! remaining modifiers, rule loading and alert delivery build on these.

pub mod condition;
pub mod pattern;
