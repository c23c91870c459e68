//! Labels on every container stacklab starts, and the start-up sweep that
//! removes those a crashed server left behind.
//!
//! A container belongs to a server process, identified by its PID *and* its
//! start time (PIDs are reused). Containers of a live stacklab (another
//! instance, a test) are left alone; those of a dead one are removed.

use std::collections::HashMap;

use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;

/// Label naming the owning server process.
pub const LABEL_INSTANCE: &str = "stacklab.instance";
const LABEL_PID: &str = "stacklab.owner-pid";
const LABEL_START: &str = "stacklab.owner-start";

/// The server process that owns a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// A random id of this server instance.
    pub instance: String,
    /// Its host PID.
    pub pid: u32,
    /// Its start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_ticks: u64,
}

impl Owner {
    /// This process.
    pub fn current() -> Owner {
        let pid = std::process::id();
        Owner {
            instance: uuid::Uuid::new_v4().simple().to_string(),
            pid,
            start_ticks: start_ticks(pid).unwrap_or(0),
        }
    }

    /// The labels to put on a container.
    pub fn labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_INSTANCE.into(), self.instance.clone()),
            (LABEL_PID.into(), self.pid.to_string()),
            (LABEL_START.into(), self.start_ticks.to_string()),
        ])
    }

    fn is_alive(labels: &HashMap<String, String>) -> bool {
        let pid = labels.get(LABEL_PID).and_then(|p| p.parse::<u32>().ok());
        let start = labels.get(LABEL_START).and_then(|s| s.parse::<u64>().ok());
        match (pid, start) {
            (Some(pid), Some(start)) => start_ticks(pid) == Some(start),
            _ => false,
        }
    }
}

/// Field 22 of `/proc/PID/stat` (after the parenthesised command name,
/// which may itself contain spaces).
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    // after_comm starts at field 3 (state); starttime is field 22.
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// Removes every stacklab container whose owning server is no longer
/// running. Returns how many were removed.
pub async fn reap_orphans(docker: &Docker) -> Result<usize, bollard::errors::Error> {
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&HashMap::from([("label", vec![LABEL_INSTANCE])]))
        .build();
    let mut removed = 0;
    for container in docker.list_containers(Some(options)).await? {
        let labels = container.labels.unwrap_or_default();
        if Owner::is_alive(&labels) {
            continue;
        }
        let Some(id) = container.id else { continue };
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match docker.remove_container(&id, Some(options)).await {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(container = %id, "could not remove an orphaned container: {e}")
            }
        }
    }
    if removed > 0 {
        tracing::info!(
            "removed {removed} container(s) left by a stacklab server that is no longer running"
        );
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_made_up_one_is_not() {
        let me = Owner::current();
        assert!(me.start_ticks > 0);
        assert!(Owner::is_alive(&me.labels()));
        let mut other = me.labels();
        other.insert(LABEL_START.into(), (me.start_ticks + 1).to_string());
        assert!(
            !Owner::is_alive(&other),
            "same PID, other start time: a reused PID"
        );
        assert!(!Owner::is_alive(&HashMap::new()));
    }
}
