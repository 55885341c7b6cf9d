//! One handler per subcommand (except `lock`, in [`super::exec`]): each runs its requests and
//! prints the result as text or `--json`, returning the exit status.

use std::io::{Read as _, Write as _};
use std::time::Duration;

use super::duration::Span;
use super::output::{kind, mode_name, print_table, say, say_json, shell_quote};
use super::shapes;
use super::{
    mode, wait, AcquireArgs, AppendArgs, ClusterCommand, Failure, FilesArgs, LocksArgs, ReadArgs,
    ReleaseArgs, RevokeArgs, RmArgs, SessionArgs, TruncateArgs, EXIT_ERROR, EXIT_OK,
    EXIT_SESSION_LOST, EXIT_USAGE,
};
use crate::client::{error_chain, Client, ClientOptions, Error, Session, SessionCredentials};
use crate::lockspace::Fence;
use crate::protocol::{MemberStatus, StatusInfo, MAX_APPEND, MAX_READ};

pub(super) fn resume(client: &Client, args: &SessionArgs) -> Session {
    client.resume_session(
        SessionCredentials {
            id: args.session,
            token: args.token,
            // Unused without background keep-alives.
            ttl: Duration::ZERO,
        },
        false,
    )
}

/// Opens a session and acquires `name` in it. If the lock is not granted the session is closed
/// (best effort: the lock's failure is what the user needs to see) and the failure returned.
pub(super) async fn open_and_acquire(
    client: &Client,
    ttl: Duration,
    name: &str,
    shared: bool,
    wait_for: Span,
    hold: Option<Duration>,
) -> Result<(Session, Fence), Failure> {
    let session = client.open_session(ttl).await?;
    match session
        .acquire(name, mode(shared), wait(wait_for), hold)
        .await
    {
        Ok(fence) => Ok((session, fence)),
        Err(error) => {
            let failure = Failure::from(error);
            if let Err(close) = session.close().await {
                tracing::debug!(error = %error_chain(&close), "closing the session after a failed acquire");
            }
            Err(failure)
        }
    }
}

pub(super) async fn acquire(client: &Client, args: AcquireArgs, json: bool) -> Result<u8, Failure> {
    let (session, fence) = open_and_acquire(
        client,
        args.ttl,
        &args.name,
        args.shared,
        args.wait,
        args.hold,
    )
    .await?;
    let c = session.credentials();
    if json {
        say_json(&shapes::Acquired {
            lock: &args.name,
            session: c.id,
            token: c.token,
            fence,
            ttl_ms: u64::try_from(c.ttl.as_millis()).unwrap_or(u64::MAX),
        });
    } else {
        say(format!(
            "export RAFTLOCK_LOCK={} RAFTLOCK_SESSION={} RAFTLOCK_TOKEN={} RAFTLOCK_FENCE={}",
            shell_quote(&args.name),
            c.id,
            c.token,
            fence
        ));
    }
    if let Err(error) = super::output::finish() {
        // Nobody learnt the credentials: close the session rather than leave the lock held
        // until its lease runs out.
        if let Err(close) = session.close().await {
            tracing::debug!(error = %error_chain(&close), "closing the unprinted session");
        }
        return Err(Failure::stdout(error));
    }
    // Leave the session open: dropping the handle stops only this process's keep-alives.
    drop(session);
    Ok(EXIT_OK)
}

pub(super) async fn release(client: &Client, args: ReleaseArgs, json: bool) -> Result<u8, Failure> {
    let session = resume(client, &args.session);
    session.release(&args.name).await?;
    if args.close {
        session.close().await?;
    }
    if json {
        say_json(&shapes::Released {
            lock: &args.name,
            session: args.session.session,
            released: true,
            closed: args.close,
        });
    }
    Ok(EXIT_OK)
}

pub(super) async fn close(client: &Client, args: SessionArgs, json: bool) -> Result<u8, Failure> {
    resume(client, &args).close().await?;
    if json {
        say_json(&shapes::Closed {
            session: args.session,
            closed: true,
        });
    }
    Ok(EXIT_OK)
}

pub(super) async fn keepalive(
    client: &Client,
    args: SessionArgs,
    json: bool,
) -> Result<u8, Failure> {
    let ttl = resume(client, &args).keep_alive().await?;
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    if json {
        say_json(&shapes::Renewed {
            session: args.session,
            ttl_ms,
        });
    } else {
        say(format!("session {} renewed for {ttl_ms}ms", args.session));
    }
    Ok(EXIT_OK)
}

