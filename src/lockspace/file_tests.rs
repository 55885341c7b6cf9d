//! Unit tests of the file lifecycle: `Truncate`, `Delete`, the `Files` listing and the quotas
//! carried by `Append` (see "Files" in the module essay).

use super::*;

/// Applies commands at increasing indexes to one session holding lock `l` exclusively.
struct Files {
    space: LockSpace,
    index: Index,
    seq: Seq,
    session: SessionId,
    fence: Fence,
}

impl Files {
    fn new() -> Files {
        let mut space = LockSpace::new();
        space.apply(
            1,
            &Command::OpenSession {
                nonce: 1,
                ttl_ms: 10_000,
                token: 7,
                owner: None,
                principal: None,
            },
        );
        let acquire = Command::Acquire {
            session: 1,
            seq: 1,
            lock: "l".into(),
            mode: LockMode::Exclusive,
            wait_ms: None,
            hold_ms: None,
        };
        let Outcome::Granted { fence } = space.apply(2, &acquire).outcome else {
            panic!("the lock is free");
        };
        Files {
            space,
            index: 2,
            seq: 1,
            session: 1,
            fence,
        }
    }

    fn apply(&mut self, command: &Command) -> Outcome {
        self.index += 1;
        self.space.apply(self.index, command).outcome
    }

    fn seq(&mut self) -> Seq {
        self.seq += 1;
        self.seq
    }

    fn append_cmd(&mut self, file: &str, data: &[u8], quota: Option<Quota>) -> Command {
        Command::Append {
            session: self.session,
            seq: self.seq(),
            file: file.into(),
            lock: "l".into(),
            fence: self.fence,
            data: data.to_vec(),
            quota,
        }
    }

    fn append(&mut self, file: &str, data: &[u8]) -> Outcome {
        let command = self.append_cmd(file, data, None);
        self.apply(&command)
    }

    fn truncate_cmd(&mut self, file: &str, size: u64, fence: Fence) -> Command {
        Command::Truncate {
            session: self.session,
            seq: self.seq(),
            file: file.into(),
            lock: "l".into(),
            fence,
            size,
        }
    }

    fn delete_cmd(&mut self, file: &str, fence: Fence) -> Command {
        Command::Delete {
            session: self.session,
            seq: self.seq(),
            file: file.into(),
            lock: "l".into(),
            fence,
        }
    }

    fn content(&self, file: &str) -> Option<Vec<u8>> {
        self.space
            .read(file, 0, u64::MAX)
            .map(|(data, _)| data.to_vec())
    }
}

/// Truncate cuts to the size asked, never grows, and answers the size after; reads and the
/// listing follow.
#[test]
fn truncate_cuts_and_never_grows() {
    let mut f = Files::new();
    f.append("a", b"hello world");
    let cut = f.truncate_cmd("a", 5, f.fence);
    assert_eq!(f.apply(&cut), Outcome::Truncated { size: 5 });
    assert_eq!(f.content("a").unwrap(), b"hello");
    let past = f.truncate_cmd("a", 100, f.fence);
    assert_eq!(f.apply(&past), Outcome::Truncated { size: 5 }, "no-op");
    assert_eq!(f.space.stats().file_bytes, 5);
    assert_eq!(
        f.append("a", b"!"),
        Outcome::Appended { offset: 5, size: 6 }
    );
    let empty = f.truncate_cmd("a", 0, f.fence);
    assert_eq!(f.apply(&empty), Outcome::Truncated { size: 0 });
    assert_eq!(f.content("a").unwrap(), b"", "an empty file still exists");
    let missing = f.truncate_cmd("nope", 0, f.fence);
    assert_eq!(f.apply(&missing), Outcome::NotFound);
}

/// Delete removes the file (reads find nothing); a later append creates it anew at offset 0.
#[test]
fn delete_removes_and_append_recreates() {
    let mut f = Files::new();
    f.append("a", b"abc");
    f.append("b", b"xy");
    let delete = f.delete_cmd("a", f.fence);
    assert_eq!(f.apply(&delete), Outcome::Deleted { size: 3 });
    assert_eq!(f.content("a"), None);
    assert_eq!(f.space.stats().files, 1);
    assert_eq!(f.space.stats().file_bytes, 2);
    let again = f.delete_cmd("a", f.fence);
    assert_eq!(f.apply(&again), Outcome::NotFound);
    assert_eq!(
        f.append("a", b"new"),
        Outcome::Appended { offset: 0, size: 3 }
    );
    assert_eq!(f.content("a").unwrap(), b"new");
}

/// Truncate and Delete are fenced exactly as Append: a wrong fence, a lock not held, a shared
/// grant or a revoked session change nothing.
#[test]
fn truncate_and_delete_need_the_current_exclusive_fence() {
    let mut f = Files::new();
    f.append("a", b"abc");
    let stale = f.fence + 1;
    let truncate = f.truncate_cmd("a", 1, stale);
    assert_eq!(f.apply(&truncate), Outcome::StaleFence);
    let delete = f.delete_cmd("a", stale);
    assert_eq!(f.apply(&delete), Outcome::StaleFence);
    // Another lock (not held) with the right fence number.
    let seq = f.seq();
    let other = Command::Delete {
        session: f.session,
        seq,
        file: "a".into(),
        lock: "m".into(),
        fence: f.fence,
    };
    assert_eq!(f.apply(&other), Outcome::StaleFence);
    // Even for a file that does not exist, the fence is checked first.
    let missing = f.delete_cmd("nope", stale);
    assert_eq!(f.apply(&missing), Outcome::StaleFence);
    assert_eq!(f.content("a").unwrap(), b"abc");
    // A revoked session may no longer write.
    f.apply(&Command::MarkRevoked { session: f.session });
    let revoked = f.delete_cmd("a", f.fence);
    assert_eq!(f.apply(&revoked), Outcome::Revoked);
    assert_eq!(f.content("a").unwrap(), b"abc");
}

