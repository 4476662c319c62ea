//! Go-style durations (`90s`, `5m`, `1h30m`, `1.5h`, `250ms`), plus `d` for days.

use std::time::Duration;

/// Parses a duration the way Go's `time.ParseDuration` does, accepting `d` (24h) as well.
/// Negative durations are refused: no setting here has a meaning for them.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s.starts_with('-') {
        return Err("negative durations are not allowed".into());
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit after {rest:?} (use ns, us, ms, s, m, h or d)"))?;
        if num_len == 0 {
            return Err(format!("expected a number at {rest:?}"));
        }
        let number: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("invalid number {:?}", &rest[..num_len]))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            other => {
                return Err(format!(
                    "unknown unit {other:?} (use ns, us, ms, s, m, h or d)"
                ));
            }
        };
        total += number * seconds_per_unit;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| "duration out of range".into())
}

/// Formats a duration compactly for logs and print-config (`1h30m`, `90s` -> `1m30s`).
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    let millis = d.subsec_millis();
    if secs == 0 {
        return if millis == 0 {
            "0s".into()
        } else {
            format!("{millis}ms")
        };
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86400), ("h", 3600), ("m", 60)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    if secs > 0 || millis > 0 {
        if millis > 0 {
            out.push_str(&format!("{secs}.{millis:03}s"));
        } else {
            out.push_str(&format!("{secs}s"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        let s = Duration::from_secs;
        for (input, want) in [
            ("0", s(0)),
            ("0s", s(0)),
            ("90s", s(90)),
            ("5m", s(300)),
            ("1h30m", s(5400)),
            ("1.5h", s(5400)),
            ("2d", s(172_800)),
            ("1d12h", s(129_600)),
            ("+10s", s(10)),
            ("250ms", Duration::from_millis(250)),
            ("1m0.5s", Duration::from_millis(60_500)),
        ] {
            assert_eq!(parse_duration(input), Ok(want), "{input}");
        }
    }

    #[test]
    fn bad_durations_say_why() {
        for (input, why) in [
            ("", "empty"),
            ("10", "missing unit"),
            ("5 minutes", "unknown unit"),
            ("-5m", "negative"),
            ("1w", "unknown unit"),
            ("h", "expected a number"),
            ("1..5s", "invalid number"),
        ] {
            let err = parse_duration(input).unwrap_err();
            assert!(err.contains(why), "{input}: {err}");
        }
    }

    #[test]
    fn durations_format_compactly() {
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_secs(86400 * 7)), "7d");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.500s");
    }
}
