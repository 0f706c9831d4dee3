//! Stage 8, permissions: what each identity is allowed to do (the inventory of IAM policies), what it did (the
//! state), and the difference: unused services and actions, used-but-not-granted calls, unused identities, keys
//! and passwords, and least-privilege policies.
//!
//! Architecture invariant: `policy`, `inventory`, `effective` and `analysis` are pure (text and state rows in,
//! reports out); reading files, the store and the IAM API happens at the edges.

pub mod analysis;
pub mod effective;
pub mod inventory;
pub mod policy;