pub(super) async fn append(client: &Client, args: AppendArgs, json: bool) -> Result<u8, Failure> {
    let data = append_data(&args)?;
    let session = resume(client, &args.session);
    let len = data.len();
    let (offset, size) = session
        .append(&args.file, (args.lock.as_str(), args.fence), data)
        .await?;
    if json {
        say_json(&shapes::Appended {
            file: &args.file,
            offset,
            len: len as u64,
            size,
        });
    } else {
        say(format!(
            "appended {len} bytes to {} at offset {offset} (size {size})",
            args.file
        ));
    }
    Ok(EXIT_OK)
}

/// The bytes `append` sends: from --data-file, stdin (`-`), or DATA (escapes expanded with
/// -e). More than the protocol's maximum is a usage error, found before anything is sent.
fn append_data(args: &AppendArgs) -> Result<Vec<u8>, Failure> {
    let stdin = || -> Result<Vec<u8>, Failure> {
        let mut data = Vec::new();
        std::io::stdin()
            .read_to_end(&mut data)
            .map_err(|e| Failure::with(EXIT_ERROR, format!("cannot read stdin: {e}")))?;
        Ok(data)
    };
    let data = match (&args.data_file, args.data.as_deref()) {
        (Some(path), _) if path.as_os_str() == "-" => stdin()?,
        (Some(path), _) => std::fs::read(path).map_err(|e| {
            Failure::with(EXIT_ERROR, format!("cannot read {}: {e}", path.display()))
        })?,
        (None, Some("-")) => stdin()?,
        (None, Some(text)) if args.escapes => super::escapes::expand(text),
        (None, Some(text)) => text.as_bytes().to_vec(),
        (None, None) => unreachable!("clap requires DATA without --data-file"),
    };
    if data.len() > MAX_APPEND {
        return Err(Failure::with(
            EXIT_USAGE,
            format!(
                "the data is {} bytes; one append takes at most {MAX_APPEND} bytes (1 MiB)",
                data.len()
            ),
        ));
    }
    Ok(data)
}

pub(super) async fn read(client: &Client, args: ReadArgs, json: bool) -> Result<u8, Failure> {
    let mut data = Vec::new();
    let mut offset = args.offset;
    let mut size;
    loop {
        let want = match args.len {
            Some(len) => (len - data.len() as u64).min(MAX_READ),
            None => MAX_READ,
        };
        let (chunk, total) = client.read(&args.file, offset, want, args.stale).await?;
        size = total;
        offset += chunk.len() as u64;
        let done = chunk.is_empty() || offset >= total;
        data.extend_from_slice(&chunk);
        if done || args.len.is_some_and(|len| data.len() as u64 >= len) {
            break;
        }
    }
    if json {
        say_json(&shapes::ReadData::new(&args.file, args.offset, size, data));
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(&data)
            .and_then(|()| out.flush())
            .map_err(Failure::stdout)?;
    }
    Ok(EXIT_OK)
}

pub(super) async fn truncate(
    client: &Client,
    args: TruncateArgs,
    json: bool,
) -> Result<u8, Failure> {
    let w = &args.writer;
    let size = resume(client, &w.session)
        .truncate(&args.file, (w.lock.as_str(), w.fence), args.size)
        .await?;
    if json {
        say_json(&shapes::Truncated {
            file: &args.file,
            size,
        });
    } else if size < args.size {
        say(format!(
            "{} is {size} bytes, not longer than {}: nothing cut",
            args.file, args.size
        ));
    } else {
        say(format!("truncated {} to {size} bytes", args.file));
    }
    Ok(EXIT_OK)
}

pub(super) async fn rm(client: &Client, args: RmArgs, json: bool) -> Result<u8, Failure> {
    let w = &args.writer;
    let size = resume(client, &w.session)
        .delete(&args.file, (w.lock.as_str(), w.fence))
        .await?;
    if json {
        say_json(&shapes::Deleted {
            file: &args.file,
            deleted: true,
            size,
        });
    } else {
        say(format!("deleted {} ({size} bytes)", args.file));
    }
    Ok(EXIT_OK)
}

