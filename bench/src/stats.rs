//! Order statistics over repeated measurements: medians, percentiles and ratios of medians.
//!
//! The harness quotes medians (robust against the outliers a shared 2-core machine produces)
//! and percentiles of latency samples; it never averages throughputs of different runs.

/// The `p`-th percentile (`0.0..=100.0`) of already **sorted** values, by the nearest-rank
/// method (always one of the values; no interpolation). `None` for no values.
///
/// ```
/// use vchan_bench::stats::percentile_sorted;
/// let v = [1.0, 2.0, 3.0, 4.0, 100.0];
/// assert_eq!(percentile_sorted(&v, 50.0), Some(3.0));
/// assert_eq!(percentile_sorted(&v, 99.0), Some(100.0));
/// assert_eq!(percentile_sorted(&v, 0.0), Some(1.0));
/// ```
pub fn percentile_sorted<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    // Nearest rank: the smallest value with at least p% of the values at or below it.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The median of `values` (the mean of the two middle ones for an even count). `None` for
/// no values; NaNs sort last.
///
/// ```
/// use vchan_bench::stats::median;
/// assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
/// assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
/// assert_eq!(median(&[]), None);
/// ```
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// A summary of repeated measurements of one quantity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// The median.
    pub median: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
    /// How many values.
    pub n: usize,
}

impl Summary {
    /// Summarises `values`; `None` for no values.
    ///
    /// ```
    /// use vchan_bench::stats::Summary;
    /// let s = Summary::of(&[5.0, 1.0, 3.0]).unwrap();
    /// assert_eq!((s.median, s.min, s.max, s.n), (3.0, 1.0, 5.0, 3));
    /// ```
    pub fn of(values: &[f64]) -> Option<Summary> {
        let median = median(values)?;
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(Summary {
            median,
            min,
            max,
            n: values.len(),
        })
    }

    /// The spread around the median, `(max - min) / median`, as a fraction.
    pub fn spread(&self) -> f64 {
        if self.median == 0.0 {
            0.0
        } else {
            (self.max - self.min) / self.median
        }
    }
}

/// Latency percentiles of a set of samples, in the samples' unit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Latency {
    /// The smallest sample.
    pub min: f64,
    /// The median.
    pub p50: f64,
    /// The 90th percentile.
    pub p90: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// The 99.9th percentile.
    pub p999: f64,
    /// The arithmetic mean.
    pub mean: f64,
    /// How many samples.
    pub n: usize,
}

impl Latency {
    /// Percentiles of `samples` (sorted in place); `None` for no samples.
    ///
    /// ```
    /// use vchan_bench::stats::Latency;
    /// let mut s: Vec<f64> = (1..=1000).map(f64::from).collect();
    /// let l = Latency::of(&mut s).unwrap();
    /// assert_eq!((l.min, l.p50, l.p99, l.n), (1.0, 500.0, 990.0, 1000));
    /// ```
    pub fn of(samples: &mut [f64]) -> Option<Latency> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_by(f64::total_cmp);
        let p = |q| percentile_sorted(samples, q).unwrap_or(f64::NAN);
        Some(Latency {
            min: samples[0],
            p50: p(50.0),
            p90: p(90.0),
            p99: p(99.0),
            p999: p(99.9),
            mean: samples.iter().sum::<f64>() / samples.len() as f64,
            n: samples.len(),
        })
    }
}

/// `a / b`, or `None` when either is missing or `b` is not positive.
///
/// ```
/// use vchan_bench::stats::ratio;
/// assert_eq!(ratio(Some(6.0), Some(2.0)), Some(3.0));
/// assert_eq!(ratio(Some(6.0), None), None);
/// assert_eq!(ratio(Some(6.0), Some(0.0)), None);
/// ```
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() && b.is_finite() => Some(a / b),
        _ => None,
    }
}

/// At most `points` evenly spaced (by rank) values of sorted `samples`, as
/// `(value, fraction of samples at or below it)`: an empirical CDF small enough to plot.
///
/// ```
/// use vchan_bench::stats::cdf_points;
/// let s: Vec<f64> = (1..=100).map(f64::from).collect();
/// let c = cdf_points(&s, 5);
/// assert_eq!(c.len(), 5);
/// assert_eq!(c.last(), Some(&(100.0, 1.0)));
/// ```
pub fn cdf_points(sorted: &[f64], points: usize) -> Vec<(f64, f64)> {
    let n = sorted.len();
    if n == 0 || points == 0 {
        return Vec::new();
    }
    let points = points.min(n);
    (1..=points)
        .map(|i| {
            let rank = (i * n).div_ceil(points);
            (sorted[rank - 1], rank as f64 / n as f64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u32> = (1..=10).collect();
        assert_eq!(percentile_sorted(&v, 10.0), Some(1));
        assert_eq!(percentile_sorted(&v, 11.0), Some(2));
        assert_eq!(percentile_sorted(&v, 100.0), Some(10));
        assert_eq!(percentile_sorted(&v, 150.0), Some(10));
        assert_eq!(percentile_sorted::<u32>(&[], 50.0), None);
        assert_eq!(percentile_sorted(&[7], 99.9), Some(7));
    }

    #[test]
    fn summary_and_spread() {
        let s = Summary::of(&[2.0, 4.0, 6.0, 8.0]).unwrap();
        assert_eq!(s.median, 5.0);
        assert!((s.spread() - 1.2).abs() < 1e-12);
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn median_ignores_order_and_handles_nan() {
        assert_eq!(median(&[9.0, 1.0, 5.0]), Some(5.0));
        // NaN sorts last with total_cmp: the median of three is the middle finite value.
        assert_eq!(median(&[f64::NAN, 1.0, 2.0]), Some(2.0));
    }

    #[test]
    fn cdf_is_monotonic_and_ends_at_one() {
        let s: Vec<f64> = (0..1234).map(|i| f64::from(i) * 0.5).collect();
        let c = cdf_points(&s, 100);
        assert_eq!(c.len(), 100);
        assert!(c.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1));
        assert_eq!(c.last().unwrap().1, 1.0);
        assert!(cdf_points(&[], 10).is_empty());
    }
}
