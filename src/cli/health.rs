//! `raftlock cluster health`: every member's health and lag, with an exit status for scripts
//! and monitors (like `etcdctl endpoint health`).
//!
//! It surveys the members as `cluster status` does (`commands::survey`: the membership from
//! any member, then each member's own `Status` with short timeouts). A member is healthy when
//! it answered (its driver loop turns: the answer comes from it), knows a leader, and has
//! applied the answering leader's commit index less at most `--max-lag` entries. With no
//! leader among the answers no member is healthy: nobody can accept writes.

use super::commands::{survey, Survey};
use super::output::{print_table, say, say_json};
use super::shapes;
use super::{Failure, EXIT_ERROR, EXIT_OK};
use crate::client::Client;

/// Runs `cluster health`: prints the table or `--json` shape; exit 0 when all are healthy.
pub(super) async fn cluster_health(
    client: &Client,
    servers: &[String],
    max_lag: u64,
    json: bool,
) -> Result<u8, Failure> {
    let Survey {
        members,
        answers,
        leader,
    } = survey(client, servers).await?;
    let rows: Vec<shapes::MemberHealth> = answers
        .into_iter()
        .filter_map(|answer| {
            let member = members.iter().find(|m| m.addr == answer.addr);
            let node_id = match (&answer.status, member) {
                (Ok(status), _) => status.node_id,
                (Err(_), Some(member)) => member.node_id,
                // A configured server outside the membership that did not answer.
                (Err(_), None) => return None,
            };
            let took_ms = answer.took.as_millis() as u64;
            let row = match &answer.status {
                Err(error) => shapes::MemberHealth {
                    node_id,
                    addr: answer.addr,
                    healthy: false,
                    reachable: false,
                    role: None,
                    term: None,
                    applied_index: None,
                    lag: None,
                    took_ms,
                    error: Some(format!("unreachable: {error}")),
                },
                Ok(status) => {
                    let lag = leader
                        .as_ref()
                        .map(|l| l.commit_index.saturating_sub(status.applied_index));
                    let error = if member.is_none() {
                        Some("not a member".to_string())
                    } else if status.leader.is_none() {
                        Some("no leader known".to_string())
                    } else {
                        match lag {
                            None => Some("no leader reachable".to_string()),
                            Some(lag) if lag > max_lag => Some(format!(
                                "lags {lag} entries behind the leader (more than --max-lag {max_lag})"
                            )),
                            Some(_) => None,
                        }
                    };
                    shapes::MemberHealth {
                        node_id,
                        addr: answer.addr,
                        healthy: error.is_none(),
                        reachable: true,
                        role: Some(status.role.clone()),
                        term: Some(status.term),
                        applied_index: Some(status.applied_index),
                        lag,
                        took_ms,
                        error,
                    }
                }
            };
            Some(row)
        })
        .collect();
    let healthy = !rows.is_empty() && rows.iter().all(|row| row.healthy);
    let status = if healthy { EXIT_OK } else { EXIT_ERROR };
    if json {
        say_json(&shapes::ClusterHealth {
            healthy,
            leader: leader.as_ref().map(|l| l.node_id),
            max_lag,
            members: rows,
        });
        return Ok(status);
    }
    let dash = || "-".to_string();
    let table: Vec<[String; 8]> = rows
        .iter()
        .map(|row| {
            [
                row.node_id.to_string(),
                row.addr.clone(),
                if row.healthy { "healthy" } else { "unhealthy" }.to_string(),
                row.role.clone().unwrap_or_else(dash),
                row.applied_index.map_or_else(dash, |i| i.to_string()),
                row.lag.map_or_else(dash, |l| l.to_string()),
                format!("{}ms", row.took_ms),
                row.error.clone().unwrap_or_else(dash),
            ]
        })
        .collect();
    print_table(
        [
            "NODE", "ADDR", "HEALTH", "ROLE", "APPLIED", "LAG", "TOOK", "ERROR",
        ],
        &table,
    );
    let unhealthy = rows.iter().filter(|row| !row.healthy).count();
    say("");
    if healthy {
        say(format!("cluster is healthy ({} members)", rows.len()));
    } else {
        say(format!(
            "cluster is unhealthy: {unhealthy} of {} members",
            rows.len()
        ));
    }
    Ok(status)
}
