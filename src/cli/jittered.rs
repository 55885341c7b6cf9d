/// Half the delay plus a uniform random part of the other half ("equal jitter"), so peers that
/// lost a node together do not redial it in lockstep.
fn jittered(delay: Duration) -> Duration {
    let half = delay / 2;
    half + rand::thread_rng().gen_range(Duration::ZERO..=half)
}
