//! Labels on every container stacklab starts, and the sweep that removes
//! those whose owner is gone.
//!
//! Who owns a container, and how a sweeper judges that owner alive:
//!
//! - **A replica** (a server on a shared PostgreSQL store): the container
//!   carries the replica's name, the start of this run of it, and the
//!   store's id. It is alive while the store's `hosts` row of that name
//!   has that start and a heartbeat younger than the lost-after time.
//!   Replicas in containers (compose, Kubernetes pods) each have a PID
//!   namespace of their own, so a PID says nothing across them: the store
//!   is the one thing they share.
//! - **A lone server**: its PID, the PID's start time (PIDs are reused) and
//!   its PID namespace. Only a sweeper in that same namespace judges it;
//!   one that cannot see the PID leaves the container alone.
//!
//! An owner in the sweeper's own PID namespace is judged by its PID (it is
//! seen directly, replica or not). A container no rule can judge (another
//! store's replica in another PID namespace, another namespace's lone
//! server) is left alone: removing a live demo is worse than leaving an
//! orphan for its own kind to remove.
//!
//! Imports nothing of the store: the caller reads the `hosts` rows into
//! [`Peers`].

use std::collections::HashMap;

use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;

/// Label naming the owning server instance (every stacklab container has it).
pub const LABEL_INSTANCE: &str = "stacklab.instance";
const LABEL_PID: &str = "stacklab.owner-pid";
const LABEL_START: &str = "stacklab.owner-start";
const LABEL_PID_NS: &str = "stacklab.owner-pidns";
/// Label naming the owning replica (only on a replica's containers).
pub const LABEL_REPLICA: &str = "stacklab.replica";
const LABEL_REPLICA_START: &str = "stacklab.replica-started-ms";
const LABEL_STORE: &str = "stacklab.store";

/// A replica as it is known in its shared store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Its name (`--replica`), its row in the store's `hosts`.
    pub name: String,
    /// When this run of it started (Unix ms), as its heartbeat records it.
    pub started_at_ms: i64,
    /// Which store (PostgreSQL cluster, database, schema).
    pub store: String,
}

/// The server process that owns a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// A random id of this server instance.
    pub instance: String,
    /// Its PID, as its own PID namespace numbers it.
    pub pid: u32,
    /// Its start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_ticks: u64,
    /// Its PID namespace (`pid:[inode]`), when readable.
    pub pid_ns: Option<String>,
    /// The replica it is, when it shares a store.
    pub replica: Option<Replica>,
}

impl Owner {
    /// This process, as a lone server.
    pub fn current() -> Owner {
        let pid = std::process::id();
        Owner {
            instance: uuid::Uuid::new_v4().simple().to_string(),
            pid,
            start_ticks: start_ticks(pid).unwrap_or(0),
            pid_ns: pid_namespace(),
            replica: None,
        }
    }

    /// This owner as `replica` of a shared store.
    pub fn as_replica(mut self, replica: Option<Replica>) -> Owner {
        self.replica = replica;
        self
    }

    /// The labels to put on a container.
    pub fn labels(&self) -> HashMap<String, String> {
        let mut labels = HashMap::from([
            (LABEL_INSTANCE.into(), self.instance.clone()),
            (LABEL_PID.into(), self.pid.to_string()),
            (LABEL_START.into(), self.start_ticks.to_string()),
        ]);
        if let Some(ns) = &self.pid_ns {
            labels.insert(LABEL_PID_NS.into(), ns.clone());
        }
        if let Some(r) = &self.replica {
            labels.insert(LABEL_REPLICA.into(), r.name.clone());
            labels.insert(LABEL_REPLICA_START.into(), r.started_at_ms.to_string());
            labels.insert(LABEL_STORE.into(), r.store.clone());
        }
        labels
    }
}

/// What a sweeper knows: its own PID namespace and, when it is a replica,
/// itself and the replicas of its store.
#[derive(Debug, Clone, Default)]
pub struct Peers {
    /// The sweeper's PID namespace (`pid:[inode]`).
    pub pid_ns: Option<String>,
    /// The sweeper as a replica (`None`: a lone server).
    pub me: Option<Replica>,
    /// Each replica of the store by name: (start of its latest run, last
    /// heartbeat), Unix ms.
    pub hosts: HashMap<String, (i64, i64)>,
    /// Now, Unix ms.
    pub now_ms: i64,
    /// Silence after which a replica is lost, ms.
    pub lost_after_ms: i64,
}

impl Peers {
    /// A lone server in this process's PID namespace.
    pub fn lone() -> Peers {
        Peers {
            pid_ns: pid_namespace(),
            ..Peers::default()
        }
    }
}

