//! The ZUP calendar: Serbia's working days, and a time limit in days
//! counted as the law counts it.
//!
//! - **Non-working state holidays** (Zakon o državnim i drugim praznicima
//!   u Republici Srbiji): New Year, 1–2 January; Orthodox Christmas,
//!   7 January; Statehood Day, 15–16 February; Labour Day, 1–2 May;
//!   Orthodox Easter, from Good Friday to Easter Monday; Armistice Day,
//!   11 November. When 1–2 January, 15–16 February, 1–2 May or
//!   11 November falls on a Sunday, the first next working day is off too
//!   (art. 3), so in 2021, with 2 May a Sunday and Easter Monday on the
//!   3rd, the 4th was off.
//! - **Orthodox Easter** by the Julian computus, moved to the Gregorian
//!   calendar (13 days between 1900 and 2099).
//! - **A time limit in days** (ZUP art. 82–83) starts on the day after the
//!   event; a limit whose last day is a Saturday, a Sunday or a
//!   non-working holiday ends at the end of the next working day.
//!
//! Days are civil dates in Serbia (Europe/Belgrade): a request filed at
//! 00:30 there on the 3rd is filed on the 3rd, whatever the UTC date.

use chrono::{Datelike, Duration as Days, NaiveDate, TimeZone, Weekday};
use chrono_tz::Europe::Belgrade;

/// Why a day is not a working day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Off {
    Saturday,
    Sunday,
    /// A non-working state holiday, by its Serbian name.
    Holiday(&'static str),
    /// The first working day after a two-day holiday (or Armistice Day)
    /// that fell on a Sunday.
    MovedFrom(&'static str),
}

impl std::fmt::Display for Off {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Off::Saturday => f.write_str("Saturday"),
            Off::Sunday => f.write_str("Sunday"),
            Off::Holiday(h) => f.write_str(h),
            Off::MovedFrom(h) => write!(f, "{h} fell on a Sunday (the next working day is off)"),
        }
    }
}

const NEW_YEAR: &str = "Nova godina";
const CHRISTMAS: &str = "Božić";
const STATEHOOD: &str = "Sretenje – Dan državnosti Srbije";
const LABOUR: &str = "Praznik rada";
const ARMISTICE: &str = "Dan primirja u Prvom svetskom ratu";
const GOOD_FRIDAY: &str = "Veliki petak";
const EASTER_SATURDAY: &str = "Velika subota";
const EASTER: &str = "Vaskrs";
const EASTER_MONDAY: &str = "drugi dan Vaskrsa";

/// Orthodox Easter Sunday of `year`, in the Gregorian calendar (Meeus's
/// Julian algorithm, then the calendars' difference: 13 days from 1900
/// to 2099). `None` outside the years chrono can write.
pub fn orthodox_easter(year: i32) -> Option<NaiveDate> {
    let (a, b, c) = (year.rem_euclid(4), year.rem_euclid(7), year.rem_euclid(19));
    let d = (19 * c + 15) % 30;
    let e = (2 * a + 4 * b - d + 34).rem_euclid(7);
    let month = (d + e + 114) / 31;
    let day = (d + e + 114) % 31 + 1;
    // The Julian calendar runs behind by 10 days from 1582, one more in
    // each century year not divisible by 400.
    let gap = year / 100 - year / 400 - 2;
    NaiveDate::from_ymd_opt(year, month as u32, day as u32)?
        .checked_add_signed(Days::days(gap as i64))
}

