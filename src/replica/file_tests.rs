//! The replica's part in the file quotas: the leader stamps its own limits into each `Append`
//! it proposes, and the entry's apply checks those, never the applying node's flags.

use super::tests::{code, elect, open, replica, request};
use super::*;
use crate::lockspace::{Command, Quota};
use crate::protocol::{ErrorCode, LockMode};
use crate::raft::EntryData;

fn append(id: u64, session: (u64, u64), fence: u64, data: &[u8]) -> Request {
    Request::Append {
        id,
        session: session.0,
        token: session.1,
        seq: id,
        file: "f".into(),
        lock: "l".into(),
        fence,
        data: data.to_vec(),
    }
}

/// The proposed entry carries the limits of the node that proposed it; changing this node's
/// limits between the proposal and the apply changes nothing: the entry's limits rule.
#[test]
fn appends_carry_the_proposing_leaders_quota() {
    let mut replica = replica(&[1]);
    replica.config.limits.max_file_bytes = 4;
    replica.config.limits.max_total_file_bytes = 6;
    let now = elect(&mut replica);
    let session = open(&mut replica, now, 1, 10_000);
    let acquire = Request::Acquire {
        id: 2,
        session: session.0,
        token: session.1,
        seq: 2,
        lock: "l".into(),
        mode: LockMode::Exclusive,
        wait_ms: Some(0),
        hold_ms: None,
    };
    let Response::Granted { fence, .. } = request(&mut replica, now, 2, acquire) else {
        panic!("the lock is free");
    };
    assert!(matches!(
        request(&mut replica, now, 3, append(3, session, fence, b"abcd")),
        Response::Appended { size: 4, .. }
    ));

    // Propose one byte too many, then raise the limits before the entry applies.
    replica.handle(
        now,
        Input::Request {
            ticket: 4,
            request: append(4, session, fence, b"e"),
            principal: None,
        },
    );
    replica.advance(now).expect("advance");
    let effects = replica.take_effects();
    let proposed: Vec<Command> = effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Persist {
                write: Write::Persist { append, .. },
                ..
            } => Some(append),
            _ => None,
        })
        .flatten()
        .filter_map(|entry| match &entry.data {
            EntryData::Command(bytes) => Some(rmp_serde::from_slice(bytes).expect("a command")),
            _ => None,
        })
        .collect();
    let [Command::Append { quota, .. }] = proposed.as_slice() else {
        panic!("one append proposed: {proposed:?}");
    };
    assert_eq!(
        *quota,
        Some(Quota {
            max_file_bytes: 4,
            max_total_bytes: 6
        })
    );
    replica.config.limits.max_file_bytes = 1_000;
    replica.config.limits.max_total_file_bytes = 1_000;
    let last = effects.iter().rev().find_map(|effect| match effect {
        Effect::Persist { id, .. } => Some(*id),
        _ => None,
    });
    replica.durable(now, last.expect("the proposal is written"));
    let answers = super::tests::settle(&mut replica, now);
    let answer = answers
        .iter()
        .find(|(ticket, _)| *ticket == 4)
        .map(|(_, response)| response)
        .expect("the append is answered");
    assert_eq!(code(answer), Some(ErrorCode::QuotaExceeded), "{answer:?}");

    // The next append is proposed with the new limits.
    assert!(matches!(
        request(&mut replica, now, 5, append(5, session, fence, b"e")),
        Response::Appended { size: 5, .. }
    ));
    assert_eq!(
        code(&request(
            &mut replica,
            now,
            6,
            append(4, session, fence, b"e")
        )),
        Some(ErrorCode::QuotaExceeded),
        "a retry of seq 4 answers its first result"
    );
}

/// Big appends trigger a snapshot by bytes long before `snapshot_threshold` entries pass: a
/// burst of them cannot fill the disk with log.
#[test]
fn applied_log_bytes_trigger_a_snapshot() {
    let mut replica = replica(&[1]);
    replica.config.snapshot_threshold = 1_000_000;
    replica.config.snapshot_threshold_bytes = 2_000;
    let now = elect(&mut replica);
    let session = open(&mut replica, now, 1, 10_000);
    let acquire = Request::Acquire {
        id: 2,
        session: session.0,
        token: session.1,
        seq: 2,
        lock: "l".into(),
        mode: LockMode::Exclusive,
        wait_ms: Some(0),
        hold_ms: None,
    };
    let Response::Granted { fence, .. } = request(&mut replica, now, 2, acquire) else {
        panic!("the lock is free");
    };
    for id in 3..5 {
        let answer = request(&mut replica, now, id, append(id, session, fence, &[7; 600]));
        assert!(matches!(answer, Response::Appended { .. }), "{answer:?}");
    }
    assert_eq!(
        replica.node().snapshot_meta(),
        None,
        "about 1.6 kB of log applied: below the threshold"
    );
    let answer = request(&mut replica, now, 5, append(5, session, fence, &[7; 600]));
    assert!(matches!(answer, Response::Appended { .. }), "{answer:?}");
    let meta = replica
        .node()
        .snapshot_meta()
        .expect("past 2,000 bytes of applied log a snapshot is taken");
    assert_eq!(meta.index, replica.lockspace().applied_index());
    assert_eq!(replica.applied_bytes_since_snapshot, 0);
}
