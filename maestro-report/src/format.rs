//! Numbers for people.

/// A human duration from microseconds: `850 µs`, `1.25 ms`, `2.50 s`.
pub fn micros(us: i64) -> String {
    let abs = us.unsigned_abs();
    let sign = if us < 0 { "-" } else { "" };
    if abs < 1_000 {
        format!("{sign}{abs} µs")
    } else if abs < 1_000_000 {
        format!("{sign}{:.2} ms", abs as f64 / 1e3)
    } else {
        format!("{sign}{:.2} s", abs as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn micros_pick_their_unit() {
        assert_eq!(super::micros(850), "850 µs");
        assert_eq!(super::micros(1_250), "1.25 ms");
        assert_eq!(super::micros(-2_500_000), "-2.50 s");
    }
}
