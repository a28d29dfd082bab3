//! RFC 3339 UTC timestamps without a date crate: manifests, SBOMs, audit records and runc's log
//! lines all print time the same way.

use std::time::Duration;

/// How much of the second a timestamp shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// `2026-11-29T00:07:37Z` (manifests, SBOMs).
    Seconds,
    /// `2026-11-29T00:07:37.123Z` (audit records).
    Millis,
    /// `2026-11-29T00:07:37.123456789Z` (runc's log, as logrus writes it).
    Nanos,
}

/// `since_epoch` as RFC 3339 UTC.
pub fn rfc3339(since_epoch: Duration, precision: Precision) -> String {
    let secs = since_epoch.as_secs() as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    let hms = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    match precision {
        Precision::Seconds => format!("{hms}Z"),
        Precision::Millis => format!("{hms}.{:03}Z", since_epoch.subsec_millis()),
        Precision::Nanos => format!("{hms}.{:09}Z", since_epoch.subsec_nanos()),
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// published algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates_in_every_precision() {
        let t = |s: u64, n: u32, p| rfc3339(Duration::new(s, n), p);
        assert_eq!(t(0, 0, Precision::Seconds), "1970-01-01T00:00:00Z");
        assert_eq!(
            t(951_782_400, 5_000_000, Precision::Millis),
            "2000-02-29T00:00:00.005Z"
        );
        assert_eq!(
            t(1_795_910_857, 123_456_789, Precision::Millis),
            "2026-11-29T00:07:37.123Z"
        );
        assert_eq!(
            t(1_795_910_857, 123_456_789, Precision::Nanos),
            "2026-11-29T00:07:37.123456789Z"
        );
        assert_eq!(
            t(1_798_761_599, 0, Precision::Seconds),
            "2026-12-31T23:59:59Z"
        );
        assert_eq!(
            t(4_107_542_400, 0, Precision::Seconds),
            "2100-03-01T00:00:00Z"
        );
    }
}
