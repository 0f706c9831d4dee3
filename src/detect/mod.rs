//! Stage 6, detect: Sigma rules over parsed events, evaluated on the workers in the parse pass. Pure: no I/O.
//!
//! From the inside out: Sigma string values (`pattern`), one field's test with its modifiers (`value`), one named
//! search (`search`), a rule's `detection` block with its condition (`condition`, `detection`), a rule file with
//! event rules and correlations (`rule`), and the loaded, indexed set with the built-in rules (`ruleset`).
//! Matches leave this stage as owned `Match`es; counting correlations and raising alerts is `crate::alert`.

pub mod catalogue;
pub mod condition;
pub mod detection;
pub mod pattern;
pub mod rule;
pub mod ruleset;
pub mod search;
pub mod value;

#[cfg(test)]
pub(crate) mod builtin_tests;
