//! Stage 1, intake: where files come from in daemon mode. Today a spool directory; SQS joins in a later issue.

pub mod spool;
