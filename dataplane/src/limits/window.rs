//! Budget windows: calendar periods aligned in a time zone, and fixed-length windows. A
//! window is identified by its start instant, so a reset is just a new counter key: no
//! background job, no restart.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use crate::policy::document::BudgetPeriod;

/// One budget window: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First instant of the window.
    pub start: Timestamp,
    /// First instant after the window (the reset time).
    pub end: Timestamp,
}

/// Why a window cannot be computed (only at the far ends of the representable range).
#[derive(Debug, thiserror::Error)]
#[error("cannot compute the budget window: {0}")]
pub struct WindowError(#[from] jiff::Error);

/// The window of `period` in `tz` containing `now`.
///
/// Calendar periods start at local midnight (daily), Monday midnight (weekly), the first of
/// the month (monthly) or January 1 (yearly); where midnight does not exist (a DST gap) the
/// window starts at the first instant of the day. `Rolling { seconds }` windows are
/// fixed-length and aligned to the Unix epoch.
pub fn window_at(period: &BudgetPeriod, tz: &TimeZone, now: Timestamp) -> Result<Window, WindowError> {
    if let BudgetPeriod::Rolling { seconds } = period {
        let len = i64::try_from((*seconds).max(1)).unwrap_or(i64::MAX);
        let t = now.as_second();
        let start = t.div_euclid(len) * len;
        return Ok(Window {
            start: Timestamp::from_second(start)?,
            end: Timestamp::from_second(start.saturating_add(len))?,
        });
    }
    let today = now.to_zoned(tz.clone()).date();
    let (first, next) = calendar_bounds(period, today)?;
    Ok(Window {
        start: first.to_zoned(tz.clone())?.timestamp(),
        end: next.to_zoned(tz.clone())?.timestamp(),
    })
}

/// First day of the period containing `day`, and first day of the next one.
fn calendar_bounds(period: &BudgetPeriod, day: Date) -> Result<(Date, Date), jiff::Error> {
    Ok(match period {
        BudgetPeriod::Daily => (day, day.checked_add(1.day())?),
        BudgetPeriod::Weekly => {
            let monday = day.checked_sub(i64::from(day.weekday().to_monday_zero_offset()).days())?;
            (monday, monday.checked_add(7.days())?)
        }
        BudgetPeriod::Monthly => {
            let first = day.first_of_month();
            (first, first.checked_add(1.month())?)
        }
        BudgetPeriod::Yearly => {
            let first = day.first_of_year();
            (first, first.checked_add(1.year())?)
        }
        BudgetPeriod::Rolling { .. } => (day, day),
    })
}

/// Resolves an IANA time zone name; `None` means UTC.
pub fn time_zone(name: Option<&str>) -> Result<TimeZone, jiff::Error> {
    match name {
        None => Ok(TimeZone::UTC),
        Some(n) => TimeZone::get(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn win(period: BudgetPeriod, tz: &str, now: &str) -> (String, String) {
        let w = window_at(&period, &time_zone(Some(tz)).unwrap(), ts(now)).unwrap();
        (w.start.to_string(), w.end.to_string())
    }

    #[test]
    fn calendar_windows_in_utc() {
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            win(BudgetPeriod::Daily, "UTC", "2026-11-29T19:00:00Z"),
            s("2026-11-29T00:00:00Z", "2026-11-30T00:00:00Z")
        );
        // 2026-11-29 is a Sunday: the week started Monday the 23rd.
        assert_eq!(
            win(BudgetPeriod::Weekly, "UTC", "2026-11-29T23:59:59Z"),
            s("2026-11-23T00:00:00Z", "2026-11-30T00:00:00Z")
        );
        assert_eq!(
            win(BudgetPeriod::Weekly, "UTC", "2026-11-30T00:00:00Z"),
            s("2026-11-30T00:00:00Z", "2026-12-07T00:00:00Z")
        );
        assert_eq!(
            win(BudgetPeriod::Monthly, "UTC", "2026-12-31T23:59:59Z"),
            s("2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z")
        );
        assert_eq!(
            win(BudgetPeriod::Yearly, "UTC", "2026-06-15T12:00:00Z"),
            s("2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z")
        );
    }

    #[test]
    fn month_ends_and_leap_years() {
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            win(BudgetPeriod::Monthly, "UTC", "2028-02-29T12:00:00Z"),
            s("2028-02-01T00:00:00Z", "2028-03-01T00:00:00Z"),
            "leap February has 29 days"
        );
        assert_eq!(
            win(BudgetPeriod::Monthly, "UTC", "2027-02-28T23:00:00Z"),
            s("2027-02-01T00:00:00Z", "2027-03-01T00:00:00Z")
        );
        assert_eq!(
            win(BudgetPeriod::Monthly, "UTC", "2026-01-31T23:00:00Z"),
            s("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"),
            "a month from the 1st, not from the 31st"
        );
        assert_eq!(
            win(BudgetPeriod::Daily, "UTC", "2028-02-29T00:00:00Z"),
            s("2028-02-29T00:00:00Z", "2028-03-01T00:00:00Z")
        );
    }

    #[test]
    fn time_zones_shift_the_boundary() {
        // 23:30 UTC on Nov 29 is already Nov 30 in Tokyo (UTC+9): the day started 15:00 UTC.
        let (start, end) = win(BudgetPeriod::Daily, "Asia/Tokyo", "2026-11-29T23:30:00Z");
        assert_eq!(
            (start.as_str(), end.as_str()),
            ("2026-11-29T15:00:00Z", "2026-11-30T15:00:00Z")
        );
        // New York month boundary: 05:00 UTC in winter.
        let (start, end) = win(BudgetPeriod::Monthly, "America/New_York", "2026-12-01T03:00:00Z");
        assert_eq!(
            (start.as_str(), end.as_str()),
            ("2026-11-01T04:00:00Z", "2026-12-01T05:00:00Z")
        );
    }

    #[test]
    fn dst_days_are_23_and_25_hours_long() {
        // US spring forward 2026-03-08: the local day has 23 hours.
        let w = window_at(
            &BudgetPeriod::Daily,
            &time_zone(Some("America/New_York")).unwrap(),
            ts("2026-03-08T12:00:00Z"),
        )
        .unwrap();
        assert_eq!(w.end.as_second() - w.start.as_second(), 23 * 3600);
        // Fall back 2026-11-01: 25 hours.
        let w = window_at(
            &BudgetPeriod::Daily,
            &time_zone(Some("America/New_York")).unwrap(),
            ts("2026-11-01T12:00:00Z"),
        )
        .unwrap();
        assert_eq!(w.end.as_second() - w.start.as_second(), 25 * 3600);
    }

    #[test]
    fn midnight_in_a_dst_gap_starts_at_the_first_instant_of_the_day() {
        // America/Santiago springs forward at 24:00 -> 01:00 (2026-09-06): midnight does not exist.
        let w = window_at(
            &BudgetPeriod::Daily,
            &time_zone(Some("America/Santiago")).unwrap(),
            ts("2026-09-06T12:00:00Z"),
        )
        .unwrap();
        let local = w.start.to_zoned(time_zone(Some("America/Santiago")).unwrap());
        assert_eq!(local.date().to_string(), "2026-09-06");
        assert_eq!(local.hour(), 1, "{local}");
    }

    #[test]
    fn rolling_windows_are_epoch_aligned() {
        let w = window_at(
            &BudgetPeriod::Rolling { seconds: 3600 },
            &TimeZone::UTC,
            ts("2026-11-29T19:42:10Z"),
        )
        .unwrap();
        assert_eq!(w.start.to_string(), "2026-11-29T19:00:00Z");
        assert_eq!(w.end.to_string(), "2026-11-29T20:00:00Z");
    }

    #[test]
    fn consecutive_windows_tile_time() {
        let tz = time_zone(Some("Europe/Berlin")).unwrap();
        for period in [
            BudgetPeriod::Daily,
            BudgetPeriod::Weekly,
            BudgetPeriod::Monthly,
            BudgetPeriod::Yearly,
        ] {
            let mut t = ts("2026-01-01T00:00:00Z");
            let mut prev: Option<Window> = None;
            for _ in 0..40 {
                let w = window_at(&period, &tz, t).unwrap();
                assert!(w.start <= t && t < w.end, "{period:?} {t}");
                if let Some(p) = prev {
                    assert_eq!(p.end, w.start, "{period:?}: windows must tile");
                }
                prev = Some(w);
                t = w.end;
            }
        }
    }
}
