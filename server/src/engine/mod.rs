//! The engine: what a run is and how runs are scheduled, independent of
//! what runs them.
//!
//! A [`Run`] is an accepted request with a [`Timeline`] (its clock and
//! events); [`Runs`] is the registry that starts runs behind a [`Queue`] and
//! records them in the store; [`Density`] is a [`Runtime`] made of another
//! (the trait itself lives with the backends that implement it). [`Labs`]
//! says which runtime serves which demo on this host. [`relay`] is what
//! replicas sharing a PostgreSQL store tell each other. `room_tests`
//! floods a class's queue through the engine and removes the flooders;
//! `end_tests` holds a run's end back until the store has it.
//!
//! May import `backends` and `store`; never `http` or `tools`.

mod density;
pub mod derive;
#[cfg(test)]
mod end_tests;
mod labs;
mod queue;
mod registry;
pub mod relay;
#[cfg(test)]
mod room_tests;
mod run;
mod stats;
mod timeline;

pub use crate::backends::{Ready, RunContext, Runtime};
pub use density::Density;
pub use labs::{Labs, Refused, Settings, Slots, Unavailable, CORES_PER_CONTAINER_RUN};
pub use queue::{Full, Left, Queue, DEFAULT_QUEUE_TIMEOUT, WAITING_PER_SLOT};
pub use registry::{ClassChange, Requester, Runs, TooMany, PER_LEARNER_PER_DEMO, UNWATCHED_GRACE};
pub use run::{Run, WatchGuard, WATCH_GRACE};
pub use stats::{Histogram, Snapshot, Stats, BUCKETS};
pub use timeline::Timeline;
