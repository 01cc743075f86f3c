//! One duration syntax for every command-line flag that takes a duration: a number with an
//! optional unit, `500ms`, `30s` (the default unit), `2m`, `1h`; fractions allowed (`1.5s`).
//! Settings keep their unit in their name (`idle_timeout_secs`) and take plain numbers.

use std::time::Duration;

/// Parses a flag's duration (clap `value_parser`).
pub(crate) fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: expected e.g. 30s, 500ms, 2m"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("{s:?}: unit must be ms, s, m or h")),
    };
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("{s:?}: must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::parse;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse("8s").unwrap(), Duration::from_secs(8));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse(" 2 m ").unwrap(), Duration::from_secs(120));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        for bad in ["0", "0s", "-1", "5x", "", "s", "inf", "NaN", "1e3s", "1s2"] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
