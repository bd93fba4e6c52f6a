//! Monitoring history: one row per series and time, at the sampler's
//! resolution for recent data and as coarser averages (with maxima) for
//! older data. Times are Unix seconds.

use super::{Store, StoreError};
use rusqlite::{OptionalExtension, params};

/// A value to store at the sampler's resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplePoint {
    pub series: String,
    pub at: i64,
    pub value: f64,
}

/// A stored value: an average over `resolution` seconds from `at`, and the
/// largest value seen in that time.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSample {
    pub at: i64,
    pub resolution: i64,
    pub value: f64,
    pub max: f64,
}

impl Store {
    /// Writes a batch in one transaction (one fsync at most, whatever its size).
    pub fn append_samples(
        &self,
        resolution: i64,
        points: &[SamplePoint],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut add_series =
                tx.prepare_cached("INSERT OR IGNORE INTO monitoring_series (name) VALUES (?1)")?;
            let mut series_id =
                tx.prepare_cached("SELECT id FROM monitoring_series WHERE name = ?1")?;
            let mut add = tx.prepare_cached(
                "INSERT OR REPLACE INTO monitoring_samples (series, at, resolution, value, max)
                 VALUES (?1, ?2, ?3, ?4, NULL)",
            )?;
            for point in points {
                add_series.execute([&point.series])?;
                let id: i64 = series_id.query_row([&point.series], |r| r.get(0))?;
                add.execute(params![id, point.at, resolution, point.value])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The samples of `series` with `from <= at < to`, oldest first.
    pub fn samples(
        &self,
        series: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<StoredSample>, StoreError> {
        let conn = self.conn();
        let Some(id) = conn
            .prepare_cached("SELECT id FROM monitoring_series WHERE name = ?1")?
            .query_row([series], |r| r.get::<_, i64>(0))
            .optional()?
        else {
            return Ok(Vec::new());
        };
        let mut stmt = conn.prepare_cached(
            "SELECT at, resolution, value, COALESCE(max, value) FROM monitoring_samples
             WHERE series = ?1 AND at >= ?2 AND at < ?3 ORDER BY at",
        )?;
        let rows = stmt.query_map(params![id, from, to], |r| {
            Ok(StoredSample {
                at: r.get(0)?,
                resolution: r.get(1)?,
                value: r.get(2)?,
                max: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The names of the series that start with `prefix`.
    pub fn series_named(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT name FROM monitoring_series WHERE substr(name, 1, length(?1)) = ?1 ORDER BY name",
        )?;
        let rows = stmt.query_map([prefix], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Turns the samples at `fine` resolution older than `fine_until` into
    /// averages (and maxima) over `coarse` seconds, drops the coarse ones
    /// older than `coarse_until` and forgets series left empty. Only whole
    /// coarse intervals are merged, so each is merged once. Returns the
    /// number of rows removed.
    pub fn downsample_samples(
        &self,
        fine: i64,
        coarse: i64,
        fine_until: i64,
        coarse_until: i64,
    ) -> Result<usize, StoreError> {
        let fine_until = fine_until.div_euclid(coarse) * coarse;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut removed = 0;
        {
            let ids: Vec<i64> = tx
                .prepare_cached("SELECT id FROM monitoring_series")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let mut merge = tx.prepare_cached(
                "INSERT INTO monitoring_samples (series, at, resolution, value, max)
                 SELECT series, (at / ?3) * ?3, ?3, AVG(value), MAX(COALESCE(max, value))
                 FROM monitoring_samples
                 WHERE series = ?1 AND resolution = ?2 AND at < ?4
                 GROUP BY at / ?3
                 ON CONFLICT (series, at, resolution) DO UPDATE
                 SET value = (value + excluded.value) / 2, max = MAX(max, excluded.max)",
            )?;
            let mut drop_fine = tx.prepare_cached(
                "DELETE FROM monitoring_samples WHERE series = ?1 AND resolution = ?2 AND at < ?3",
            )?;
            let mut drop_coarse = tx.prepare_cached(
                "DELETE FROM monitoring_samples WHERE series = ?1 AND resolution = ?2 AND at < ?3",
            )?;
            let mut forget = tx.prepare_cached(
                "DELETE FROM monitoring_series WHERE id = ?1
                 AND NOT EXISTS (SELECT 1 FROM monitoring_samples WHERE series = ?1)",
            )?;
            for id in ids {
                merge.execute(params![id, fine, coarse, fine_until])?;
                removed += drop_fine.execute(params![id, fine, fine_until])?;
                removed += drop_coarse.execute(params![id, coarse, coarse_until])?;
                forget.execute([id])?;
            }
        }
        tx.commit()?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(series: &str, at: i64, value: f64) -> SamplePoint {
        SamplePoint {
            series: series.into(),
            at,
            value,
        }
    }

    #[test]
    fn old_samples_become_averages_with_maxima_then_go() {
        let store = Store::open_in_memory().unwrap();
        // Two 300 s intervals of 10 s samples, and one recent sample.
        let mut points: Vec<_> = (0..60).map(|i| point("cpu", i * 10, i as f64)).collect();
        points.push(point("cpu", 10_000, 7.0));
        points.push(point("gone", 0, 1.0));
        store.append_samples(10, &points).unwrap();
        // Everything before 610 is old; only whole intervals are merged.
        let removed = store.downsample_samples(10, 300, 610, -1).unwrap();
        assert_eq!(removed, 61);
        let cpu = store.samples("cpu", 0, 20_000).unwrap();
        let summary: Vec<_> = cpu
            .iter()
            .map(|s| (s.at, s.resolution, s.value, s.max))
            .collect();
        assert_eq!(
            summary,
            vec![
                (0, 300, 14.5, 29.0),
                (300, 300, 44.5, 59.0),
                (10_000, 10, 7.0, 7.0)
            ]
        );
        // Merging again changes nothing.
        assert_eq!(store.downsample_samples(10, 300, 610, -1).unwrap(), 0);
        assert_eq!(store.samples("cpu", 0, 20_000).unwrap(), cpu);
        // Past the coarse retention: gone, and so is the emptied series.
        store.downsample_samples(10, 300, 610, 300).unwrap();
        assert_eq!(store.samples("cpu", 0, 20_000).unwrap().len(), 2);
        assert!(store.samples("gone", 0, 20_000).unwrap().is_empty());
        assert_eq!(store.series_named("").unwrap(), vec!["cpu".to_owned()]);
    }

    #[test]
    fn series_are_listed_by_prefix_and_read_by_range() {
        let store = Store::open_in_memory().unwrap();
        store
            .append_samples(
                10,
                &[
                    point("mem:a", 5, 1.0),
                    point("mem:b", 15, 2.0),
                    point("cpu", 5, 3.0),
                ],
            )
            .unwrap();
        assert_eq!(store.series_named("mem:").unwrap(), ["mem:a", "mem:b"]);
        assert_eq!(store.samples("mem:b", 0, 15).unwrap(), vec![]);
        assert_eq!(store.samples("mem:b", 15, 16).unwrap().len(), 1);
        assert_eq!(store.samples("absent", 0, 100).unwrap(), vec![]);
    }
}
