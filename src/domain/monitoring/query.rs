//! A range and step as the app asks them, and samples bucketed by it.

use crate::state::StoredSample;
use chrono::{DateTime, Utc};

/// The most points one series may have in an answer.
pub const MAX_POINTS: i64 = 11_000;
/// The range when the app gives no start: the last 20 minutes.
const DEFAULT_SPAN: i64 = 20 * 60;

/// Unix seconds, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryRange {
    pub start: i64,
    pub end: i64,
    pub step: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The start of the step the values are over.
    pub at: DateTime<Utc>,
    pub average: f64,
    pub max: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricSeries {
    pub id: String,
    pub points: Vec<Point>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSummary {
    pub service: String,
    pub average: f64,
    pub max: f64,
}

impl QueryRange {
    /// `end` defaults to now and `start` to 20 minutes before `end`. The
    /// reason is given back when the range cannot be answered.
    pub fn new(
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
        step: i32,
        now: DateTime<Utc>,
    ) -> Result<QueryRange, String> {
        if step <= 0 {
            return Err(format!(
                "step must be a positive number of seconds, not {step}"
            ));
        }
        let end = end.unwrap_or(now).timestamp();
        let start = start.map_or(end - DEFAULT_SPAN, |s| s.timestamp());
        if start > end {
            return Err("start must not be after end".to_owned());
        }
        let step = i64::from(step);
        let points = (end - start) / step + 1;
        if points > MAX_POINTS {
            return Err(format!(
                "{points} points per series asked (range / step); at most {MAX_POINTS}: use a larger step"
            ));
        }
        Ok(QueryRange { start, end, step })
    }

    /// The same range as one step.
    pub fn whole(&self) -> QueryRange {
        QueryRange {
            step: self.end - self.start + 1,
            ..*self
        }
    }

    /// Averages and maxima per step, oldest first; steps without samples
    /// are left out.
    pub fn bucket(&self, samples: &[StoredSample]) -> Vec<Point> {
        let mut buckets: std::collections::BTreeMap<i64, (f64, usize, f64)> = Default::default();
        for sample in samples
            .iter()
            .filter(|s| s.at >= self.start && s.at <= self.end)
        {
            let index = (sample.at - self.start) / self.step;
            let entry = buckets.entry(index).or_insert((0.0, 0, f64::MIN));
            entry.0 += sample.value;
            entry.1 += 1;
            entry.2 = entry.2.max(sample.max);
        }
        buckets
            .into_iter()
            .filter_map(|(index, (sum, count, max))| {
                Some(Point {
                    at: DateTime::from_timestamp(self.start + index * self.step, 0)?,
                    average: sum / count as f64,
                    max,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).unwrap()
    }

    fn sample(at: i64, value: f64, max: f64) -> StoredSample {
        StoredSample {
            at,
            resolution: 10,
            value,
            max,
        }
    }

    #[test]
    fn ranges_default_to_the_last_twenty_minutes_and_refuse_bad_steps() {
        let now = at(100_000);
        assert_eq!(
            QueryRange::new(None, None, 60, now),
            Ok(QueryRange {
                start: 100_000 - 1200,
                end: 100_000,
                step: 60
            })
        );
        assert!(QueryRange::new(None, None, 0, now).is_err());
        assert!(QueryRange::new(None, None, -5, now).is_err());
        assert!(QueryRange::new(Some(at(200_000)), None, 60, now).is_err());
        assert!(QueryRange::new(Some(at(0)), None, 1, now).is_err());
        assert!(QueryRange::new(Some(at(0)), None, 10, now).is_ok());
    }

    #[test]
    fn samples_are_averaged_per_step_with_their_maxima() {
        let range = QueryRange {
            start: 1000,
            end: 1200,
            step: 60,
        };
        let points = range.bucket(&[
            sample(990, 99.0, 99.0),
            sample(1000, 10.0, 10.0),
            sample(1050, 20.0, 35.0),
            sample(1130, 5.0, 5.0),
            sample(1200, 1.0, 1.0),
            sample(1201, 99.0, 99.0),
        ]);
        let summary: Vec<_> = points
            .iter()
            .map(|p| (p.at.timestamp(), p.average, p.max))
            .collect();
        assert_eq!(
            summary,
            vec![(1000, 15.0, 35.0), (1120, 5.0, 5.0), (1180, 1.0, 1.0)]
        );
        let whole = range
            .whole()
            .bucket(&[sample(1000, 10.0, 10.0), sample(1200, 30.0, 50.0)]);
        assert_eq!(whole.len(), 1);
        assert_eq!((whole[0].average, whole[0].max), (20.0, 50.0));
    }
}
