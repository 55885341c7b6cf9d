//! Human durations for the CLI: `500ms`, `10s`, `2m`, `1h`, `forever`; and milliseconds for
//! reports.

use std::time::Duration;

/// A parsed duration argument: a finite span or "forever".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    /// A finite duration.
    Finite(Duration),
    /// No bound.
    Forever,
}

/// Why a duration did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: expected a number with unit ms, s, m or h (e.g. 500ms, 10s, 2m), or \"forever\"")]
pub struct ParseError {
    input: String,
}

/// Parses `forever`, or a whole number followed by `ms`, `s`, `m` or `h`; a bare number is
/// seconds.
pub fn parse(input: &str) -> Result<Span, ParseError> {
    let text = input.trim();
    let error = || ParseError {
        input: input.to_string(),
    };
    if text.eq_ignore_ascii_case("forever") {
        return Ok(Span::Forever);
    }
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(error());
    }
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().map_err(|_| error())?;
    let millis_per = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(error()),
    };
    let millis = number.checked_mul(millis_per).ok_or_else(error)?;
    Ok(Span::Finite(Duration::from_millis(millis)))
}

/// Parses a duration that must be finite (a TTL, a timeout).
pub fn parse_finite(input: &str) -> Result<Duration, ParseError> {
    match parse(input)? {
        Span::Finite(d) => Ok(d),
        Span::Forever => Err(ParseError {
            input: input.to_string(),
        }),
    }
}

/// Milliseconds as a float, for reports (`--json` numbers and text tables).
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_forever() {
        let ms = |n| Ok(Span::Finite(Duration::from_millis(n)));
        assert_eq!(parse("500ms"), ms(500));
        assert_eq!(parse("10s"), ms(10_000));
        assert_eq!(parse("10"), ms(10_000));
        assert_eq!(parse("2m"), ms(120_000));
        assert_eq!(parse("1h"), ms(3_600_000));
        assert_eq!(parse("0"), ms(0));
        assert_eq!(parse(" 3s "), ms(3_000));
        assert_eq!(parse("forever"), Ok(Span::Forever));
        assert_eq!(parse("FOREVER"), Ok(Span::Forever));
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for bad in [
            "",
            "s",
            "ms",
            "1.5s",
            "-1s",
            "10x",
            "10 sec",
            "99999999999999999999s",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        assert!(parse("18446744073709551615h").is_err());
        assert!(parse_finite("forever").is_err());
        assert_eq!(parse_finite("2s"), Ok(Duration::from_secs(2)));
    }
}