/// The non-working holidays of `year` that fall on it, each with its
/// name (a day off by the Sunday rule included), in date order.
pub fn holidays(year: i32) -> Vec<(NaiveDate, Off)> {
    let date = |m, d| NaiveDate::from_ymd_opt(year, m, d);
    let mut days: Vec<(NaiveDate, Off)> = Vec::new();
    let fixed: [(u32, u32, &'static str, bool); 8] = [
        (1, 1, NEW_YEAR, true),
        (1, 2, NEW_YEAR, true),
        (1, 7, CHRISTMAS, false),
        (2, 15, STATEHOOD, true),
        (2, 16, STATEHOOD, true),
        (5, 1, LABOUR, true),
        (5, 2, LABOUR, true),
        (11, 11, ARMISTICE, true),
    ];
    for (m, d, name, _) in fixed {
        days.extend(date(m, d).map(|x| (x, Off::Holiday(name))));
    }
    if let Some(easter) = orthodox_easter(year) {
        for (offset, name) in [
            (-2, GOOD_FRIDAY),
            (-1, EASTER_SATURDAY),
            (0, EASTER),
            (1, EASTER_MONDAY),
        ] {
            days.extend(
                easter
                    .checked_add_signed(Days::days(offset))
                    .map(|x| (x, Off::Holiday(name))),
            );
        }
    }
    // The Sunday rule: the first day after that is neither a weekend day
    // nor a holiday (found so far, Easter included) is off too.
    let sundays: Vec<(NaiveDate, &'static str)> = fixed
        .iter()
        .filter(|f| f.3)
        .filter_map(|&(m, d, name, _)| date(m, d).map(|x| (x, name)))
        .filter(|(x, _)| x.weekday() == Weekday::Sun)
        .collect();
    for (sunday, name) in sundays {
        let mut next = sunday;
        while let Some(n) = next.succ_opt() {
            next = n;
            let weekend = matches!(next.weekday(), Weekday::Sat | Weekday::Sun);
            if !weekend && !days.iter().any(|(d, _)| *d == next) {
                days.push((next, Off::MovedFrom(name)));
                break;
            }
        }
    }
    // One entry per day: a day that is two holidays at once (Labour Day
    // and Easter, in 2021 and 2027) keeps the first name.
    days.sort_by_key(|(d, _)| *d);
    days.dedup_by_key(|(d, _)| *d);
    days
}

/// Why `day` is not a working day, or `None` if it is one.
pub fn off(day: NaiveDate) -> Option<Off> {
    // A holiday on a weekend is named as the holiday: the more telling
    // reason. (The day after New Year's Sunday rule falls in early
    // January of the same year, so the year's own list is enough.)
    if let Some((_, o)) = holidays(day.year()).into_iter().find(|(d, _)| *d == day) {
        return Some(o);
    }
    match day.weekday() {
        Weekday::Sat => Some(Off::Saturday),
        Weekday::Sun => Some(Off::Sunday),
        _ => None,
    }
}

/// A time limit counted as ZUP counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// The day of the event (filing).
    pub from: NaiveDate,
    pub days: u32,
    /// The day `days` after `from`, before any move.
    pub counted: NaiveDate,
    /// The last day of the limit: `counted`, or the first working day after it.
    pub last: NaiveDate,
    /// The days the end was moved over, and why each is not a working day.
    pub moved_over: Vec<(NaiveDate, Off)>,
}

/// The last day of a limit of `days` days from the event on `from`: the
/// count starts on the next day, and a last day that is not a working day
/// moves to the next working day. `None` past the dates chrono writes.
pub fn limit(from: NaiveDate, days: u32) -> Option<Limit> {
    let counted = from.checked_add_signed(Days::days(days as i64))?;
    let mut last = counted;
    let mut moved_over = Vec::new();
    while let Some(why) = off(last) {
        moved_over.push((last, why));
        last = last.succ_opt()?;
    }
    Some(Limit {
        from,
        days,
        counted,
        last,
        moved_over,
    })
}

/// The civil date in Serbia at `ms` since the epoch.
pub fn serbian_date(ms: u64) -> Option<NaiveDate> {
    Belgrade
        .timestamp_millis_opt(i64::try_from(ms).ok()?)
        .single()
        .map(|t| t.date_naive())
}

/// The end of `day` in Serbia (the last millisecond before its midnight),
/// in ms since the epoch.
pub fn end_of_day_ms(day: NaiveDate) -> Option<u64> {
    let next = day.succ_opt()?.and_hms_opt(0, 0, 0)?;
    // Midnight exists on every day in Serbia (its clocks change at 02:00
    // and 03:00), so the earliest reading is the only one.
    let t = Belgrade.from_local_datetime(&next).earliest()?;
    u64::try_from(t.timestamp_millis()).ok()?.checked_sub(1)
}

/// The ZUP deadline of a request filed at `filed_ms` with a limit of
/// `days` days: the end of the limit's last day in Serbia.
pub fn deadline_ms(filed_ms: u64, days: u32) -> Option<u64> {
    end_of_day_ms(limit(serbian_date(filed_ms)?, days)?.last)
}

/// The end, in Serbia, of the `n`th working day after the day of `ms`
/// (that day not counted): how far ahead "within `n` working days" reaches.
pub fn working_days_after(ms: u64, n: u32) -> Option<u64> {
    let mut d = serbian_date(ms)?;
    let mut left = n;
    while left > 0 {
        d = d.succ_opt()?;
        if off(d).is_none() {
            left -= 1;
        }
    }
    end_of_day_ms(d)
}

const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);

