//! The checker's own tests: a clean hand-made history passes, and each violation kind planted
//! in it is reported (so the checker is proven able to fail).

use std::collections::BTreeMap;

use raftlock::client::LockMode;

use crate::checker::{check, Final, Verdict};
use crate::history::{record, Op, OpKind, Outcome};

/// Builds histories op by op; ids are positions (1-based), as in a real history.
#[derive(Default)]
struct Builder {
    ops: Vec<Op>,
}

impl Builder {
    fn push(&mut self, client: &str, session: u64, kind: OpKind, span: (u64, u64)) -> usize {
        let id = self.ops.len() as u64 + 1;
        let mut op = Op::new(id, client, session, kind, span.0);
        op.complete = span.1;
        op.outcome = Outcome::Ok;
        self.ops.push(op);
        self.ops.len() - 1
    }

    fn acquire(&mut self, client: &str, session: u64, fence: u64, span: (u64, u64)) -> usize {
        let i = self.push(
            client,
            session,
            OpKind::Acquire {
                lock: "fa".into(),
                mode: LockMode::Exclusive,
            },
            span,
        );
        self.ops[i].fence = Some(fence);
        i
    }

    /// An acknowledged append at `offset` of `file`; returns (index, record bytes).
    fn append(
        &mut self,
        client: &str,
        file: &str,
        fence: u64,
        offset: u64,
        span: (u64, u64),
    ) -> (usize, Vec<u8>) {
        let id = self.ops.len() as u64 + 1;
        let data = record(id, client, fence);
        let i = self.push(
            client,
            1,
            OpKind::Append {
                file: file.into(),
                lock: "fa".into(),
                data: data.clone(),
                must_fail: None,
            },
            span,
        );
        self.ops[i].fence = Some(fence);
        self.ops[i].offset = Some(offset);
        self.ops[i].answers = vec![offset];
        (i, data)
    }
}

/// Every node holds `bytes` as `file`.
fn same_everywhere(file: &str, bytes: &[u8]) -> Final {
    let copies: BTreeMap<u64, Vec<u8>> = (1..=5).map(|n| (n, bytes.to_vec())).collect();
    Final {
        files: [(file.to_string(), copies)].into_iter().collect(),
        ..Final::default()
    }
}

/// A clean history: two grants in order, each appending once, and a read after both.
fn clean() -> (Builder, Vec<u8>) {
    let mut b = Builder::default();
    b.acquire("a", 1, 10, (0, 10));
    let (_, r1) = b.append("a", "fa.log", 10, 0, (11, 20));
    b.acquire("b", 2, 15, (30, 40));
    let (_, r2) = b.append("b", "fa.log", 15, r1.len() as u64, (41, 50));
    let file = [r1.clone(), r2.clone()].concat();
    let read = b.push(
        "reader",
        0,
        OpKind::Read {
            file: "fa.log".into(),
            offset: 0,
        },
        (60, 70),
    );
    b.ops[read].size = Some(file.len() as u64);
    b.ops[read].data = file.clone();
    (b, file)
}

fn assert_only(verdict: &Verdict, kind: &str) {
    assert!(
        verdict.count(kind) > 0,
        "{kind} not reported: {:?}",
        verdict.violations
    );
    assert_eq!(
        verdict.violations.len(),
        1,
        "only {kind} expected: {:?}",
        verdict.violations
    );
}

#[test]
fn a_clean_history_passes() {
    let (b, file) = clean();
    let verdict = check(&b.ops, &same_everywhere("fa.log", &file));
    assert!(verdict.clean(), "{:?}", verdict.violations);
    assert!(verdict.unfenced_overlaps.is_empty());
}

#[test]
fn a_fence_lower_than_an_earlier_grant_is_reported() {
    let (mut b, file) = clean();
    b.acquire("c", 3, 12, (100, 110));
    assert_only(
        &check(&b.ops, &same_everywhere("fa.log", &file)),
        "fence-order",
    );
}

#[test]
fn a_fence_granted_twice_is_reported() {
    let (mut b, file) = clean();
    // Concurrent with the first grant, so only the duplicate is wrong.
    b.acquire("c", 3, 10, (0, 12));
    assert_only(
        &check(&b.ops, &same_everywhere("fa.log", &file)),
        "fence-duplicate",
    );
}

#[test]
fn an_older_holder_appending_after_a_newer_one_is_reported() {
    let (mut b, file) = clean();
    // "a" (fence 10) appends again after "b" (fence 15) did.
    let (_, r3) = b.append("a", "fa.log", 10, file.len() as u64, (80, 90));
    let file = [file, r3].concat();
    assert_only(
        &check(&b.ops, &same_everywhere("fa.log", &file)),
        "grant-overlap-both-appended",
    );
}

#[test]
fn a_lost_acknowledged_append_is_reported() {
    let (mut b, file) = clean();
    b.append("b", "fa.log", 15, file.len() as u64, (80, 90));
    assert_only(
        &check(&b.ops, &same_everywhere("fa.log", &file)),
        "lost-append",
    );
}

#[test]
fn an_append_applied_twice_is_reported() {
    let (mut b, file) = clean();
    let (_, r3) = b.append("b", "fa.log", 15, file.len() as u64, (80, 90));
    let file = [file, r3.clone(), r3].concat();
    assert_only(
        &check(&b.ops, &same_everywhere("fa.log", &file)),
        "duplicate-append",
    );
}

#[test]
fn an_append_at_another_offset_is_reported() {
    let (mut b, file) = clean();
    let (i, r3) = b.append("b", "fa.log", 15, file.len() as u64, (80, 90));
    b.ops[i].offset = Some(3);
    b.ops[i].answers = vec![3];
    let file = [file, r3].concat();
    assert_only(
        &check(&b.ops, &same_everywhere("fa.log", &file)),
        "wrong-offset",
    );
}

