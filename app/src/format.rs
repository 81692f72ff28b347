//! Small formatting helpers shared by the pages (numbers, shares, dates in UTC).

pub fn percent(value: Option<f64>) -> String {
    value.map(|v| format!("{:.0}%", v * 100.0)).unwrap_or_else(|| "–".into())
}

pub fn decimal(value: Option<f64>) -> String {
    value.map(|v| format!("{v:.3}")).unwrap_or_else(|| "–".into())
}

pub fn seconds(ms: Option<f64>) -> String {
    ms.map(|ms| format!("{:.1} s", ms / 1000.0)).unwrap_or_else(|| "–".into())
}

/// `YYYY-MM-DD HH:MM` (UTC) for a time in ms since the epoch.
pub fn utc_minute(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}", rem / 3600, rem % 3600 / 60)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc_minute(0), "1970-01-01 00:00");
        assert_eq!(utc_minute(951_782_400_000 + 3_660_000), "2000-02-29 01:01");
        assert_eq!(utc_minute(1_795_000_000_000), "2026-11-18 11:06");
    }

    #[test]
    fn missing_values_show_a_dash() {
        assert_eq!(percent(None), "–");
        assert_eq!(percent(Some(0.5)), "50%");
        assert_eq!(decimal(Some(0.12345)), "0.123");
        assert_eq!(seconds(Some(1500.0)), "1.5 s");
    }
}
