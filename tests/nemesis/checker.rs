//! The checker: judges a run's [`History`](crate::history::History) together with every node's
//! final files, and prints the summary table.
//!
//! What it asserts (issue 14, item 3), each as a violation kind:
//!
//! | kind | rule |
//! |---|---|
//! | `fence-order` | a grant acknowledged before another acquire was invoked has a smaller fence (fences are global and strictly increasing, so per lock too) |
//! | `fence-duplicate` | two acknowledged acquires never share a fence |
//! | `grant-overlap-both-appended` | in each file, the records' fences never decrease: an older holder never appended after a newer one did |
//! | `lost-append`, `duplicate-append`, `wrong-offset` | every acknowledged append is in the file exactly once, at its acknowledged offset; an indeterminate one at most once |
//! | `failed-append-applied` | an append refused definitely (stale fence...) is not in the file |
//! | `must-fail-accepted` | an append with a stale fence, a shared grant or an expired session is neither acknowledged nor applied |
//! | `phantom-record` | every byte of a file belongs to a record some op wrote |
//! | `exactly-once-answers` | every answer to resends of one (session, seq) names the same offset |
//! | `stale-read` | a linearizable read's size covers every append acknowledged before it was invoked |
//! | `read-mismatch` | what a read returned is the final file's bytes at that offset |
//! | `fifo` | two waiters seen queued in order (and alive) are granted in that order |
//! | `files-differ`, `not-converged`, `pending-after-heal` | after healing, every node has the same bytes, and every pending op completed |
//!
//! The negative control's overlaps (`unfenced-overlap`: two holders' grants overlapping on the
//! harness's own unfenced resource) are counted apart: they are expected, and their absence is
//! the failure.

use std::collections::{BTreeMap, HashMap};

use crate::history::{parse_record, Fault, Op, OpKind, Outcome};

/// What the harness collected after healing.
#[derive(Clone, Debug, Default)]
pub struct Final {
    /// Each file's bytes on each node, by file name then node id.
    pub files: BTreeMap<String, BTreeMap<u64, Vec<u8>>>,
    /// Why the nodes did not converge, if they did not.
    pub not_converged: Option<String>,
    /// Ops still pending after healing and the workers' bounded wind-down.
    pub pending: Vec<u64>,
}

/// The checker's verdict.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    /// Violations by kind, each with its descriptions.
    pub violations: BTreeMap<&'static str, Vec<String>>,
    /// The negative control's overlaps.
    pub unfenced_overlaps: Vec<String>,
}

impl Verdict {
    fn add(&mut self, kind: &'static str, what: String) {
        self.violations.entry(kind).or_default().push(what);
    }

    /// The number of violations of `kind`.
    pub fn count(&self, kind: &str) -> usize {
        self.violations.get(kind).map_or(0, Vec::len)
    }

    /// True if no real violation was found.
    pub fn clean(&self) -> bool {
        self.violations.is_empty()
    }
}

/// The file content the checks use: the longest copy (if the copies differ, that is reported).
fn canonical(fin: &Final, verdict: &mut Verdict) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for (file, copies) in &fin.files {
        let longest = copies
            .values()
            .max_by_key(|c| c.len())
            .cloned()
            .unwrap_or_default();
        for (node, copy) in copies {
            if *copy != longest {
                verdict.add(
                    "files-differ",
                    format!(
                        "{file} on node {node}: {} bytes, another node has {} (prefix: {})",
                        copy.len(),
                        longest.len(),
                        longest.starts_with(copy)
                    ),
                );
            }
        }
        out.insert(file.clone(), longest);
    }
    out
}

