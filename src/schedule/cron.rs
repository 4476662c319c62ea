//! `BACKUP_CRON_EXPRESSION`: 5 fields, 6 with leading seconds, `@daily`-style descriptors and
//! `@every <duration>`, evaluated in the schedule's time zone.

use std::time::Duration;

use croner::Cron;
use croner::parser::{CronParser, Seconds};
use jiff::Zoned;

use crate::duration::{format_duration, parse_duration};

#[derive(Debug, Clone)]
enum Cadence {
    Cron(Box<Cron>),
    /// Fires every interval, counted from when the scheduler started (as in the reference).
    Every(Duration),
}

/// A parsed cron expression.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    expr: String,
    cadence: Cadence,
}

impl CronSchedule {
    pub fn parse(expr: &str) -> Result<Self, String> {
        let trimmed = expr.trim();
        let cadence = if let Some(every) = trimmed.strip_prefix("@every") {
            let d = parse_duration(every.trim())
                .map_err(|e| format!("invalid @every interval: {e}"))?;
            if d < Duration::from_secs(1) {
                return Err("@every needs an interval of at least 1s".into());
            }
            Cadence::Every(d)
        } else {
            let fields = trimmed.split_whitespace().count();
            if !(trimmed.starts_with('@') || fields == 5 || fields == 6) {
                return Err(format!(
                    "expected 5 fields (minute hour day month weekday), 6 with leading \
                     seconds, a descriptor like @daily or @every 1h; got {fields} fields"
                ));
            }
            let cron = CronParser::builder()
                .seconds(Seconds::Optional)
                .build()
                .parse(trimmed)
                .map_err(|e| format!("invalid cron expression: {e}"))?;
            Cadence::Cron(Box::new(cron))
        };
        Ok(Self {
            expr: trimmed.to_owned(),
            cadence,
        })
    }

    pub fn expression(&self) -> &str {
        &self.expr
    }

    /// The first time strictly after `after` at which the schedule fires, in `after`'s zone;
    /// `None` when it never fires (the reference's documented "never" is `0 0 5 31 2 ?`).
    pub fn next_after(&self, after: &Zoned) -> Option<Zoned> {
        match &self.cadence {
            Cadence::Cron(cron) => cron.find_next_occurrence(after, false).ok(),
            Cadence::Every(d) => after.checked_add(*d).ok(),
        }
    }

    pub fn describe(&self) -> String {
        match &self.cadence {
            Cadence::Every(d) => format!("every {}", format_duration(*d)),
            Cadence::Cron(_) => self.expr.clone(),
        }
    }
}

/// A uniformly random delay in `[0, max]` (`BACKUP_JITTER`), at millisecond resolution.
pub fn jitter(max: Duration, rng: &mut fastrand::Rng) -> Duration {
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rng.u64(0..=ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Zoned {
        s.parse().unwrap()
    }

    fn next(expr: &str, after: &str) -> Option<String> {
        CronSchedule::parse(expr)
            .unwrap()
            .next_after(&at(after))
            .map(|z| z.to_string())
    }

    #[test]
    fn five_and_six_field_expressions() {
        assert_eq!(
            next("0 3 * * *", "2026-11-22T10:00:00+00:00[UTC]").as_deref(),
            Some("2026-11-23T03:00:00+00:00[UTC]")
        );
        // Strictly after: a run at 03:00 does not fire again at 03:00.
        assert_eq!(
            next("0 3 * * *", "2026-11-23T03:00:00+00:00[UTC]").as_deref(),
            Some("2026-11-24T03:00:00+00:00[UTC]")
        );
        assert_eq!(
            next("*/10 * * * * *", "2026-11-22T10:00:01+00:00[UTC]").as_deref(),
            Some("2026-11-22T10:00:10+00:00[UTC]")
        );
        assert_eq!(
            next("30 2 * * 1-5", "2026-11-21T00:00:00+00:00[UTC]").as_deref(),
            Some("2026-11-23T02:30:00+00:00[UTC]"),
            "Saturday -> Monday"
        );
    }

    #[test]
    fn descriptors_and_every() {
        assert_eq!(
            next("@daily", "2026-11-22T10:00:00+00:00[UTC]").as_deref(),
            Some("2026-11-23T00:00:00+00:00[UTC]")
        );
        assert_eq!(
            next("@hourly", "2026-11-22T10:00:00+00:00[UTC]").as_deref(),
            Some("2026-11-22T11:00:00+00:00[UTC]")
        );
        assert_eq!(
            next("@every 1h30m", "2026-11-22T10:00:00+00:00[UTC]").as_deref(),
            Some("2026-11-22T11:30:00+00:00[UTC]")
        );
    }

    #[test]
    fn the_reference_never_expression_never_fires() {
        assert_eq!(next("0 0 5 31 2 ?", "2026-11-22T10:00:00+00:00[UTC]"), None);
    }

    #[test]
    fn time_zones_and_dst_are_respected() {
        // 03:00 Berlin is 02:00 UTC in winter, 01:00 UTC in summer.
        assert_eq!(
            next("0 3 * * *", "2026-01-10T12:00:00+01:00[Europe/Berlin]").as_deref(),
            Some("2026-01-11T03:00:00+01:00[Europe/Berlin]")
        );
        assert_eq!(
            next("0 3 * * *", "2026-07-10T12:00:00+02:00[Europe/Berlin]").as_deref(),
            Some("2026-07-11T03:00:00+02:00[Europe/Berlin]")
        );
        // 02:30 does not exist on 2026-03-29 in Berlin (clocks jump 02:00 -> 03:00); the
        // run still happens that day rather than being skipped.
        let got = CronSchedule::parse("30 2 * * *")
            .unwrap()
            .next_after(&at("2026-03-28T12:00:00+01:00[Europe/Berlin]"))
            .unwrap();
        assert_eq!(got.date(), jiff::civil::date(2026, 3, 29), "{got}");
    }

    #[test]
    fn bad_expressions_say_why() {
        for (expr, why) in [
            ("* * *", "expected 5 fields"),
            ("61 * * * *", "invalid cron expression"),
            ("@every", "invalid @every"),
            ("@every 10", "invalid @every"),
            ("@every 500ms", "at least 1s"),
            ("@sometimes", "invalid cron expression"),
        ] {
            let err = CronSchedule::parse(expr).unwrap_err();
            assert!(err.contains(why), "{expr}: {err}");
        }
    }

    #[test]
    fn jitter_stays_within_bounds_and_spreads() {
        let mut rng = fastrand::Rng::with_seed(7);
        let max = Duration::from_secs(30);
        let draws: Vec<_> = (0..2000).map(|_| jitter(max, &mut rng)).collect();
        assert!(draws.iter().all(|d| *d <= max));
        assert!(draws.iter().any(|d| *d < Duration::from_secs(3)));
        assert!(draws.iter().any(|d| *d > Duration::from_secs(27)));
        assert_eq!(jitter(Duration::ZERO, &mut rng), Duration::ZERO);
    }
}
