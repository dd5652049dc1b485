//! Go `time.ParseDuration` syntax (`90s`, `1m30s`, `1.5h`, `300ms`, `0`), which is what MetalLB's
//! `holdTime`, `keepaliveTime` and legacy `hold-time` accept. Negative durations are rejected:
//! no FerroLB field has a meaning for them.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty")]
    Empty,
    #[error("negative durations are not allowed")]
    Negative,
    #[error("missing unit (one of ns, us, ms, s, m, h)")]
    MissingUnit,
    #[error("unknown unit {0:?}")]
    UnknownUnit(String),
    #[error("expected a number")]
    ExpectedNumber,
    #[error("too large")]
    Overflow,
}

/// Parses a Go duration string.
pub fn parse_go_duration(text: &str) -> Result<Duration, DurationError> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(DurationError::Empty);
    }
    if let Some(r) = rest.strip_prefix('-') {
        // "-0" is zero in Go; anything else negative is refused.
        return if parse_go_duration(r)? == Duration::ZERO {
            Ok(Duration::ZERO)
        } else {
            Err(DurationError::Negative)
        };
    }
    if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(after) => {
                let frac_len = after.bytes().take_while(u8::is_ascii_digit).count();
                after.split_at(frac_len)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(DurationError::ExpectedNumber);
        }
        let unit_len = after
            .bytes()
            .take_while(|b| !b.is_ascii_digit() && *b != b'.')
            .count();
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "" => return Err(DurationError::MissingUnit),
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            other => return Err(DurationError::UnknownUnit(other.to_string())),
        };
        let int_value: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| DurationError::Overflow)?
        };
        let mut nanos = int_value
            .checked_mul(unit_nanos)
            .ok_or(DurationError::Overflow)?;
        // Fraction: only the digits that can matter at nanosecond resolution.
        let mut scale = unit_nanos;
        for digit in frac_part.bytes().take(20) {
            scale /= 10;
            nanos += u128::from(digit - b'0') * scale;
        }
        total_nanos = total_nanos
            .checked_add(nanos)
            .ok_or(DurationError::Overflow)?;
        // Go's limit: ~292 years in int64 nanoseconds.
        if total_nanos > i64::MAX as u128 {
            return Err(DurationError::Overflow);
        }
        rest = after;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| DurationError::Overflow)?;
    // The remainder is < 1e9 and fits in u32.
    let sub = (total_nanos % 1_000_000_000) as u32;
    Ok(Duration::new(secs, sub))
}

/// Formats a duration the way Go prints simple ones (`1m30s`, `90ms`), for `migrate`.
pub fn format_go_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    if d.subsec_nanos() != 0 {
        if d.as_secs() == 0 && d.subsec_nanos().is_multiple_of(1_000_000) {
            return format!("{}ms", d.subsec_millis());
        }
        return format!("{}ns", d.as_nanos());
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{s}s"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_examples() {
        assert_eq!(parse_go_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_go_duration(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("90"), Err(DurationError::MissingUnit));
        assert_eq!(
            parse_go_duration("3d"),
            Err(DurationError::UnknownUnit("d".into()))
        );
        assert_eq!(parse_go_duration("-3s"), Err(DurationError::Negative));
        assert_eq!(parse_go_duration("s"), Err(DurationError::ExpectedNumber));
        assert_eq!(
            parse_go_duration("99999999999999999999h"),
            Err(DurationError::Overflow)
        );
        assert_eq!(format_go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_go_duration(Duration::from_secs(3)), "3s");
    }
}