/// Judges `ops` against `fin`.
pub fn check(ops: &[Op], fin: &Final) -> Verdict {
    let mut verdict = Verdict::default();
    if let Some(why) = &fin.not_converged {
        verdict.add("not-converged", why.clone());
    }
    for id in &fin.pending {
        let op = &ops[*id as usize - 1];
        verdict.add(
            "pending-after-heal",
            format!("op {id} ({} by {})", op.kind.name(), op.client),
        );
    }
    let files = canonical(fin, &mut verdict);
    check_fences(ops, &mut verdict);
    check_files(ops, &files, &mut verdict);
    check_reads(ops, &files, &mut verdict);
    check_fifo(ops, &mut verdict);
    check_unfenced(ops, &mut verdict);
    verdict
}

/// `fence-order` and `fence-duplicate` over every acknowledged acquire.
fn check_fences(ops: &[Op], verdict: &mut Verdict) {
    let mut grants: Vec<&Op> = ops
        .iter()
        .filter(|o| matches!(o.kind, OpKind::Acquire { .. }) && o.ok() && o.fence.is_some())
        .collect();
    let mut by_fence: HashMap<u64, u64> = HashMap::new();
    for g in &grants {
        let fence = g.fence.expect("filtered");
        if let Some(other) = by_fence.insert(fence, g.id) {
            verdict.add(
                "fence-duplicate",
                format!("ops {other} and {} both granted fence {fence}", g.id),
            );
        }
    }
    // Sweep the invocations in time order, folding in every grant completed before each.
    let mut by_complete = grants.clone();
    by_complete.sort_by_key(|o| o.complete);
    grants.sort_by_key(|o| o.invoke);
    let mut done = 0;
    let mut max: Option<&Op> = None;
    for g in grants {
        while done < by_complete.len() && by_complete[done].complete < g.invoke {
            let c = by_complete[done];
            if max.map_or(true, |m| c.fence > m.fence) {
                max = Some(c);
            }
            done += 1;
        }
        if let Some(m) = max {
            if m.fence >= g.fence {
                verdict.add(
                    "fence-order",
                    format!(
                        "op {} ({}) got fence {:?}, but op {} ({}) had been granted {:?} before it was invoked",
                        g.id, g.client, g.fence, m.id, m.client, m.fence
                    ),
                );
            }
        }
    }
}

