//! The queue edge: a three-call `Queue` trait (receive, delete, keep invisible) and its SQS implementation.

use std::future::Future;

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, MessageSystemAttributeName,
};

/// One delivery of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub message_id: String,
    /// Identifies this delivery; deleting or extending needs it.
    pub receipt: String,
    pub body: String,
    /// When the message was first sent, in milliseconds since the epoch.
    pub sent_at_ms: Option<i64>,
    pub receive_count: u32,
}

#[derive(Debug, thiserror::Error)]
#[error("queue {queue}: {message}")]
pub struct QueueError {
    pub queue: String,
    pub message: String,
}

/// A queue of notifications. At-least-once: a delivery not deleted before its visibility timeout comes back.
pub trait Queue: Send + Sync + 'static {
    /// Up to 10 deliveries, waiting up to `wait_secs` for the first; each stays invisible for `visibility_secs`.
    fn receive(
        &self,
        wait_secs: i32,
        visibility_secs: i32,
    ) -> impl Future<Output = Result<Vec<Received>, QueueError>> + Send;
    /// Deletes up to 10 deliveries; returns how many of them could not be deleted.
    fn delete(&self, receipts: &[String]) -> impl Future<Output = Result<usize, QueueError>> + Send;
    /// Keeps up to 10 deliveries invisible for another `visibility_secs`; returns how many failed.
    fn extend(
        &self,
        receipts: &[String],
        visibility_secs: i32,
    ) -> impl Future<Output = Result<usize, QueueError>> + Send;
    /// Whether the queue answers (for `/readyz`).
    fn probe(&self) -> impl Future<Output = Result<(), QueueError>> + Send;
}

pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl SqsQueue {
    pub fn new(sdk: &aws_config::SdkConfig, url: &str) -> SqsQueue {
        SqsQueue { client: aws_sdk_sqs::Client::new(sdk), url: url.to_owned() }
    }

    fn error(&self, err: impl std::error::Error + 'static) -> QueueError {
        QueueError { queue: self.url.clone(), message: crate::aws::describe(&err) }
    }
}

impl Queue for SqsQueue {
    async fn receive(&self, wait_secs: i32, visibility_secs: i32) -> Result<Vec<Received>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(10)
            .wait_time_seconds(wait_secs)
            .visibility_timeout(visibility_secs)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| self.error(e))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let attrs = m.attributes.as_ref();
                let attr =
                    |name: MessageSystemAttributeName| attrs.and_then(|a| a.get(&name)).and_then(|v| v.parse().ok());
                Some(Received {
                    message_id: m.message_id.clone().unwrap_or_default(),
                    receipt: m.receipt_handle.clone()?,
                    body: m.body.clone().unwrap_or_default(),
                    sent_at_ms: attr(MessageSystemAttributeName::SentTimestamp),
                    receive_count: attr(MessageSystemAttributeName::ApproximateReceiveCount)
                        .map_or(1, |n: i64| n as u32),
                })
            })
            .collect())
    }

    async fn delete(&self, receipts: &[String]) -> Result<usize, QueueError> {
        let entries = receipts
            .iter()
            .enumerate()
            .map(|(i, r)| DeleteMessageBatchRequestEntry::builder().id(i.to_string()).receipt_handle(r).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.error(e))?;
        let out = self
            .client
            .delete_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| self.error(e))?;
        Ok(out.failed.len())
    }

    async fn probe(&self) -> Result<(), QueueError> {
        self.client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.error(e))
    }

    async fn extend(&self, receipts: &[String], visibility_secs: i32) -> Result<usize, QueueError> {
        let entries = receipts
            .iter()
            .enumerate()
            .map(|(i, r)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(r)
                    .visibility_timeout(visibility_secs)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.error(e))?;
        let out = self
            .client
            .change_message_visibility_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| self.error(e))?;
        Ok(out.failed.len())
    }
}
