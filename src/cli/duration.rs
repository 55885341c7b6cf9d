//! Duration flags of the CLI, and milliseconds for reports.
//!
//! The syntax is [`humantime`]'s, the one most Rust tools accept: `500ms`, `1.5s`, `1m30s`,
//! `2h`; a bare number is seconds (`--wait 0`, `--ttl 10`). `forever` is accepted only by the
//! flags that have no bound (`--wait`), and only their error messages offer it.
//!
//! Where the protocol fixes a range (a session lease is 1 s to 1 h, a wait or hold at most
//! 24 h: [`MIN_TTL_MS`], [`MAX_TTL_MS`], [`MAX_WAIT_MS`]), the flag's parser checks it, so that a value out of
//! range is a usage error (exit 2) that clap reports with the flag's name, in the flag's
//! terms, before anything is sent: `invalid value '500ms' for '--ttl <TTL>': must be between
//! 1s and 1h`.

use std::time::Duration;

use crate::protocol::{MAX_TTL_MS, MAX_WAIT_MS, MIN_TTL_MS};

/// A parsed duration argument: a finite span or "forever".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    /// A finite duration.
    Finite(Duration),
    /// No bound.
    Forever,
}

/// Why a duration flag was refused: the text clap prints after the flag's name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

/// The examples every syntax error shows.
const EXAMPLES: &str = "500ms, 1.5s, 1m30s or 2h";

/// Parses the syntax alone: a humantime duration, or a bare number of seconds.
fn parse_syntax(input: &str, forever: bool) -> Result<Span, ParseError> {
    let text = input.trim();
    if text.eq_ignore_ascii_case("forever") {
        if forever {
            return Ok(Span::Forever);
        }
        return Err(ParseError(format!(
            "this flag takes a finite duration (e.g. {EXAMPLES}), not \"forever\""
        )));
    }
    let bare_number = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let parsed = if bare_number {
        humantime::parse_duration(&format!("{text}s"))
    } else {
        humantime::parse_duration(text)
    };
    parsed.map(Span::Finite).map_err(|error| {
        let or_forever = if forever { ", or \"forever\"" } else { "" };
        ParseError(format!(
            "{input:?} is not a duration ({error}): expected e.g. {EXAMPLES}{or_forever}"
        ))
    })
}

/// Shows a limit in the flags' own syntax (`1s`, `1h`, `24h`).
fn show(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Refuses `d` outside `min..=max`.
fn within(d: Duration, min: Duration, max: Duration, why: &str) -> Result<Duration, ParseError> {
    if d < min || d > max {
        return Err(ParseError(format!(
            "must be between {} and {} ({why})",
            show(min),
            show(max)
        )));
    }
    Ok(d)
}

/// Any finite duration (`--kill-after`, bench run lengths).
pub fn parse_finite(input: &str) -> Result<Duration, ParseError> {
    match parse_syntax(input, false)? {
        Span::Finite(d) => Ok(d),
        Span::Forever => unreachable!("forever is not accepted here"),
    }
}

/// A finite duration above zero (`--timeout`, `--connect-timeout`).
pub fn parse_positive(input: &str) -> Result<Duration, ParseError> {
    let d = parse_finite(input)?;
    if d.is_zero() {
        return Err(ParseError("must be more than 0".into()));
    }
    Ok(d)
}

/// A session lease (`--ttl`): 1s to 1h, the protocol's bounds.
pub fn parse_ttl(input: &str) -> Result<Duration, ParseError> {
    within(
        parse_finite(input)?,
        Duration::from_millis(MIN_TTL_MS),
        Duration::from_millis(MAX_TTL_MS),
        "the session lease limits",
    )
}

/// A wait for a lock (`--wait`): 0 (try once) to 24h, or `forever`.
pub fn parse_wait(input: &str) -> Result<Span, ParseError> {
    match parse_syntax(input, true)? {
        Span::Forever => Ok(Span::Forever),
        Span::Finite(d) => within(
            d,
            Duration::ZERO,
            Duration::from_millis(MAX_WAIT_MS),
            "0 tries once; for no bound say \"forever\"",
        )
        .map(Span::Finite),
    }
}

/// A hold limit (`--hold`): 1ms to 24h (leave the flag out for no limit).
pub fn parse_hold(input: &str) -> Result<Duration, ParseError> {
    within(
        parse_finite(input)?,
        Duration::from_millis(1),
        Duration::from_millis(MAX_WAIT_MS),
        "leave --hold out for no limit",
    )
}

/// Milliseconds as a float, for reports (`--json` numbers and text tables).
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_humantime_bare_seconds_and_forever() {
        assert_eq!(parse_finite("500ms"), Ok(ms(500)));
        assert_eq!(parse_finite("1.5s"), Ok(ms(1_500)));
        assert_eq!(parse_finite("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_finite("1m 30s"), Ok(ms(90_000)));
        assert_eq!(parse_finite("2h"), Ok(ms(7_200_000)));
        assert_eq!(parse_finite("10"), Ok(ms(10_000)));
        assert_eq!(parse_finite("2.5"), Ok(ms(2_500)));
        assert_eq!(parse_finite("0"), Ok(ms(0)));
        assert_eq!(parse_finite(" 3s "), Ok(ms(3_000)));
        assert_eq!(parse_wait("forever"), Ok(Span::Forever));
        assert_eq!(parse_wait("FOREVER"), Ok(Span::Forever));
        assert_eq!(parse_wait("0"), Ok(Span::Finite(ms(0))));
        assert_eq!(parse_wait("1.5s"), Ok(Span::Finite(ms(1_500))));
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for bad in [
            "",
            "s",
            "ms",
            "-1s",
            "10x",
            "1..5s",
            "99999999999999999999999s",
            "soon",
        ] {
            assert!(parse_finite(bad).is_err(), "{bad:?} parsed");
            assert!(parse_wait(bad).is_err(), "{bad:?} parsed as a wait");
        }
    }

    /// Only the flags that accept `forever` mention it, so the message and the accepted set
    /// agree.
    #[test]
    fn forever_is_offered_exactly_where_it_is_accepted() {
        let ttl = parse_ttl("forever")
            .expect_err("a lease is finite")
            .to_string();
        assert!(ttl.ends_with("not \"forever\""), "{ttl}");
        let ttl = parse_ttl("soon").expect_err("not a duration").to_string();
        assert!(!ttl.contains("forever"), "{ttl}");
        assert!(parse_hold("forever").is_err());
        assert!(parse_finite("forever").is_err());
        let wait = parse_wait("soon").expect_err("not a duration");
        assert!(wait.to_string().contains("\"forever\""), "{wait}");
    }

    #[test]
    fn limits_are_checked_in_the_flags_terms() {
        assert_eq!(parse_ttl("1s"), Ok(ms(1_000)));
        assert_eq!(parse_ttl("1h"), Ok(ms(3_600_000)));
        let short = parse_ttl("500ms").expect_err("below 1s").to_string();
        assert_eq!(
            short,
            "must be between 1s and 1h (the session lease limits)"
        );
        assert!(parse_ttl("1h 1s").is_err());
        assert!(parse_wait("25h").is_err());
        assert_eq!(parse_wait("24h"), Ok(Span::Finite(ms(86_400_000))));
        assert!(parse_hold("0").is_err());
        assert!(parse_hold("25h").is_err());
        assert_eq!(parse_hold("30s"), Ok(ms(30_000)));
        assert!(parse_positive("0s").is_err());
        assert_eq!(parse_positive("300ms"), Ok(ms(300)));
    }
}
