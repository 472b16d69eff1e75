//! Timestamps as RFC 3339 text, computed from the value alone (no clock, no time zone database).

use idem_core::Timestamp;

/// `t` as RFC 3339 in UTC with milliseconds, e.g. `2023-11-14T22:13:20.123Z`.
#[must_use]
pub fn rfc3339_utc(t: Timestamp) -> String {
    let ms = t.unix_ms();
    let days = ms / 86_400_000;
    let ms_of_day = ms % 86_400_000;
    let (year, month, day) = civil_from_days(days);
    let (hour, minute) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60);
    let (second, milli) = (ms_of_day / 1_000 % 60, ms_of_day % 1_000);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{milli:03}Z")
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`,
/// restricted to dates after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    const DAYS_PER_ERA: u64 = 146_097;
    // Shift the epoch to 0000-03-01 so that leap days fall at the end of each year.
    let z = days + 719_468;
    let era = z / DAYS_PER_ERA;
    let day_of_era = z - era * DAYS_PER_ERA;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn formats_like_humantime_across_leap_years_and_centuries() {
        // Goal: our arithmetic agrees with an independent implementation on many dates.
        let mut ms = 0u64;
        while ms < 7_000_000_000_000 {
            let expected = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string();
            assert_eq!(rfc3339_utc(Timestamp::from_unix_ms(ms)), expected, "at {ms} ms");
            ms += 86_400_000 * 13 + 3_723_456;
        }
        assert_eq!(rfc3339_utc(Timestamp::from_unix_ms(951_782_400_000)), "2000-02-29T00:00:00.000Z");
    }
}
