//! Kubernetes resource quantities ("250m", "0.5", "128Mi", "1G", "1e3"), as the API server
//! reads them, turned into the units a cgroup takes: millicores for cpu, bytes for memory.

/// The value of `text` in thousandths of its unit, rounded up (so "1m" cpu is 1 millicore
/// and "1.5Ki" memory is 1536000 milli-bytes), or why it is not a quantity.
pub fn parse_milli(text: &str) -> Result<i128, String> {
    let bad = || {
        format!(
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' (got {text:?})"
        )
    };
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    if number.is_empty() || number.matches('.').count() > 1 || number[1..].contains(['+', '-']) {
        return Err(bad());
    }
    let negative = number.starts_with('-');
    let digits = number.trim_start_matches(['+', '-']);
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(bad());
    }
    // The number as a fraction mantissa / 10^scale, kept exact.
    let mantissa: i128 = format!("{int_part}{frac_part}").parse().map_err(|_| bad())?;
    let mut scale = frac_part.len() as i32;
    let (binary, decimal_exp): (i128, i32) = match suffix {
        "" => (1, 0),
        "n" => (1, -9),
        "u" => (1, -6),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        s if s.starts_with(['e', 'E']) => (1, s[1..].parse::<i32>().map_err(|_| bad())?),
        _ => return Err(bad()),
    };
    // Thousandths: three more decimal places.
    scale -= decimal_exp + 3;
    let mut value = mantissa.checked_mul(binary).ok_or_else(|| format!("quantity {text:?} is too large"))?;
    if scale < 0 {
        for _ in 0..-scale {
            value = value.checked_mul(10).ok_or_else(|| format!("quantity {text:?} is too large"))?;
        }
    } else if scale > 0 {
        let divisor = 10i128.checked_pow(scale as u32).ok_or_else(|| format!("quantity {text:?} is too precise"))?;
        value = (value + divisor - 1) / divisor;
    }
    Ok(if negative { -value } else { value })
}

/// A cpu quantity in millicores ("250m" → 250, "1.5" → 1500).
pub fn cpu_millis(text: &str) -> Result<i64, String> {
    let m = parse_milli(text)?;
    i64::try_from(m).map_err(|_| format!("quantity {text:?} is too large"))
}

/// A memory quantity in bytes, rounded up ("128Mi" → 134217728).
pub fn memory_bytes(text: &str) -> Result<i64, String> {
    let m = parse_milli(text)?;
    i64::try_from((m + 999).div_euclid(1000)).map_err(|_| format!("quantity {text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forms_users_write() {
        assert_eq!(cpu_millis("250m"), Ok(250));
        assert_eq!(cpu_millis("1"), Ok(1000));
        assert_eq!(cpu_millis("0.5"), Ok(500));
        assert_eq!(cpu_millis("200m"), Ok(200));
        assert_eq!(cpu_millis("0.0001"), Ok(1), "rounded up, as the API server does");
        assert_eq!(memory_bytes("128Mi"), Ok(128 << 20));
        assert_eq!(memory_bytes("1G"), Ok(1_000_000_000));
        assert_eq!(memory_bytes("1.5Ki"), Ok(1536));
        assert_eq!(memory_bytes("1e3"), Ok(1000));
        assert_eq!(memory_bytes("20971520"), Ok(20_971_520));
        for bad in ["", "Mi", "1..5", "1Xi", "abc", "1.5.5", "--1", "1e"] {
            assert!(parse_milli(bad).is_err(), "{bad:?}");
        }
        assert!(memory_bytes("99999999999999999999Ei").is_err());
    }
}
