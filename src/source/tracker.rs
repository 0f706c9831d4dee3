//! Which SQS deliveries wait on which S3 objects: the bookkeeping behind "delete a message only after everything
//! it names is committed".
//!
//! Keyed by receipt handle (one per delivery), so a message delivered twice is tracked twice and each delivery is
//! deleted on its own. An object named by several deliveries is fetched once. Pure: no I/O, no clock.

use std::collections::HashMap;

use crate::source::notification::ObjectRef;

/// `(bucket, key)`.
pub type ObjectId = (String, String);

#[derive(Debug)]
struct Delivery {
    message_id: String,
    remaining: usize,
    /// An object of this delivery failed in a way that may heal (access denied, S3 errors): it is not deleted,
    /// and no longer kept invisible, so the queue redelivers it (and, after its redrive limit, dead-letters it).
    failed: bool,
}

#[derive(Debug, Default)]
pub struct Tracker {
    deliveries: HashMap<String, Delivery>,
    waiting: HashMap<ObjectId, Vec<String>>,
}

/// A delivery whose objects are all done: delete it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Complete {
    pub receipt: String,
    pub message_id: String,
}

impl Tracker {
    /// Registers a delivery naming `objects`; returns the objects that are not already in flight for another
    /// delivery, which the caller fetches. A delivery naming no object is complete at once.
    pub fn add(
        &mut self,
        receipt: &str,
        message_id: &str,
        objects: &[ObjectRef],
    ) -> (Vec<ObjectRef>, Option<Complete>) {
        let mut unique: Vec<&ObjectRef> = Vec::new();
        for o in objects {
            if !unique.iter().any(|u| u.bucket == o.bucket && u.key == o.key) {
                unique.push(o);
            }
        }
        if unique.is_empty() {
            return (Vec::new(), Some(Complete { receipt: receipt.to_owned(), message_id: message_id.to_owned() }));
        }
        self.deliveries.insert(
            receipt.to_owned(),
            Delivery { message_id: message_id.to_owned(), remaining: unique.len(), failed: false },
        );
        let mut to_fetch = Vec::new();
        for o in unique {
            let waiters = self.waiting.entry((o.bucket.clone(), o.key.clone())).or_default();
            if waiters.is_empty() {
                to_fetch.push(o.clone());
            }
            waiters.push(receipt.to_owned());
        }
        (to_fetch, None)
    }

    /// The object is done for good (committed, already applied, missing, or permanently bad): returns the
    /// deliveries that are now complete and not failed.
    pub fn done(&mut self, object: &ObjectId) -> Vec<Complete> {
        self.finish(object, false)
    }

    /// The object could not be fetched for a reason that may heal: its deliveries will not be deleted.
    pub fn failed(&mut self, object: &ObjectId) {
        self.finish(object, true);
    }

    fn finish(&mut self, object: &ObjectId, failed: bool) -> Vec<Complete> {
        let mut complete = Vec::new();
        for receipt in self.waiting.remove(object).unwrap_or_default() {
            let Some(delivery) = self.deliveries.get_mut(&receipt) else { continue };
            delivery.failed |= failed;
            delivery.remaining -= 1;
            if delivery.remaining == 0 {
                let delivery = self.deliveries.remove(&receipt).expect("present above");
                if !delivery.failed {
                    complete.push(Complete { receipt, message_id: delivery.message_id });
                }
            }
        }
        complete
    }

    /// Receipts to keep invisible (the visibility heartbeat): in flight and not failed.
    pub fn in_flight(&self) -> Vec<String> {
        self.deliveries.iter().filter(|(_, d)| !d.failed).map(|(r, _)| r.clone()).collect()
    }

    /// Objects being fetched or applied: the pollers' backpressure.
    pub fn objects_in_flight(&self) -> usize {
        self.waiting.len()
    }

    pub fn deliveries(&self) -> usize {
        self.deliveries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(key: &str) -> ObjectRef {
        ObjectRef { bucket: "b".into(), key: key.into(), size: None, etag: None }
    }

    fn id(key: &str) -> ObjectId {
        ("b".into(), key.into())
    }

    fn keys(objects: &[ObjectRef]) -> Vec<&str> {
        objects.iter().map(|o| o.key.as_str()).collect()
    }

    fn receipts(complete: &[Complete]) -> Vec<&str> {
        complete.iter().map(|c| c.receipt.as_str()).collect()
    }

    #[test]
    fn a_delivery_completes_when_all_its_objects_are_done() {
        let mut t = Tracker::default();
        let (fetch, complete) = t.add("r1", "m1", &[obj("a"), obj("b"), obj("a")]);
        assert_eq!((keys(&fetch), complete), (vec!["a", "b"], None));
        assert_eq!(t.objects_in_flight(), 2);
        assert!(t.done(&id("a")).is_empty());
        assert_eq!(receipts(&t.done(&id("b"))), ["r1"]);
        assert_eq!((t.deliveries(), t.objects_in_flight()), (0, 0));
        // Done twice, or never asked for: nothing.
        assert!(t.done(&id("b")).is_empty());
    }

    #[test]
    fn an_object_named_twice_is_fetched_once() {
        let mut t = Tracker::default();
        assert_eq!(keys(&t.add("r1", "m1", &[obj("a"), obj("b")]).0), ["a", "b"]);
        // The same message delivered again while in flight, and another message naming `b`.
        assert_eq!(keys(&t.add("r2", "m1", &[obj("a"), obj("b")]).0), Vec::<&str>::new());
        assert_eq!(keys(&t.add("r3", "m2", &[obj("b"), obj("c")]).0), ["c"]);
        assert!(t.done(&id("a")).is_empty());
        let mut done = receipts(&t.done(&id("b"))).into_iter().map(str::to_owned).collect::<Vec<_>>();
        done.sort();
        assert_eq!(done, ["r1", "r2"]);
        assert_eq!(receipts(&t.done(&id("c"))), ["r3"]);
    }

    #[test]
    fn a_failed_object_keeps_its_deliveries_for_redelivery() {
        let mut t = Tracker::default();
        t.add("r1", "m1", &[obj("a"), obj("b")]);
        t.add("r2", "m2", &[obj("c")]);
        t.failed(&id("a"));
        let mut in_flight = t.in_flight();
        in_flight.sort();
        assert_eq!(in_flight, ["r2"], "a failed delivery is no longer kept invisible");
        assert!(t.done(&id("b")).is_empty(), "r1 must not be deleted");
        assert_eq!(t.deliveries(), 1);
        assert_eq!(receipts(&t.done(&id("c"))), ["r2"]);
    }

    #[test]
    fn a_delivery_without_objects_is_complete_at_once() {
        let mut t = Tracker::default();
        let (fetch, complete) = t.add("r1", "m1", &[]);
        assert!(fetch.is_empty());
        assert_eq!(complete, Some(Complete { receipt: "r1".into(), message_id: "m1".into() }));
        assert_eq!(t.deliveries(), 0);
    }
}