/// A retried Truncate or Delete answers its first result and changes nothing; the same seq
/// with another request is SequenceReused.
#[test]
fn retries_replay_and_reused_seqs_are_refused() {
    let mut f = Files::new();
    f.append("a", b"hello world");
    let cut = f.truncate_cmd("a", 5, f.fence);
    assert_eq!(f.apply(&cut), Outcome::Truncated { size: 5 });
    f.append("a", b"!!");
    let before = f.content("a");
    assert_eq!(f.apply(&cut), Outcome::Truncated { size: 5 }, "replayed");
    assert_eq!(f.content("a"), before, "a replay cuts nothing");
    let Command::Truncate { seq, .. } = cut else {
        unreachable!()
    };
    let reused = Command::Truncate {
        session: f.session,
        seq,
        file: "a".into(),
        lock: "l".into(),
        fence: f.fence,
        size: 1,
    };
    assert_eq!(f.apply(&reused), Outcome::SequenceReused);
    assert_eq!(f.content("a"), before);

    let delete = f.delete_cmd("a", f.fence);
    assert_eq!(f.apply(&delete), Outcome::Deleted { size: 7 });
    f.append("a", b"z");
    assert_eq!(f.apply(&delete), Outcome::Deleted { size: 7 }, "replayed");
    assert_eq!(f.content("a").unwrap(), b"z", "a replay deletes nothing");
    let Command::Delete { seq, .. } = delete else {
        unreachable!()
    };
    let reused = Command::Delete {
        session: f.session,
        seq,
        file: "b".into(),
        lock: "l".into(),
        fence: f.fence,
    };
    assert_eq!(f.apply(&reused), Outcome::SequenceReused);
}

/// Appends within the quota carried in the entry succeed; one past it writes nothing, answers
/// the limit and the size it would reach, and so does its retry even after space is freed.
#[test]
fn quotas_refuse_growth_past_the_limits() {
    let quota = Some(Quota {
        max_file_bytes: 5,
        max_total_bytes: 8,
    });
    let mut f = Files::new();
    let fill = f.append_cmd("a", b"abcde", quota);
    assert_eq!(f.apply(&fill), Outcome::Appended { offset: 0, size: 5 });
    let over = f.append_cmd("a", b"f", quota);
    let refused = Outcome::FileQuotaExceeded { limit: 5, size: 6 };
    assert_eq!(f.apply(&over), refused);
    assert_eq!(f.content("a").unwrap(), b"abcde");
    let b = f.append_cmd("b", b"xyz", quota);
    assert_eq!(f.apply(&b), Outcome::Appended { offset: 0, size: 3 });
    let total = f.append_cmd("c", b"1", quota);
    assert_eq!(
        f.apply(&total),
        Outcome::TotalQuotaExceeded { limit: 8, size: 9 }
    );
    assert_eq!(f.content("c"), None, "a refused append creates no file");
    assert_eq!(f.space.stats().file_bytes, 8);
    // Freeing space does not change the answer of a retried seq (exactly once).
    let cut = f.truncate_cmd("a", 0, f.fence);
    f.apply(&cut);
    assert_eq!(
        f.apply(&over),
        refused,
        "the retry answers the first result"
    );
    assert_eq!(f.content("a").unwrap(), b"");
    // A new request now fits; an empty append is never refused; no quota means no limit.
    let fits = f.append_cmd("a", b"f", quota);
    assert_eq!(f.apply(&fits), Outcome::Appended { offset: 0, size: 1 });
    let tight = Some(Quota {
        max_file_bytes: 1,
        max_total_bytes: 1,
    });
    let empty = f.append_cmd("b", b"", tight);
    assert_eq!(f.apply(&empty), Outcome::Appended { offset: 3, size: 3 });
    assert_eq!(
        f.append("b", &[0; 100]),
        Outcome::Appended {
            offset: 3,
            size: 103
        }
    );
}

/// The listing shows size, lock and fence of each file's last write, filters by prefix, and
/// survives a snapshot (with the total recomputed).
#[test]
fn listing_shows_last_writes_and_survives_snapshots() {
    let mut f = Files::new();
    f.append("logs/a", b"abc");
    f.append("logs/b", b"de");
    f.append("other", b"x");
    let info = |name: &str, size, fence| FileInfo {
        name: name.into(),
        size,
        lock: Some("l".into()),
        fence: Some(fence),
    };
    let fence = f.fence;
    assert_eq!(
        f.space.file_list(Some("logs/")),
        vec![info("logs/a", 3, fence), info("logs/b", 2, fence)]
    );
    assert_eq!(f.space.file_list(None).len(), 3);
    assert_eq!(f.space.file_list(Some("zzz")), vec![]);
    let restored = LockSpace::restore(&f.space.snapshot()).expect("restores");
    assert_eq!(restored, f.space);
    assert_eq!(restored.stats().file_bytes, 6);
    assert_eq!(restored.file_list(None), f.space.file_list(None));
}