#[test]
fn a_refused_append_found_in_the_file_is_reported() {
    let (mut b, file) = clean();
    let (i, r3) = b.append("b", "fa.log", 15, file.len() as u64, (80, 90));
    b.ops[i].outcome = Outcome::Fail("StaleFence".into());
    let file = [file, r3].concat();
    assert_only(
        &check(&b.ops, &same_everywhere("fa.log", &file)),
        "failed-append-applied",
    );
}

#[test]
fn an_append_that_had_to_fail_is_reported_when_applied_or_acknowledged() {
    let (mut b, file) = clean();
    let (i, r3) = b.append("b", "fa.log", 15, file.len() as u64, (80, 90));
    if let OpKind::Append { must_fail, .. } = &mut b.ops[i].kind {
        *must_fail = Some("expired session / stale fence");
    }
    let applied = [file.clone(), r3].concat();
    assert_only(
        &check(&b.ops, &same_everywhere("fa.log", &applied)),
        "must-fail-accepted",
    );
    // Acknowledged but not applied is as wrong.
    assert_only(
        &check(&b.ops, &same_everywhere("fa.log", &file)),
        "must-fail-accepted",
    );
}

#[test]
fn a_record_no_op_wrote_is_reported() {
    let (b, file) = clean();
    let file = [file, b"garbage\n".to_vec()].concat();
    assert_only(
        &check(&b.ops, &same_everywhere("fa.log", &file)),
        "phantom-record",
    );
}

#[test]
fn resends_answered_with_different_offsets_are_reported() {
    let (mut b, file) = clean();
    b.ops[1].answers = vec![0, 42];
    assert_only(
        &check(&b.ops, &same_everywhere("fa.log", &file)),
        "exactly-once-answers",
    );
}

#[test]
fn a_read_missing_an_acknowledged_append_is_reported() {
    let (mut b, file) = clean();
    // Invoked after both appends were acknowledged, but sees only the first record.
    let first = b.ops[1].data_len();
    let read = b.push(
        "reader",
        0,
        OpKind::Read {
            file: "fa.log".into(),
            offset: 0,
        },
        (100, 110),
    );
    b.ops[read].size = Some(first);
    b.ops[read].data = file[..first as usize].to_vec();
    assert_only(
        &check(&b.ops, &same_everywhere("fa.log", &file)),
        "stale-read",
    );
}

#[test]
fn a_read_of_bytes_the_file_does_not_hold_is_reported() {
    let (mut b, file) = clean();
    b.ops[4].data[0] ^= 1;
    assert_only(
        &check(&b.ops, &same_everywhere("fa.log", &file)),
        "read-mismatch",
    );
}

#[test]
fn waiters_granted_out_of_queue_order_are_reported() {
    let (mut b, file) = clean();
    // Sessions 7 and 8 both wait during the listing, 7 ahead, but 8 gets the lower fence.
    b.acquire("q-0", 7, 40, (100, 300));
    b.acquire("q-1", 8, 30, (110, 250));
    b.push(
        "q-observer",
        0,
        OpKind::Queue {
            lock: "fa".into(),
            waiters: vec![7, 8],
        },
        (150, 160),
    );
    assert_only(&check(&b.ops, &same_everywhere("fa.log", &file)), "fifo");
}

#[test]
fn copies_that_differ_are_reported() {
    let (b, file) = clean();
    let mut fin = same_everywhere("fa.log", &file);
    let copies = fin.files.get_mut("fa.log").expect("file");
    copies.insert(3, file[..file.len() - 4].to_vec());
    assert_only(&check(&b.ops, &fin), "files-differ");
}

#[test]
fn no_convergence_and_pending_ops_are_reported() {
    let (mut b, file) = clean();
    let mut fin = same_everywhere("fa.log", &file);
    fin.not_converged = Some("node 4 at applied 3 of 9".into());
    assert_only(&check(&b.ops, &fin), "not-converged");
    b.ops[3].outcome = Outcome::Pending;
    b.ops[3].complete = u64::MAX;
    let fin = Final {
        pending: vec![4],
        ..same_everywhere("fa.log", &file)
    };
    assert_only(&check(&b.ops, &fin), "pending-after-heal");
}

#[test]
fn the_negative_control_sees_overlapping_unfenced_holders() {
    let (mut b, file) = clean();
    let unfenced = |b: &mut Builder, client: &str, fence: u64, at: u64| {
        let i = b.push(client, 1, OpKind::Unfenced { lock: "ph".into() }, (at, at));
        b.ops[i].fence = Some(fence);
    };
    // Holder 20 wrote at 100 and, after its pause, at 400; holder 21 wrote at 300.
    unfenced(&mut b, "ph-P", 20, 100);
    unfenced(&mut b, "ph-W", 21, 300);
    unfenced(&mut b, "ph-P", 20, 400);
    let verdict = check(&b.ops, &same_everywhere("fa.log", &file));
    assert!(verdict.clean(), "{:?}", verdict.violations);
    assert_eq!(verdict.unfenced_overlaps.len(), 1);
    // Holders one after the other do not overlap.
    let (mut b, file) = clean();
    unfenced(&mut b, "ph-P", 20, 100);
    unfenced(&mut b, "ph-W", 21, 300);
    let verdict = check(&b.ops, &same_everywhere("fa.log", &file));
    assert!(verdict.unfenced_overlaps.is_empty());
}

impl Op {
    /// The length of an append's record.
    fn data_len(&self) -> u64 {
        match &self.kind {
            OpKind::Append { data, .. } => data.len() as u64,
            _ => 0,
        }
    }
}