pub(super) async fn files(client: &Client, args: FilesArgs, json: bool) -> Result<u8, Failure> {
    let files = client.files(args.prefix.as_deref(), args.stale).await?;
    if json {
        say_json(&files.iter().map(shapes::File::from).collect::<Vec<_>>());
        return Ok(EXIT_OK);
    }
    if files.is_empty() {
        say("no files");
        return Ok(EXIT_OK);
    }
    let rows: Vec<[String; 4]> = files
        .iter()
        .map(|f| {
            [
                f.name.clone(),
                f.size.to_string(),
                f.lock.clone().unwrap_or_else(|| "-".into()),
                f.fence.map_or("-".into(), |fence| fence.to_string()),
            ]
        })
        .collect();
    print_table(["FILE", "SIZE", "LOCK", "FENCE"], &rows);
    Ok(EXIT_OK)
}

pub(super) async fn locks(client: &Client, args: LocksArgs, json: bool) -> Result<u8, Failure> {
    let locks = client.locks(args.prefix.as_deref(), args.stale).await?;
    if json {
        say_json(&locks.iter().map(shapes::Lock::from).collect::<Vec<_>>());
        return Ok(EXIT_OK);
    }
    if locks.is_empty() {
        say("no locks held or awaited");
        return Ok(EXIT_OK);
    }
    // Times are the leader's; "?" where it does not know them (a stale read, or a grant
    // older than the leader's term).
    let secs =
        |ms: Option<u64>| ms.map_or("?".to_string(), |ms| format!("{:.1}s", ms as f64 / 1e3));
    let rows: Vec<[String; 6]> = locks
        .iter()
        .map(|l| {
            [
                l.name.clone(),
                l.mode.map_or("-", mode_name).to_string(),
                l.holders
                    .iter()
                    .map(|h| {
                        let left = match h.hold_left_ms {
                            Some(ms) => format!(", {} left", secs(Some(ms))),
                            None => String::new(),
                        };
                        format!("{}:{} ({}{left})", h.session, h.fence, secs(h.held_ms))
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                l.holders
                    .iter()
                    .map(|h| h.owner.as_deref().unwrap_or("-"))
                    .collect::<Vec<_>>()
                    .join("; "),
                l.waiters
                    .iter()
                    .map(|w| {
                        format!(
                            "{}:{} ({})",
                            w.session,
                            mode_name(w.mode),
                            secs(w.waited_ms)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                l.waiters
                    .iter()
                    .map(|w| w.owner.as_deref().unwrap_or("-"))
                    .collect::<Vec<_>>()
                    .join("; "),
            ]
        })
        .collect();
    print_table(
        [
            "LOCK",
            "MODE",
            "HOLDERS(session:fence (held, left))",
            "HOLDER OWNERS",
            "WAITERS(session:mode (waited))",
            "WAITER OWNERS",
        ],
        &rows,
    );
    Ok(EXIT_OK)
}

pub(super) async fn sessions(client: &Client, json: bool) -> Result<u8, Failure> {
    let sessions = client.sessions().await?;
    if json {
        say_json(
            &sessions
                .iter()
                .map(shapes::Session::from)
                .collect::<Vec<_>>(),
        );
        return Ok(EXIT_OK);
    }
    if sessions.is_empty() {
        say("no live sessions");
        return Ok(EXIT_OK);
    }
    let rows: Vec<[String; 4]> = sessions
        .iter()
        .map(|s| {
            [
                s.session.to_string(),
                format!("{}ms", s.ttl_ms),
                s.since_renewal_ms
                    .map_or_else(|| "-".to_string(), |ms| format!("{ms}ms ago")),
                s.owner.clone().unwrap_or_else(|| "-".to_string()),
            ]
        })
        .collect();
    print_table(["SESSION", "TTL", "RENEWED", "OWNER"], &rows);
    Ok(EXIT_OK)
}

pub(super) async fn revoke(client: &Client, args: RevokeArgs, json: bool) -> Result<u8, Failure> {
    let revoked = if args.force {
        client.force_revoke_session(args.session).await
    } else {
        client.revoke_session(args.session).await
    };
    match revoked {
        Ok(()) => {}
        // The daemon answers `SessionExpired` for any id with no live session: say so in the
        // terms of this command (the exit status stays the session-lost one).
        Err(Error::SessionExpired) => {
            return Err(Failure {
                code: EXIT_SESSION_LOST,
                message: format!(
                    "no live session {}: it expired, was closed, or never existed",
                    args.session
                ),
            })
        }
        Err(error) => return Err(error.into()),
    }
    if json {
        say_json(&shapes::Revoked {
            session: args.session,
            revoked: true,
            force: args.force,
        });
    } else {
        say(format!("session {} revoked", args.session));
    }
    Ok(EXIT_OK)
}

pub(super) async fn status(client: &Client, json: bool) -> Result<u8, Failure> {
    let status = client.status().await?;
    if json {
        say_json(&shapes::Status::from(&status));
        return Ok(EXIT_OK);
    }
    let leader = match (&status.leader, &status.leader_addr) {
        (Some(id), Some(addr)) => format!("{id} ({addr})"),
        (Some(id), None) => id.to_string(),
        _ => "unknown".to_string(),
    };
    say(format!("node:      {}", status.node_id));
    say(format!("role:      {}", status.role));
    say(format!("term:      {}", status.term));
    say(format!("leader:    {leader}"));
    say(format!(
        "log:       last {}, commit {}, applied {}",
        status.last_log_index, status.commit_index, status.applied_index
    ));
    say(format!("sessions:  {}", status.sessions));
    say(format!("locks:     {}", status.locks));
    let rows: Vec<[String; 4]> = status
        .members
        .iter()
        .map(|m| {
            [
                m.node_id.to_string(),
                m.addr.clone(),
                if m.voter { "voter" } else { "learner" }.to_string(),
                m.match_index.map_or("-".to_string(), |i| i.to_string()),
            ]
        })
        .collect();
    say("");
    print_table(["NODE", "ADDR", "KIND", "MATCH"], &rows);
    Ok(EXIT_OK)
}

pub(super) async fn cluster(
    client: &Client,
    servers: &[String],
    command: ClusterCommand,
    json: bool,
) -> Result<u8, Failure> {
    let changed = |index: u64, members: &[MemberStatus]| {
        if json {
            say_json(&shapes::Membership {
                index,
                members: members.iter().map(shapes::Member::from).collect(),
            });
        } else {
            let rows: Vec<[String; 3]> = members
                .iter()
                .map(|m| [m.node_id.to_string(), m.addr.clone(), kind(m).to_string()])
                .collect();
            print_table(["NODE", "ADDR", "KIND"], &rows);
        }
    };
    match command {
        ClusterCommand::Status => cluster_status(client, servers, json).await,
        ClusterCommand::Health { max_lag } => {
            super::health::cluster_health(client, servers, max_lag, json).await
        }
        ClusterCommand::Add { id, addr } => {
            let (index, members) = client.add_member(id, &addr).await?;
            changed(index, &members);
            Ok(EXIT_OK)
        }
        ClusterCommand::Remove { id } => {
            let (index, members) = client.remove_member(id).await?;
            changed(index, &members);
            Ok(EXIT_OK)
        }
        ClusterCommand::TransferLeader { id } => {
            let (leader, addr) = client.transfer_leader(id).await?;
            if json {
                say_json(&shapes::Leader {
                    leader,
                    leader_addr: addr.as_deref(),
                });
            } else {
                say(format!(
                    "leader: {leader}{}",
                    addr.map(|a| format!(" ({a})")).unwrap_or_default()
                ));
            }
            Ok(EXIT_OK)
        }
    }
}

/// One member's own answer in a [`Survey`].
pub(super) struct Answer {
    /// The address asked.
    pub addr: String,
    /// Its status, or why it did not give one.
    pub status: Result<StatusInfo, String>,
    /// How long the answer (or the failure) took.
    pub took: Duration,
}

/// What `cluster status` and `cluster health` learn: the members, each one's own answer, and
/// the leader among those answers.
pub(super) struct Survey {
    /// The membership (the leader's, if one answered).
    pub members: Vec<MemberStatus>,
    /// Every member's answer, then those of configured servers outside the membership.
    pub answers: Vec<Answer>,
    /// The answering leader of the highest term.
    pub leader: Option<StatusInfo>,
}

/// Asks any reachable server for the membership, then every member (and any configured server
/// outside it) for its own status, each with short timeouts.
pub(super) async fn survey(client: &Client, servers: &[String]) -> Result<Survey, Failure> {
    let first = client.status().await?;
    let mut members = first.members.clone();
    // Ask each member (and any configured server outside the membership) for itself.
    let options = ClientOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(1),
        retry_timeout: Duration::from_millis(1500),
        ..client.options().clone()
    };
    let mut addrs: Vec<String> = members.iter().map(|m| m.addr.clone()).collect();
    for server in servers {
        if !addrs.contains(server) {
            addrs.push(server.clone());
        }
    }
    let asks = addrs.iter().map(|addr| {
        let options = options.clone();
        let addr = addr.clone();
        async move {
            let started = std::time::Instant::now();
            let answer = async {
                let member = Client::connect(vec![addr.clone()], options).await?;
                member.status().await
            }
            .await;
            Answer {
                addr,
                status: answer.map_err(|e| error_chain(&e)),
                took: started.elapsed(),
            }
        }
    });
    let answers: Vec<Answer> = futures::future::join_all(asks).await;
    let leader = answers
        .iter()
        .filter_map(|a| a.status.as_ref().ok())
        .filter(|s| s.role == "leader")
        .max_by_key(|s| s.term)
        .cloned();
    if let Some(leader) = &leader {
        members.clone_from(&leader.members);
    }
    Ok(Survey {
        members,
        answers,
        leader,
    })
}

/// `cluster status`: the membership from any member, then every member's own status.
async fn cluster_status(client: &Client, servers: &[String], json: bool) -> Result<u8, Failure> {
    let Survey {
        members,
        answers,
        leader,
    } = survey(client, servers).await?;
    let answers: Vec<(String, Option<StatusInfo>)> = answers
        .into_iter()
        .map(|a| (a.addr, a.status.ok()))
        .collect();
    let rows: Vec<MemberRow<'_>> = answers
        .iter()
        .map(|(addr, status)| {
            let member = members.iter().find(|m| &m.addr == addr);
            let node = status
                .as_ref()
                .map(|s| s.node_id)
                .or(member.map(|m| m.node_id))
                .unwrap_or(0);
            let kind = member.map_or("not a member", kind);
            let matched = member.and_then(|m| m.match_index);
            (node, addr.clone(), kind, status.as_ref(), matched)
        })
        .filter(|(node, _, kind, status, _)| {
            // A configured server that is not a member and did not answer says nothing useful.
            *node != 0 && (*kind != "not a member" || status.is_some())
        })
        .collect();
    let lag = |status: Option<&StatusInfo>| -> Option<u64> {
        let leader = leader.as_ref()?;
        Some(leader.commit_index.saturating_sub(status?.applied_index))
    };
    if json {
        say_json(&shapes::ClusterStatus {
            leader: leader.as_ref().map(|l| l.node_id),
            term: leader.as_ref().map(|l| l.term),
            members: rows
                .iter()
                .map(
                    |(node, addr, kind, status, matched)| shapes::ClusterMember {
                        node_id: *node,
                        addr: addr.clone(),
                        kind,
                        reachable: status.is_some(),
                        role: status.map(|s| s.role.clone()),
                        term: status.map(|s| s.term),
                        commit_index: status.map(|s| s.commit_index),
                        applied_index: status.map(|s| s.applied_index),
                        match_index: *matched,
                        lag: lag(*status),
                    },
                )
                .collect(),
        });
        return Ok(EXIT_OK);
    }
    match &leader {
        Some(l) => say(format!(
            "leader: {} ({}), term {}",
            l.node_id,
            addrs_of(&members, l.node_id),
            l.term
        )),
        None => say("leader: none reachable (election in progress, or no quorum)"),
    }
    say("");
    let dash = || "-".to_string();
    let table: Vec<[String; 9]> = rows
        .iter()
        .map(|(node, addr, kind, status, matched)| match status {
            Some(s) => [
                node.to_string(),
                addr.clone(),
                kind.to_string(),
                s.role.clone(),
                s.term.to_string(),
                s.commit_index.to_string(),
                s.applied_index.to_string(),
                matched.map_or_else(dash, |m| m.to_string()),
                lag(Some(s)).map_or_else(dash, |l| l.to_string()),
            ],
            None => [
                node.to_string(),
                addr.clone(),
                kind.to_string(),
                "unreachable".to_string(),
                dash(),
                dash(),
                dash(),
                matched.map_or_else(dash, |m| m.to_string()),
                dash(),
            ],
        })
        .collect();
    print_table(
        [
            "NODE", "ADDR", "KIND", "ROLE", "TERM", "COMMIT", "APPLIED", "MATCH", "LAG",
        ],
        &table,
    );
    Ok(EXIT_OK)
}

/// One row of `cluster status`: node, address, kind, its own status, match index.
type MemberRow<'a> = (
    u64,
    String,
    &'static str,
    Option<&'a StatusInfo>,
    Option<u64>,
);

fn addrs_of(members: &[MemberStatus], node: u64) -> String {
    members
        .iter()
        .find(|m| m.node_id == node)
        .map_or_else(|| "?".to_string(), |m| m.addr.clone())
}
