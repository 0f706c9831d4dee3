//! The Sigma engine: rules over parsed events, evaluated on the workers in the parse pass.
//!
//! From the inside out: Sigma string values (`pattern`), one field's test with its modifiers (`value`), one named
//! search (`search`), a rule's `detection` block with its condition (`condition`, `detection`), a rule file with
//! event rules and correlations (`rule`), and the indexed, cached set (`ruleset`). `load` reads rule files (the
//! only I/O here, at start), `matches` is what a match hands to the alert stage, and `catalogue` names the rules
//! raised from the state. Counting correlations and raising alerts is `crate::alert`.

pub mod catalogue;
pub mod condition;
pub mod detection;
pub mod load;
pub mod matches;
pub mod pattern;
pub mod rule;
pub mod ruleset;
pub mod search;
pub mod value;

#[cfg(test)]
pub(crate) mod builtin_tests;
