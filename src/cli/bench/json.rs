//! The JSON values of the bench's `--json` report: the value type and the two builders every
//! part of the report uses. A leaf module of its own, so that `floor` (which reports the
//! machine's floor) and `report` (which embeds that floor) both depend on it and not on each
//! other.

/// A JSON value of the `--json` report (serde_json's).
pub type Json = serde_json::Value;

/// An object from `(key, value)` pairs, in their order.
pub fn object<const N: usize>(fields: [(&str, Json); N]) -> Json {
    Json::Object(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

/// A measurement (rate, milliseconds) rounded to three decimals, which are below every
/// measurement's noise; a whole number is written without a fraction, a non-finite one as
/// `null`.
pub fn num(x: f64) -> Json {
    let rounded = (x * 1e3).round() / 1e3;
    if !rounded.is_finite() {
        Json::Null
    } else if rounded.fract() == 0.0 && rounded.abs() < 9e15 {
        // Exact: a whole f64 below 2^53 converts to i64 without loss.
        Json::from(rounded as i64)
    } else {
        Json::from(rounded)
    }
}