/// The file checks: records, offsets, exactly-once, refused appends, fence order in files.
fn check_files(ops: &[Op], files: &BTreeMap<String, Vec<u8>>, verdict: &mut Verdict) {
    // Where each op's record appears.
    let mut found: HashMap<u64, Vec<(String, u64)>> = HashMap::new();
    for (file, bytes) in files {
        let mut at = 0usize;
        let mut max_fence: Option<(u64, u64)> = None;
        while at < bytes.len() {
            let end = bytes[at..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(bytes.len(), |p| at + p + 1);
            let line = &bytes[at..end];
            let body = line.strip_suffix(b"\n").unwrap_or(line);
            let known = parse_record(body).and_then(|(id, fence)| {
                let op = ops.get((id as usize).checked_sub(1)?)?;
                match &op.kind {
                    OpKind::Append { data, file: f, .. } if data == line && f == file => {
                        Some((id, fence))
                    }
                    _ => None,
                }
            });
            match known {
                None => verdict.add(
                    "phantom-record",
                    format!(
                        "{file} at {at}: {:?}",
                        String::from_utf8_lossy(&line[..line.len().min(80)])
                    ),
                ),
                Some((id, fence)) => {
                    found.entry(id).or_default().push((file.clone(), at as u64));
                    if let Some((max, by)) = max_fence {
                        if fence < max {
                            verdict.add(
                                "grant-overlap-both-appended",
                                format!(
                                    "{file} at {at}: op {id} appended with fence {fence} after op {by} appended with fence {max}"
                                ),
                            );
                        }
                    }
                    if max_fence.map_or(true, |(m, _)| fence > m) {
                        max_fence = Some((fence, id));
                    }
                }
            }
            at = end;
        }
    }
    for op in ops {
        let OpKind::Append {
            file, must_fail, ..
        } = &op.kind
        else {
            continue;
        };
        let places = found.get(&op.id).map_or(&[][..], Vec::as_slice);
        if places.len() > 1 {
            verdict.add(
                "duplicate-append",
                format!(
                    "op {} ({}) is in {file} {} times: {places:?}",
                    op.id,
                    op.client,
                    places.len()
                ),
            );
        }
        if let Some(why) = must_fail {
            if op.ok() || !places.is_empty() {
                verdict.add(
                    "must-fail-accepted",
                    format!(
                        "op {} ({}, {why}) was {:?}, found at {places:?}",
                        op.id, op.client, op.outcome
                    ),
                );
            }
            continue;
        }
        match &op.outcome {
            Outcome::Ok => match places.first() {
                None => verdict.add(
                    "lost-append",
                    format!(
                        "op {} ({}) acknowledged at {:?} is not in {file}",
                        op.id, op.client, op.offset
                    ),
                ),
                Some((_, at)) if Some(*at) != op.offset => verdict.add(
                    "wrong-offset",
                    format!(
                        "op {} ({}) acknowledged at {:?}, found at {at}",
                        op.id, op.client, op.offset
                    ),
                ),
                Some(_) => {}
            },
            Outcome::Fail(why) if !places.is_empty() => verdict.add(
                "failed-append-applied",
                format!(
                    "op {} ({}) failed ({why}) but is in {file} at {places:?}",
                    op.id, op.client
                ),
            ),
            _ => {}
        }
        let mut answers = op.answers.clone();
        answers.dedup();
        if answers.len() > 1 || (op.ok() && answers.iter().any(|a| Some(*a) != op.offset)) {
            verdict.add(
                "exactly-once-answers",
                format!(
                    "op {} ({}) was answered offsets {:?}",
                    op.id, op.client, op.answers
                ),
            );
        }
    }
}

/// `stale-read` and `read-mismatch`.
fn check_reads(ops: &[Op], files: &BTreeMap<String, Vec<u8>>, verdict: &mut Verdict) {
    let mut acked: HashMap<&str, Vec<(u64, u64, u64)>> = HashMap::new();
    for op in ops {
        if let (OpKind::Append { file, data, .. }, true, Some(offset)) =
            (&op.kind, op.ok(), op.offset)
        {
            acked.entry(file.as_str()).or_default().push((
                op.complete,
                offset + data.len() as u64,
                op.id,
            ));
        }
    }
    for list in acked.values_mut() {
        list.sort();
    }
    let mut reads: Vec<&Op> = ops
        .iter()
        .filter(|o| matches!(o.kind, OpKind::Read { .. }) && o.ok())
        .collect();
    reads.sort_by_key(|o| o.invoke);
    let mut cursor: HashMap<&str, (usize, u64, u64)> = HashMap::new();
    for read in reads {
        let OpKind::Read { file, offset } = &read.kind else {
            unreachable!("filtered reads");
        };
        let size = read.size.unwrap_or(0);
        let list = acked.get(file.as_str()).map_or(&[][..], Vec::as_slice);
        let (next, max_end, max_op) = cursor.entry(file.as_str()).or_insert((0, 0, 0));
        while *next < list.len() && list[*next].0 < read.invoke {
            if list[*next].1 > *max_end {
                *max_end = list[*next].1;
                *max_op = list[*next].2;
            }
            *next += 1;
        }
        if size < *max_end {
            verdict.add(
                "stale-read",
                format!(
                    "read op {} of {file} saw size {size}, but op {} had been acknowledged up to {} before it",
                    read.id, max_op, max_end
                ),
            );
        }
        let final_bytes = files.get(file).map_or(&[][..], Vec::as_slice);
        let from = (*offset as usize).min(final_bytes.len());
        let to = (from + read.data.len()).min(final_bytes.len());
        if size > final_bytes.len() as u64 || final_bytes[from..to] != read.data[..] {
            verdict.add(
                "read-mismatch",
                format!(
                    "read op {} of {file} at {offset} ({} bytes, size {size}) differs from the final file ({} bytes)",
                    read.id,
                    read.data.len(),
                    final_bytes.len()
                ),
            );
        }
    }
}

/// `fifo`: waiters listed in order are granted in that order.
fn check_fifo(ops: &[Op], verdict: &mut Verdict) {
    let mut acquires: HashMap<(&str, u64), Vec<&Op>> = HashMap::new();
    for op in ops {
        if let OpKind::Acquire { lock, .. } = &op.kind {
            acquires
                .entry((lock.as_str(), op.session))
                .or_default()
                .push(op);
        }
    }
    // The acquire of `session` that was in flight during the whole listing `q`.
    let waiting = |lock: &str, session: u64, q: &Op| -> Option<&Op> {
        acquires
            .get(&(lock, session))?
            .iter()
            .copied()
            .find(|a| a.invoke <= q.invoke && a.complete >= q.complete)
    };
    for q in ops {
        let OpKind::Queue { lock, waiters } = &q.kind else {
            continue;
        };
        if !q.ok() {
            continue;
        }
        for (i, &first) in waiters.iter().enumerate() {
            for &second in &waiters[i + 1..] {
                let (Some(a), Some(b)) = (waiting(lock, first, q), waiting(lock, second, q)) else {
                    continue;
                };
                if a.ok() && b.ok() && a.fence >= b.fence {
                    verdict.add(
                        "fifo",
                        format!(
                            "listing op {} queued op {} ({}) ahead of op {} ({}), but they were granted fences {:?} and {:?}",
                            q.id, a.id, a.client, b.id, b.client, a.fence, b.fence
                        ),
                    );
                }
            }
        }
    }
}

/// The negative control: each (client, fence)'s unfenced writes span its belief of holding the
/// lock; two different holders' spans overlapping is what fencing exists to stop.
fn check_unfenced(ops: &[Op], verdict: &mut Verdict) {
    let mut spans: BTreeMap<(String, u64), (u64, u64)> = BTreeMap::new();
    for op in ops {
        if let (OpKind::Unfenced { lock }, Some(fence)) = (&op.kind, op.fence) {
            let span = spans
                .entry((lock.clone(), fence))
                .or_insert((op.invoke, op.invoke));
            span.0 = span.0.min(op.invoke);
            span.1 = span.1.max(op.invoke);
        }
    }
    let spans: Vec<_> = spans.into_iter().collect();
    for (i, ((lock, fa), a)) in spans.iter().enumerate() {
        for ((lock_b, fb), b) in &spans[i + 1..] {
            if lock == lock_b && a.0 <= b.1 && b.0 <= a.1 {
                verdict.unfenced_overlaps.push(format!(
                    "{lock}: holders with fences {fa} and {fb} both wrote during {}..{} µs",
                    a.0.max(b.0),
                    a.1.min(b.1)
                ));
            }
        }
    }
}

/// A percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank]
}