/// A sweeper's judgement of a container's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The owner runs: keep.
    Alive,
    /// The owner is gone (why): remove.
    Gone(&'static str),
    /// This sweeper cannot tell (why): keep.
    Unknown(&'static str),
}

/// Judges the owner of a container labelled `labels`.
pub fn judge(labels: &HashMap<String, String>, peers: &Peers) -> Verdict {
    // An owner in this PID namespace is seen directly: its process runs
    // or it does not, whatever a store says.
    let same_namespace =
        labels.get(LABEL_PID_NS).is_some() && labels.get(LABEL_PID_NS) == peers.pid_ns.as_ref();
    if same_namespace || (labels.get(LABEL_PID_NS).is_none() && !labels.contains_key(LABEL_REPLICA))
    {
        return by_pid(labels);
    }
    let Some(name) = labels.get(LABEL_REPLICA) else {
        return Verdict::Unknown("a server in another PID namespace");
    };
    let started = labels
        .get(LABEL_REPLICA_START)
        .and_then(|s| s.parse::<i64>().ok());
    let Some(me) = &peers.me else {
        return Verdict::Unknown("a replica's, and this server shares no store");
    };
    if labels.get(LABEL_STORE) != Some(&me.store) {
        return Verdict::Unknown("a replica of another store");
    }
    let Some(started) = started else {
        return Verdict::Unknown("no start time on a replica's container");
    };
    if *name == me.name {
        return if started == me.started_at_ms {
            Verdict::Alive
        } else {
            Verdict::Gone("an earlier run of this replica")
        };
    }
    match peers.hosts.get(name) {
        None => Verdict::Unknown("a replica the store does not know"),
        Some(&(latest, _)) if latest > started => Verdict::Gone("its replica has restarted since"),
        Some(&(latest, _)) if latest < started => {
            Verdict::Unknown("a replica start the store has not recorded")
        }
        Some(&(_, beat)) if peers.now_ms - beat > peers.lost_after_ms => {
            Verdict::Gone("its replica stopped heart-beating")
        }
        Some(_) => Verdict::Alive,
    }
}

/// The PID rule: the owner runs if its PID has its start time here.
fn by_pid(labels: &HashMap<String, String>) -> Verdict {
    let pid = labels.get(LABEL_PID).and_then(|p| p.parse::<u32>().ok());
    let start = labels.get(LABEL_START).and_then(|s| s.parse::<u64>().ok());
    match (pid, start) {
        (Some(pid), Some(start)) if start_ticks(pid) == Some(start) => Verdict::Alive,
        (Some(_), Some(_)) => Verdict::Gone("its server process has exited"),
        _ => Verdict::Gone("no owner on it"),
    }
}

/// This process's PID namespace, `pid:[inode]`.
pub fn pid_namespace() -> Option<String> {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Field 22 of `/proc/PID/stat` (after the parenthesised command name,
/// which may itself contain spaces).
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    // after_comm starts at field 3 (state); starttime is field 22.
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// Removes every stacklab container whose owner `peers` judges gone.
/// Returns how many were removed.
pub async fn reap_orphans(docker: &Docker, peers: &Peers) -> Result<usize, bollard::errors::Error> {
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&HashMap::from([("label", vec![LABEL_INSTANCE])]))
        .build();
    let mut removed = 0;
    for container in docker.list_containers(Some(options)).await? {
        let labels = container.labels.unwrap_or_default();
        let why = match judge(&labels, peers) {
            Verdict::Gone(why) => why,
            Verdict::Alive => continue,
            Verdict::Unknown(why) => {
                tracing::debug!(container = ?container.id, "left alone: {why}");
                continue;
            }
        };
        let Some(id) = container.id else { continue };
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match docker.remove_container(&id, Some(options)).await {
            Ok(()) => {
                tracing::info!(container = %id, "removed an orphaned demo container: {why}");
                removed += 1
            }
            // Its owner removing it at the same moment is no failure.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => {
                tracing::warn!(container = %id, "could not remove an orphaned container: {e}")
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(name: &str, started_at_ms: i64) -> Replica {
        Replica {
            name: name.into(),
            started_at_ms,
            store: "cluster/db/schema".into(),
        }
    }

    /// Replica `me`'s view: `other` last heart-beat at `beat`, now is 10 s.
    fn view_of(me: &Replica, other: (&str, i64, i64)) -> Peers {
        Peers {
            pid_ns: Some("pid:[111]".into()),
            me: Some(me.clone()),
            hosts: HashMap::from([
                (me.name.clone(), (me.started_at_ms, 10_000)),
                (other.0.into(), (other.1, other.2)),
            ]),
            now_ms: 10_000,
            lost_after_ms: 3_000,
        }
    }

    #[test]
    fn this_process_is_alive_and_a_made_up_one_is_not() {
        let me = Owner::current();
        assert!(me.start_ticks > 0);
        assert!(me.pid_ns.is_some());
        let lone = Peers::lone();
        assert_eq!(judge(&me.labels(), &lone), Verdict::Alive);
        let mut other = me.labels();
        other.insert(LABEL_START.into(), (me.start_ticks + 1).to_string());
        assert!(
            matches!(judge(&other, &lone), Verdict::Gone(_)),
            "same PID, other start time: a reused PID"
        );
        assert!(matches!(judge(&HashMap::new(), &lone), Verdict::Gone(_)));
    }

    /// Two replicas in containers: each numbers its processes in its own
    /// PID namespace, so the other's PID label names, here, some other
    /// process (or none). The PID rule alone (the code before) removed a
    /// live replica's container; the store's heartbeat keeps it.
    #[test]
    fn a_live_replica_in_another_pid_namespace_keeps_its_containers() {
        let a = replica("replica-1", 1_000);
        let b_owner = Owner {
            // PID 1 here is some other process, with another start time.
            pid: 1,
            start_ticks: start_ticks(1).unwrap_or(0) + 12_345,
            pid_ns: Some("pid:[222]".into()),
            ..Owner::current()
        }
        .as_replica(Some(replica("replica-2", 2_000)));
        let labels = b_owner.labels();
        // The old judgement: PID 1 started at another time, so "dead".
        assert_ne!(start_ticks(1), Some(b_owner.start_ticks));
        // Fresh heartbeat 1 s ago: alive.
        assert_eq!(
            judge(&labels, &view_of(&a, ("replica-2", 2_000, 9_000))),
            Verdict::Alive
        );
        // Silent for 5 s (lost after 3): gone.
        assert!(matches!(
            judge(&labels, &view_of(&a, ("replica-2", 2_000, 5_000))),
            Verdict::Gone(_)
        ));
        // Restarted since (its row has a later start): that run is gone.
        assert!(matches!(
            judge(&labels, &view_of(&a, ("replica-2", 4_000, 9_900))),
            Verdict::Gone(_)
        ));
        // A replica of another store: not ours to judge.
        let mut foreign = labels.clone();
        foreign.insert(LABEL_STORE.into(), "another/db/schema".into());
        assert!(matches!(
            judge(&foreign, &view_of(&a, ("replica-2", 2_000, 5_000))),
            Verdict::Unknown(_)
        ));
        // A lone server cannot judge a replica's container.
        assert!(matches!(
            judge(&labels, &Peers::lone()),
            Verdict::Unknown(_)
        ));
    }

    #[test]
    fn a_replica_removes_its_own_earlier_runs_containers_only() {
        let now = replica("replica-1", 5_000);
        let before = Owner::current().as_replica(Some(replica("replica-1", 1_000)));
        let mine = Owner::current().as_replica(Some(now.clone()));
        let peers = view_of(&now, ("replica-2", 2_000, 9_000));
        assert!(matches!(judge(&before.labels(), &peers), Verdict::Gone(_)));
        assert_eq!(judge(&mine.labels(), &peers), Verdict::Alive);
    }

    /// In this PID namespace the process is seen: a replica whose PID has
    /// exited is gone even while its last heartbeat is fresh.
    #[test]
    fn a_replica_in_this_pid_namespace_is_judged_by_its_pid() {
        let a = replica("replica-1", 1_000);
        let here = Owner::current().as_replica(Some(replica("replica-2", 2_000)));
        let mut peers = view_of(&a, ("replica-2", 2_000, 9_900));
        peers.pid_ns = here.pid_ns.clone();
        assert_eq!(judge(&here.labels(), &peers), Verdict::Alive);
        let mut exited = here.labels();
        exited.insert(LABEL_START.into(), (here.start_ticks + 1).to_string());
        assert!(matches!(judge(&exited, &peers), Verdict::Gone(_)));
    }

    /// A lone server's PID means something only in its own namespace.
    #[test]
    fn a_lone_server_in_another_pid_namespace_is_left_alone() {
        let other = Owner {
            pid: 1,
            start_ticks: 1,
            pid_ns: Some("pid:[4]".into()),
            ..Owner::current()
        };
        assert!(matches!(
            judge(&other.labels(), &Peers::lone()),
            Verdict::Unknown(_)
        ));
    }
}
