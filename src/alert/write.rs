//! What a batch adds to the alerts and the correlation log, planned by the alert stage and written by the store.

use crate::alert::correlate::Changes;
use crate::alert::{Alert, Merge};

/// What a batch adds to the outbox and the correlation windows.
#[derive(Debug, Default)]
pub struct AlertWrite {
    /// Alerts with how they merge and the sinks a new one is routed to.
    pub alerts: Vec<(Alert, Merge, Vec<String>)>,
    pub hits: Changes,
    /// Wall-clock time of the commit, in milliseconds (alert latency is measured from it).
    pub raised_at_ms: i64,
    /// The alerts' JSON one after the other, when serialized ahead of the write ([`AlertWrite::serialize`]); a
    /// `String`, checked once on the planner, so that the committer does not check each body again.
    bodies: String,
    /// The end of each alert's JSON in `bodies`; valid only when there is one per alert.
    body_ends: Vec<usize>,
}

impl AlertWrite {
    /// Nothing yet, for a commit at `raised_at_ms`.
    pub fn at(raised_at_ms: i64) -> AlertWrite {
        AlertWrite { raised_at_ms, ..AlertWrite::default() }
    }

    /// Adds a later chunk of the same batch: its alerts, and its correlation log if it carries one (the last does).
    /// Bodies serialized on both sides are kept, so that the whole is written without serializing them again.
    pub fn append(&mut self, mut chunk: AlertWrite) {
        let serialized = self.is_serialized() && chunk.is_serialized();
        self.alerts.append(&mut chunk.alerts);
        if chunk.hits.snapshot || !chunk.hits.log.is_empty() {
            self.hits = chunk.hits;
        }
        if serialized {
            let offset = self.bodies.len();
            self.bodies.push_str(&chunk.bodies);
            self.body_ends.extend(chunk.body_ends.iter().map(|end| end + offset));
        } else {
            self.drop_bodies();
        }
    }

    /// Frees the serialized bodies once they are written: a batch's bodies run to tens of megabytes, and keeping
    /// them until the commit returned cost the committer a copy of them and the page faults of a growing buffer.
    pub fn drop_bodies(&mut self) {
        self.bodies = String::new();
        self.body_ends = Vec::new();
    }

    /// Whether every alert has its body in `bodies`.
    pub fn is_serialized(&self) -> bool {
        self.body_ends.len() == self.alerts.len()
    }

    /// Serializes the alerts now, so that [`write`] only stores them. The alert planner does this for each chunk
    /// it hands over: the committer then writes one chunk while the planner serializes the next, instead of doing
    /// both (after the last file, the last batch's alerts are all that is left to do).
    pub fn serialize(&mut self) {
        let mut bodies = std::mem::take(&mut self.bodies).into_bytes();
        bodies.clear();
        self.body_ends.clear();
        for (alert, _, _) in &self.alerts {
            alert.write_json(&mut bodies);
            self.body_ends.push(bodies.len());
        }
        self.bodies = String::from_utf8(bodies).expect("alert JSON is UTF-8");
    }

    /// Alert `i`'s JSON if [`AlertWrite::serialize`] made it.
    pub fn body(&self, i: usize) -> Option<&str> {
        if !self.is_serialized() {
            return None;
        }
        let start = if i == 0 { 0 } else { self.body_ends[i - 1] };
        Some(&self.bodies[start..self.body_ends[i]])
    }
}

/// What happened to each alert of a write, in order: raised (`true`, new) or merged into one already raised.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    pub new: Vec<bool>,
}

impl WriteOutcome {
    pub fn raised(&self) -> u64 {
        self.new.iter().filter(|n| **n).count() as u64
    }

    pub fn merged(&self) -> u64 {
        self.new.len() as u64 - self.raised()
    }
}