/// The time to the first acknowledged write invoked after each leader fault started, by class.
pub fn recoveries(ops: &[Op], faults: &[Fault]) -> BTreeMap<&'static str, Vec<u64>> {
    let mut writes: Vec<(u64, u64)> = ops
        .iter()
        .filter(|o| {
            matches!(
                o.kind,
                OpKind::Append {
                    must_fail: None,
                    ..
                }
            ) && o.ok()
        })
        .map(|o| (o.invoke, o.complete))
        .collect();
    writes.sort();
    let mut out: BTreeMap<&'static str, Vec<u64>> = BTreeMap::new();
    for fault in faults {
        let Some(class) = fault.kind.leader_fault_class() else {
            continue;
        };
        if fault.nodes.is_empty() {
            continue;
        }
        let first = writes
            .iter()
            .filter(|(invoke, _)| *invoke >= fault.start)
            .map(|(_, complete)| *complete)
            .min();
        if let Some(done) = first {
            out.entry(class).or_default().push(done - fault.start);
        }
    }
    for list in out.values_mut() {
        list.sort();
    }
    out
}

/// The summary table of a run.
pub fn summary(ops: &[Op], faults: &[Fault], verdict: &Verdict, span: (u64, u64)) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut kinds: BTreeMap<&str, [usize; 4]> = BTreeMap::new();
    let mut latency: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for op in ops {
        let row = kinds.entry(op.kind.name()).or_default();
        match op.outcome {
            Outcome::Ok => row[0] += 1,
            Outcome::Fail(_) => row[1] += 1,
            Outcome::Info(_) => row[2] += 1,
            Outcome::Pending => row[3] += 1,
        }
        if op.ok() && op.complete != u64::MAX {
            latency
                .entry(op.kind.name())
                .or_default()
                .push(op.complete - op.invoke);
        }
    }
    let _ = writeln!(
        out,
        "{:<20} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "op", "ok", "failed", "indeterm", "pending", "p50 ms", "p99 ms"
    );
    for (kind, row) in &kinds {
        let lat = latency.get_mut(kind).map(|l| {
            l.sort();
            (percentile(l, 0.5), percentile(l, 0.99))
        });
        let (p50, p99) = lat.unwrap_or((0, 0));
        let _ = writeln!(
            out,
            "{kind:<20} {:>8} {:>8} {:>8} {:>8} {:>9.1} {:>9.1}",
            row[0],
            row[1],
            row[2],
            row[3],
            p50 as f64 / 1000.0,
            p99 as f64 / 1000.0
        );
    }
    let mut by_fault: BTreeMap<&str, usize> = BTreeMap::new();
    for fault in faults {
        *by_fault.entry(fault.kind.name()).or_default() += 1;
    }
    let _ = writeln!(out, "faults injected: {}", faults.len());
    for (kind, n) in &by_fault {
        let _ = writeln!(out, "  {kind:<34} {n}");
    }
    let _ = writeln!(
        out,
        "violations: {}",
        verdict.violations.values().map(Vec::len).sum::<usize>()
    );
    for (kind, list) in &verdict.violations {
        let _ = writeln!(out, "  {kind:<34} {}", list.len());
        for example in list.iter().take(3) {
            let _ = writeln!(out, "      e.g. {example}");
        }
    }
    let _ = writeln!(
        out,
        "negative control (unfenced resource) overlaps: {} (must be > 0)",
        verdict.unfenced_overlaps.len()
    );
    // Availability: the share of whole seconds with an acknowledged write; the longest gap.
    let mut writes: Vec<u64> = ops
        .iter()
        .filter(|o| {
            matches!(
                o.kind,
                OpKind::Append {
                    must_fail: None,
                    ..
                }
            ) && o.ok()
        })
        .map(|o| o.complete)
        .collect();
    writes.sort();
    let seconds = (span.1 - span.0).div_ceil(1_000_000).max(1);
    let mut live = std::collections::BTreeSet::new();
    for &w in &writes {
        if w >= span.0 && w < span.1 {
            live.insert((w - span.0) / 1_000_000);
        }
    }
    let mut gap = 0;
    let mut last = span.0;
    for &w in writes.iter().chain(std::iter::once(&span.1)) {
        if w >= span.0 && w <= span.1 {
            gap = gap.max(w - last);
            last = w;
        }
    }
    let _ = writeln!(
        out,
        "availability: {:.1}% of {seconds} s had an acknowledged write; longest gap between writes {:.2} s",
        100.0 * live.len() as f64 / seconds as f64,
        gap as f64 / 1e6
    );
    let _ = writeln!(
        out,
        "recovery after leader faults (first acknowledged write invoked after the fault began):"
    );
    for (class, list) in recoveries(ops, faults) {
        let _ = writeln!(
            out,
            "  {class:<20} n={:<4} median {:.2} s  max {:.2} s",
            list.len(),
            percentile(&list, 0.5) as f64 / 1e6,
            list.last().copied().unwrap_or(0) as f64 / 1e6
        );
    }
    out
}
