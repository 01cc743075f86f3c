//! Small statistics: medians and percentiles, byte entropy, a chi-square uniformity test,
//! and bit differences.

use serde::{Deserialize, Serialize};

/// Summary of a sample: median and spread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of values.
    pub n: usize,
    /// Median.
    pub median: f64,
    /// 10th percentile.
    pub p10: f64,
    /// 90th percentile.
    pub p90: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl Summary {
    /// Summary of `values` (all zero if empty).
    pub fn of(values: &[f64]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        Self {
            n: v.len(),
            median: percentile_sorted(&v, 0.5),
            p10: percentile_sorted(&v, 0.1),
            p90: percentile_sorted(&v, 0.9),
            min: v[0],
            max: v[v.len() - 1],
        }
    }
}

/// The `q` quantile (0..=1) of sorted values, by linear interpolation.
pub fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = pos.ceil() as usize;
            sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
        }
    }
}

/// Median of `values`.
pub fn median(values: &[f64]) -> f64 {
    Summary::of(values).median
}

/// Counts of each byte value.
pub fn byte_histogram(data: &[u8]) -> [u64; 256] {
    let mut h = [0u64; 256];
    for &b in data {
        h[b as usize] += 1;
    }
    h
}

/// Shannon entropy of the byte distribution, bits per byte (0 to 8).
pub fn entropy_bits_per_byte(data: &[u8]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let n = data.len() as f64;
    byte_histogram(data)
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// Pearson's chi-square statistic of the byte histogram against the uniform distribution
/// (256 bins, 255 degrees of freedom) and its p-value (the probability of a statistic at least
/// this large if the bytes were uniform). Uniform random data: statistic ≈ 255, p anywhere in
/// (0, 1); structured data: a huge statistic and p ≈ 0.
pub fn chi_square_uniform(data: &[u8]) -> (f64, f64) {
    if data.is_empty() {
        return (0.0, 1.0);
    }
    let expected = data.len() as f64 / 256.0;
    let chi2: f64 = byte_histogram(data)
        .iter()
        .map(|&c| {
            let d = c as f64 - expected;
            d * d / expected
        })
        .sum();
    (chi2, chi_square_sf(chi2, 255.0))
}

/// Survival function of the chi-square distribution with `k` degrees of freedom.
pub fn chi_square_sf(x: f64, k: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    gamma_q(k / 2.0, x / 2.0)
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, 9 terms).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + 7.5;
    for (i, &c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Regularized upper incomplete gamma Q(a, x) (series below a + 1, continued fraction above).
fn gamma_q(a: f64, x: f64) -> f64 {
    let gln = ln_gamma(a);
    if x < a + 1.0 {
        let mut sum = 1.0 / a;
        let mut del = sum;
        let mut ap = a;
        for _ in 0..10_000 {
            ap += 1.0;
            del *= x / ap;
            sum += del;
            if del.abs() < sum.abs() * 1e-15 {
                break;
            }
        }
        let p = sum * (-x + a * x.ln() - gln).exp();
        (1.0 - p).clamp(0.0, 1.0)
    } else {
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..10_000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let del = d * c;
            h *= del;
            if (del - 1.0).abs() < 1e-15 {
                break;
            }
        }
        ((-x + a * x.ln() - gln).exp() * h).clamp(0.0, 1.0)
    }
}

/// Number of bits that differ between `a` and `b` (over the shorter length).
pub fn bits_differing(a: &[u8], b: &[u8]) -> u64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| u64::from((x ^ y).count_ones()))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_median() {
        let s = Summary::of(&[5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!(s.median, 3.0);
        assert_eq!(s.min, 1.0);
        assert_eq!(s.max, 5.0);
        assert!((s.p10 - 1.4).abs() < 1e-12);
        assert_eq!(median(&[1.0, 2.0]), 1.5);
    }

    #[test]
    fn entropy_extremes() {
        assert_eq!(entropy_bits_per_byte(&[7; 1000]), 0.0);
        let all: Vec<u8> = (0..=255u8).cycle().take(256 * 64).collect();
        assert!((entropy_bits_per_byte(&all) - 8.0).abs() < 1e-12);
    }

    #[test]
    fn chi_square_p_values() {
        // Known values: P(chi2_255 > 255) ≈ 0.4883, P(chi2_255 > 300) ≈ 0.0275,
        // P(chi2_2 > x) = exp(-x/2).
        assert!((chi_square_sf(255.0, 255.0) - 0.4883).abs() < 2e-3);
        assert!((chi_square_sf(300.0, 255.0) - 0.0275).abs() < 2e-3);
        assert!((chi_square_sf(3.0, 2.0) - (-1.5f64).exp()).abs() < 1e-9);
        assert!((chi_square_sf(0.5, 2.0) - (-0.25f64).exp()).abs() < 1e-9);
        // Perfectly uniform counts: statistic 0, p = 1; constant data: p ≈ 0.
        let all: Vec<u8> = (0..=255u8).cycle().take(256 * 64).collect();
        assert_eq!(chi_square_uniform(&all), (0.0, 1.0));
        assert!(chi_square_uniform(&[1; 4096]).1 < 1e-100);
    }

    #[test]
    fn bit_differences() {
        assert_eq!(bits_differing(&[0xff, 0x00], &[0x0f, 0x01]), 5);
    }
}
