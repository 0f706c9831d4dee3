//! Stage 1, intake: where files come from in daemon mode (a spool directory), and how SQS notification bodies name
//! S3 objects (the SQS consumer builds on `notification`).

pub mod consumer;
pub mod layout;
pub mod memory;
pub mod notification;
pub mod spool;
pub mod sqs;
pub mod tracker;
