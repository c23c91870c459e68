//! Reading an instance's memory from the host side, one rule for both
//! kinds: PSS of its host processes (private pages plus a fair share of
//! shared ones, shared memory included once), plus, for a container, the
//! files on its tmpfs mounts (in memory, mapped by no process, so PSS
//! leaves them out). The parts are raw readings; the figure table sums
//! them into "memory held".
//!
//! A density step reads all its members in one pass ([`Snapshot`]) once
//! all are ready, so the N instances are measured at one moment.

use std::sync::{Arc, Mutex};

use stacklab_api::{Key, Metric};

use super::docker::measure::{read_container, Cgroup};
use super::host::tree_rollup;
use super::Ready;

/// Where an instance's memory is read from.
#[derive(Debug, Clone)]
pub enum MemoryProbe {
    /// A container: the processes of its memory cgroup, and the tmpfs
    /// mounts in its mount namespace, seen through its process `pid`.
    Container {
        /// Its memory cgroup, or why it could not be found.
        cgroup: Result<Cgroup, String>,
        /// Its first process, as the host sees it.
        pid: u32,
    },
    /// A VM: the process the server started (and its child, the jailed
    /// VMM), held at ready.
    Vm {
        /// The process the server started.
        root: u32,
    },
}

impl MemoryProbe {
    /// Reads the memory now.
    pub fn read(&self) -> Ready {
        match self {
            MemoryProbe::Container { cgroup, pid } => read_container(cgroup, *pid),
            MemoryProbe::Vm { root } => {
                let mut ready = Ready::default();
                let rollup = tree_rollup(*root).map_err(|e| {
                    format!("could not read the smaps_rollup of process {root} or its child: {e}")
                });
                ready.read(
                    Metric::MemoryPss,
                    rollup.as_ref().map(|r| r.pss as f64).map_err(Clone::clone),
                );
                ready.read(
                    Metric::MemoryUss,
                    rollup.as_ref().map(|r| r.uss as f64).map_err(Clone::clone),
                );
                ready.read(Metric::MemoryAnon, rollup.map(|r| r.anon as f64));
                ready
            }
        }
    }

    /// The keys a reading of this kind of probe gives.
    fn keys(&self) -> &'static [Metric] {
        match self {
            MemoryProbe::Container { .. } => &[
                Metric::MemoryPss,
                Metric::MemoryUss,
                Metric::MemoryTmpfsFiles,
            ],
            MemoryProbe::Vm { .. } => &[Metric::MemoryPss, Metric::MemoryUss, Metric::MemoryAnon],
        }
    }

    /// Every reading of this probe, missing for `why`.
    pub fn not_read(&self, why: &str) -> Ready {
        let mut ready = Ready::default();
        for key in self.keys() {
            ready.read(Key::from(*key), Err(why.to_owned()));
        }
        ready
    }
}

/// The members of one density step, read in one pass.
pub struct Snapshot {
    all_probed: tokio::sync::Barrier,
    all_read: tokio::sync::Barrier,
    probes: Mutex<Vec<Option<MemoryProbe>>>,
    results: Mutex<Vec<Option<Ready>>>,
}

impl Snapshot {
    /// A snapshot of `members` instances.
    pub fn new(members: usize) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            all_probed: tokio::sync::Barrier::new(members),
            all_read: tokio::sync::Barrier::new(members),
            probes: Mutex::new(vec![None; members]),
            results: Mutex::new(vec![None; members]),
        })
    }

    /// Member `index`'s reading: waits until every member is ready, then
    /// one of them reads all members in one pass.
    pub(super) async fn read(&self, index: usize, probe: MemoryProbe) -> Ready {
        let lost = probe.not_read("the step's snapshot lost this member's reading");
        lock(&self.probes)[index] = Some(probe);
        if self.all_probed.wait().await.is_leader() {
            let probes: Vec<Option<MemoryProbe>> = lock(&self.probes).drain(..).collect();
            // One pass, nothing else in between: one moment for all.
            let read: Vec<Option<Ready>> = probes
                .iter()
                .map(|p| p.as_ref().map(MemoryProbe::read))
                .collect();
            *lock(&self.results) = read;
        }
        self.all_read.wait().await;
        lock(&self.results)
            .get_mut(index)
            .and_then(Option::take)
            .unwrap_or(lost)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
