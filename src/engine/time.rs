//! Pure calendar arithmetic on UTC milliseconds. Nothing here reads the clock:
//! every function takes `now_ms` from its caller.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, UTC. The only notion of time in the engine.
pub type Millis = i64;

pub const MINUTE_MS: Millis = 60_000;
pub const HOUR_MS: Millis = 60 * MINUTE_MS;
pub const DAY_MS: Millis = 24 * HOUR_MS;

/// How often a consumption meter starts again from zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// 00:00 UTC every day.
    Daily,
    /// Monday 00:00 UTC.
    Weekly,
    /// 00:00 UTC on the 1st of each month.
    Monthly,
    /// 00:00 UTC on 1 January. LicenseSpring spells it `annualy`; both are accepted.
    #[serde(alias = "annualy", alias = "yearly")]
    Annually,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Annually => "annually",
        }
    }

    /// Start of the period that contains `now_ms`.
    pub fn start_of(self, now_ms: Millis) -> Millis {
        let date = to_datetime(now_ms).date_naive();
        let start = match self {
            Period::Daily => date,
            Period::Weekly => date - Duration::days(date.weekday().num_days_from_monday() as i64),
            Period::Monthly => date.with_day(1).unwrap_or(date),
            Period::Annually => NaiveDate::from_ymd_opt(date.year(), 1, 1).unwrap_or(date),
        };
        date_to_millis(start)
    }

    /// Start of the period after the one that contains `now_ms`.
    pub fn next_start(self, now_ms: Millis) -> Millis {
        let start = to_datetime(self.start_of(now_ms)).date_naive();
        let next = match self {
            Period::Daily => start + Duration::days(1),
            Period::Weekly => start + Duration::days(7),
            Period::Monthly => {
                let (y, m) = if start.month() == 12 {
                    (start.year() + 1, 1)
                } else {
                    (start.year(), start.month() + 1)
                };
                NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(start)
            }
            Period::Annually => NaiveDate::from_ymd_opt(start.year() + 1, 1, 1).unwrap_or(start),
        };
        date_to_millis(next)
    }
}

fn to_datetime(ms: Millis) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn date_to_millis(d: NaiveDate) -> Millis {
    NaiveDateTime::new(d, NaiveTime::MIN)
        .and_utc()
        .timestamp_millis()
}

/// ISO 8601 in UTC with milliseconds, as LicenseSpring writes instants: `2024-09-27T23:30:48.016Z`.
pub fn format_instant(ms: Millis) -> String {
    to_datetime(ms).format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// `YYYY-MM-DD` of the UTC day containing `ms`.
pub fn format_date(ms: Millis) -> String {
    to_datetime(ms).format("%Y-%m-%d").to_string()
}

/// Whether `year`-`month`-`day` is a day of the (proleptic Gregorian)
/// calendar.
pub fn is_calendar_date(year: u32, month: u32, day: u32) -> bool {
    i32::try_from(year).is_ok_and(|y| chrono::NaiveDate::from_ymd_opt(y, month, day).is_some())
}

/// Parses an ISO 8601 instant or date. A bare date means 00:00 UTC of that day;
/// a date-time without an offset is taken as UTC. Returns `None` for anything else.
pub fn parse_instant(s: &str) -> Option<Millis> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_millis());
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(dt.and_utc().timestamp_millis());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .map(date_to_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Millis {
        parse_instant(s).expect("test instant")
    }

    #[test]
    fn period_boundaries_are_utc_calendar_boundaries() {
        // Wednesday 2026-11-25 13:45 UTC.
        let now = at("2026-11-25T13:45:00Z");
        assert_eq!(Period::Daily.start_of(now), at("2026-11-25"));
        assert_eq!(Period::Daily.next_start(now), at("2026-11-26"));
        assert_eq!(Period::Weekly.start_of(now), at("2026-11-23"));
        assert_eq!(Period::Weekly.next_start(now), at("2026-11-30"));
        assert_eq!(Period::Monthly.next_start(now), at("2026-12-01"));
        assert_eq!(
            Period::Monthly.next_start(at("2026-12-31T23:59:59.999Z")),
            at("2027-01-01")
        );
        assert_eq!(Period::Annually.start_of(now), at("2026-01-01"));
        assert_eq!(Period::Annually.next_start(now), at("2027-01-01"));
        // Exactly on a boundary belongs to the new period.
        assert_eq!(Period::Weekly.start_of(at("2026-11-30")), at("2026-11-30"));
    }

    #[test]
    fn parses_and_formats_iso_8601() {
        assert_eq!(
            format_instant(at("2024-09-27T23:30:48.016Z")),
            "2024-09-27T23:30:48.016Z"
        );
        assert_eq!(format_date(at("2031-03-16")), "2031-03-16");
        assert_eq!(at("2024-09-27 23:30"), at("2024-09-27T23:30:00Z"));
        assert!(parse_instant("yesterday").is_none());
        assert!(parse_instant("2024-13-01").is_none());
    }

    #[test]
    fn period_names_accept_vendor_spelling() {
        let p: Period = serde_json::from_str("\"annualy\"").expect("alias");
        assert_eq!(p, Period::Annually);
    }
}
