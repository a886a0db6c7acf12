//! Times as Kubernetes objects carry them (metav1.Time: RFC 3339 in UTC, whole seconds),
//! through chrono, and the short ages kubectl shows (`5m`, `2d3h`).

use std::time::SystemTime;

use chrono::{DateTime, SecondsFormat, Utc};

pub fn now() -> DateTime<Utc> {
    DateTime::<Utc>::from(SystemTime::now())
}

pub fn now_secs() -> i64 {
    now().timestamp()
}

/// Now, as metav1.Time writes it: `2026-11-22T17:00:00Z`.
pub fn now_rfc3339() -> String {
    format_rfc3339(now_secs())
}

/// Seconds since the epoch as metav1.Time writes them. Out of chrono's range (about
/// ±262,000 years) the nearest end is written: the seconds may come from a client.
pub fn format_rfc3339(secs: i64) -> String {
    let t = DateTime::<Utc>::from_timestamp(secs, 0).unwrap_or(if secs < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    });
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Seconds since the epoch of an RFC 3339 time (any offset, fractions dropped); None if
/// it is not one.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp())
}

/// A duration as kubectl prints ages (k8s.io/apimachinery's HumanDuration).
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    let (m, h) = (s / 60, s / 3600);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 { format!("{m}m") } else { format!("{m}m{}s", s % 60) }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 { format!("{h}h") } else { format!("{h}h{}m", m % 60) }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 { format!("{}d", h / 24) } else { format!("{}d{}h", h / 24, h % 24) }
    } else if h < 24 * 365 * 2 {
        format!("{}d", h / 24)
    } else if h < 24 * 365 * 8 {
        let y = h / (24 * 365);
        let d = (h % (24 * 365)) / 24;
        if d == 0 { format!("{y}y") } else { format!("{y}y{d}d") }
    } else {
        format!("{}y", h / (24 * 365))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_dates() {
        for (secs, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_795_305_600, "2026-11-22T00:00:00Z"),
        ] {
            assert_eq!(format_rfc3339(secs), text);
            assert_eq!(parse_rfc3339(text), Some(secs));
        }
        assert_eq!(parse_rfc3339("2026-11-22T01:00:00.123+01:00"), Some(1_795_305_600));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn seconds_out_of_range_are_written_as_the_nearest_end() {
        assert!(format_rfc3339(i64::MAX).starts_with("+262"));
        assert!(format_rfc3339(i64::MIN).starts_with("-262"));
    }

    #[test]
    fn ages_read_like_kubectl() {
        for (secs, text) in [
            (5, "5s"),
            (119, "119s"),
            (150, "2m30s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (30 * 3600, "30h"),
            (3 * 86400 + 3600, "3d1h"),
            (40 * 86400, "40d"),
        ] {
            assert_eq!(human_duration(secs), text, "{secs}");
        }
    }
}