/// A limit is a number of days when it is a whole, non-zero number of
/// them; anything else (seconds in a test, hours in a demo) is plain time.
fn whole_days(limit: std::time::Duration) -> Option<u32> {
    let secs = limit.as_secs();
    (limit.subsec_nanos() == 0 && secs > 0 && secs.is_multiple_of(DAY.as_secs()))
        .then(|| u32::try_from(secs / DAY.as_secs()).ok())
        .flatten()
}

/// The deadline of what was filed at `filed_ms` with a limit of `limit`
/// (`retry.deadline`): for a number of days, the end of the limit's last
/// day as ZUP counts it ([`deadline_ms`]); for another length, plain time.
pub fn deadline_after(filed_ms: u64, limit: std::time::Duration) -> u64 {
    whole_days(limit)
        .and_then(|days| deadline_ms(filed_ms, days))
        .unwrap_or_else(|| filed_ms.saturating_add(limit.as_millis() as u64))
}

/// How far ahead of `now_ms` a deadline is near (`deadline_warning`): for
/// a number of days, to the end of that many working days after today;
/// for another length, plain time.
pub fn warning_until(now_ms: u64, warning: std::time::Duration) -> u64 {
    whole_days(warning)
        .and_then(|days| working_days_after(now_ms, days))
        .unwrap_or_else(|| now_ms.saturating_add(warning.as_millis() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    /// Orthodox Easter Sundays as the Serbian Orthodox Church's calendars
    /// print them (not computed here).
    #[test]
    fn orthodox_easter_is_the_churchs_date() {
        for (y, want) in [
            (2016, "2016-05-01"),
            (2019, "2019-04-28"),
            (2020, "2020-04-19"),
            (2021, "2021-05-02"),
            (2022, "2022-04-24"),
            (2023, "2023-04-16"),
            (2024, "2024-05-05"),
            (2025, "2025-04-20"),
            (2026, "2026-04-12"),
            (2027, "2027-05-02"),
            (2028, "2028-04-16"),
            (2030, "2030-04-28"),
        ] {
            assert_eq!(orthodox_easter(y), Some(day(want)), "{y}");
        }
    }

    /// Each year's days off, written out by hand from the law and that
    /// year's calendar.
    #[test]
    fn the_days_off_of_several_years_are_the_laws() {
        let cases: [(i32, &[&str]); 4] = [
            // 2021: 2 May (Sunday) is Easter, Monday the 3rd Easter
            // Monday, so the Sunday rule gives Tuesday the 4th.
            (
                2021,
                &[
                    "2021-01-01",
                    "2021-01-02",
                    "2021-01-07",
                    "2021-02-15",
                    "2021-02-16",
                    "2021-04-30",
                    "2021-05-01",
                    "2021-05-02",
                    "2021-05-03",
                    "2021-05-04",
                    "2021-11-11",
                ],
            ),
            // 2026: Statehood Day, 15 February, is a Sunday: Tuesday the
            // 17th is off after Monday the 16th.
            (
                2026,
                &[
                    "2026-01-01",
                    "2026-01-02",
                    "2026-01-07",
                    "2026-02-15",
                    "2026-02-16",
                    "2026-02-17",
                    "2026-04-10",
                    "2026-04-11",
                    "2026-04-12",
                    "2026-04-13",
                    "2026-05-01",
                    "2026-05-02",
                    "2026-11-11",
                ],
            ),
            // 2027: Easter is 2 May again (Sunday): Good Friday 30 April,
            // Easter Monday 3 May, and the 4th off by the Sunday rule.
            (
                2027,
                &[
                    "2027-01-01",
                    "2027-01-02",
                    "2027-01-07",
                    "2027-02-15",
                    "2027-02-16",
                    "2027-04-30",
                    "2027-05-01",
                    "2027-05-02",
                    "2027-05-03",
                    "2027-05-04",
                    "2027-11-11",
                ],
            ),
            // 2023: 1 January is a Sunday: Tuesday the 3rd is off after
            // Monday the 2nd; nothing else falls on a Sunday.
            (
                2023,
                &[
                    "2023-01-01",
                    "2023-01-02",
                    "2023-01-03",
                    "2023-01-07",
                    "2023-02-15",
                    "2023-02-16",
                    "2023-04-14",
                    "2023-04-15",
                    "2023-04-16",
                    "2023-04-17",
                    "2023-05-01",
                    "2023-05-02",
                    "2023-11-11",
                ],
            ),
        ];
        for (y, want) in cases {
            let got: Vec<String> = holidays(y).iter().map(|(d, _)| d.to_string()).collect();
            assert_eq!(got, want.to_vec(), "{y}");
        }
        // 7 January on a Sunday moves nothing (2024: Monday the 8th works).
        assert_eq!(off(day("2024-01-07")), Some(Off::Holiday(CHRISTMAS)));
        assert_eq!(off(day("2024-01-08")), None);
        assert_eq!(
            off(day("2026-02-17")),
            Some(Off::MovedFrom(STATEHOOD)),
            "2026: the day after Statehood Day's Monday"
        );
    }

    /// Limits counted by hand: from the day after the event, and a last
    /// day off moves to the next working day.
    #[test]
    fn limits_are_counted_from_the_next_day_and_end_on_a_working_day() {
        for (from, days, want) in [
            // Plain: Monday 2 March 2026 + 15 = Tuesday the 17th.
            ("2026-03-02", 15, "2026-03-17"),
            // Ends on a Saturday: Friday 6 March 2026 + 15 = Saturday the
            // 21st, so Monday the 23rd.
            ("2026-03-06", 15, "2026-03-23"),
            // Ends in Easter 2026 (Good Friday 10 April): to Tuesday the 14th.
            ("2026-03-26", 15, "2026-04-14"),
            // 2021: 15 days from 19 April is Tuesday 4 May, off by the
            // Sunday rule after Easter Monday: Wednesday the 5th.
            ("2021-04-19", 15, "2021-05-05"),
            // 2027 likewise: from 19 April to Wednesday 5 May.
            ("2027-04-19", 15, "2027-05-05"),
            // 2026: ends Sunday 15 February, Statehood Day, then Monday
            // the 16th, then the 17th by the Sunday rule: Wednesday the 18th.
            ("2026-01-31", 15, "2026-02-18"),
            // Across the year: 24 December 2026 + 8 = Friday 1 January
            // 2027, then Saturday 2nd, Sunday 3rd: Monday 4 January.
            ("2026-12-24", 8, "2027-01-04"),
            // Ends on Armistice Day 2026 (Wednesday): Thursday the 12th.
            ("2026-10-27", 15, "2026-11-12"),
            // A working last day does not move.
            ("2026-12-07", 3, "2026-12-10"),
        ] {
            let l = limit(day(from), days).unwrap();
            assert_eq!(l.last, day(want), "{from} + {days}: {l:?}");
            assert_eq!(l.moved_over.is_empty(), l.last == l.counted);
        }
    }

    #[test]
    fn the_day_and_its_end_are_serbias() {
        // 23:30 UTC on 2 March 2026 is 00:30 on the 3rd in Belgrade (CET).
        let ms = 1_772_494_200_000;
        assert_eq!(crate::time::rfc3339(ms), "2026-03-02T23:30:00.000Z");
        assert_eq!(serbian_date(ms), Some(day("2026-03-03")));
        // The end of 17 March 2026 (CET) is 22:59:59.999 UTC; of 17 July
        // (CEST) 21:59:59.999 UTC.
        assert_eq!(
            end_of_day_ms(day("2026-03-17"))
                .map(crate::time::rfc3339)
                .as_deref(),
            Some("2026-03-17T22:59:59.999Z")
        );
        assert_eq!(
            end_of_day_ms(day("2026-07-17"))
                .map(crate::time::rfc3339)
                .as_deref(),
            Some("2026-07-17T21:59:59.999Z")
        );
        // Filed at 00:30 on the 3rd: 15 days end with Wednesday the 18th.
        assert_eq!(
            deadline_ms(ms, 15).map(crate::time::rfc3339).as_deref(),
            Some("2026-03-18T22:59:59.999Z")
        );
    }

    #[test]
    fn a_warning_in_days_counts_working_days() {
        let at = |s: &str| end_of_day_ms(day(s)).unwrap() - 3_600_000;
        let end = |s: &str| end_of_day_ms(day(s)).unwrap();
        // Thursday 9 April 2026, three working days ahead: Good Friday to
        // Easter Monday do not count, so Tuesday 14, Wednesday 15, Thursday 16.
        assert_eq!(
            working_days_after(at("2026-04-09"), 3),
            Some(end("2026-04-16"))
        );
        assert_eq!(
            working_days_after(at("2026-04-09"), 0),
            Some(end("2026-04-09"))
        );
        let days = |n: u64| std::time::Duration::from_secs(n * 86_400);
        assert_eq!(warning_until(at("2026-04-09"), days(3)), end("2026-04-16"));
        // Not whole days: plain time.
        let t = at("2026-04-09");
        assert_eq!(
            warning_until(t, std::time::Duration::from_secs(90)),
            t + 90_000
        );
        assert_eq!(
            deadline_after(t, std::time::Duration::from_millis(86_400_500)),
            t + 86_400_500
        );
        // Whole days: as ZUP counts (Thursday 9 April 2026 + 2 = Saturday
        // the 11th, in Easter: Tuesday the 14th).
        assert_eq!(deadline_after(t, days(2)), end("2026-04-14"));
    }

    proptest::proptest! {
        /// Whatever the start and length: the last day is a working day,
        /// not before the counted day, every day moved over is off, and
        /// the limit ends on the first working day at or after the count.
        #[test]
        fn a_limit_always_ends_on_the_first_working_day_from_its_count(
            start in 0i64..(200 * 365),
            days in 0u32..400,
        ) {
            let from = day("1950-01-01") + Days::days(start);
            let l = limit(from, days).unwrap();
            proptest::prop_assert!(off(l.last).is_none());
            proptest::prop_assert!(l.last >= l.counted);
            let mut d = l.counted;
            while d < l.last {
                proptest::prop_assert!(off(d).is_some());
                d = d.succ_opt().unwrap();
            }
            proptest::prop_assert_eq!(l.moved_over.len() as i64, (l.last - l.counted).num_days());
        }
    }
}
