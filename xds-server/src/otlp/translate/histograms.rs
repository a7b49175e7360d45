//! The two bucket layouts OTLP histograms come in — explicit bounds and
//! exponential scales — turned into a cluster's latency counts in
//! milliseconds, for Envoy's and applications' histograms alike.

use super::*;

impl<'r> Run<'_, 'r> {
    /// Adds a histogram point's `count` observations (and requests, if
    /// they count as such) to the target, and its latencies if it has any.
    pub(super) fn add_observed(
        &mut self,
        target: Target<'r>,
        count: u64,
        latency: Option<(&Bounds<'r>, &[u64])>,
    ) -> Result<(), Option<String>> {
        let requests = if target.requests { count } else { 0 };
        let totals = &mut self.out.totals;
        let i = totals
            .add(
                (target.cluster, target.origin),
                target.kind,
                (requests, count),
                target.failed,
                MAX_COUNT,
            )
            .ok_or_else(|| Some(implausible(count)))?;
        if let Some((bounds, counts)) = latency
            && count > 0
        {
            totals.add_latency(i, bounds, counts);
            if target.kind == SourceKind::Application {
                // Kept for the point's device segments too.
                let start = self.out.app_counts.len();
                self.out.app_counts.extend_from_slice(counts);
                self.app_latency = Some((bounds.clone(), start..self.out.app_counts.len()));
            }
        }
        Ok(())
    }

    // ---- histograms -----------------------------------------------------

    /// An explicit-bucket histogram point: adds its latencies to the target
    /// and says how many observations it added (`None` for the first value
    /// of a cumulative stream), or why it is rejected (`Err(None)`: it
    /// carries no value and is ignored).
    pub(super) fn explicit(
        &mut self,
        stream: Stream<'_>,
        temporality: Temporality,
        point: &'r HistogramDataPoint,
        ms_per_unit: f64,
        target: Target<'r>,
    ) -> Result<Option<u64>, Option<String>> {
        if self.no_recorded_value(&stream, point.flags) {
            return Err(None);
        }
        let temporality = temporality.check().map_err(Some)?;
        let bounds = &point.explicit_bounds[..];
        let counts = &point.bucket_counts[..];
        if bounds.len() > MAX_EXPLICIT_BOUNDS {
            return Err(Some(format!(
                "more than {MAX_EXPLICIT_BOUNDS} explicit_bounds"
            )));
        }
        if bounds.iter().any(|b| !b.is_finite()) || bounds.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Some(
                "explicit_bounds must be finite and strictly increasing".to_owned(),
            ));
        }
        if !counts.is_empty() {
            if counts.len() != bounds.len() + 1 {
                return Err(Some(format!(
                    "{} bucket_counts for {} explicit_bounds (expected {})",
                    counts.len(),
                    bounds.len(),
                    bounds.len() + 1
                )));
            }
            let total = counts.iter().try_fold(0u64, |sum, &c| sum.checked_add(c));
            if total != Some(point.count) {
                return Err(Some(format!(
                    "count {} is not the sum of bucket_counts",
                    point.count
                )));
            }
        }
        let cumulative = temporality == Temporality::Cumulative;
        let count = if cumulative {
            let times = (point.start_time_unix_nano, point.time_unix_nano);
            let counts_first = self.counts_first(stream.resource, times);
            stream.key(&mut self.key);
            let value = (bounds, counts, point.count);
            match self.streams.get().explicit(
                &self.key,
                self.now_ms,
                value,
                counts_first,
                &mut self.added,
            ) {
                Ok(Delta::Added(count)) => count,
                Ok(Delta::Baseline) => return Ok(None),
                Err(_) => return Err(Some(too_many_streams())),
            }
        } else {
            point.count
        };
        let bounds = self.bounds_ms(bounds, ms_per_unit);
        let added = std::mem::take(&mut self.added);
        let buckets = if cumulative { &added[..] } else { counts };
        // No buckets: a count without latencies.
        let latency = (!buckets.is_empty()).then_some((&bounds, buckets));
        let result = self.add_observed(target, count, latency);
        self.added = added;
        result.map(|()| Some(count))
    }

    /// `bounds` in milliseconds: taken as they are when already (Envoy's),
    /// else converted once per request (tidying costs a format and a parse
    /// per bound).
    fn bounds_ms(&mut self, bounds: &'r [f64], ms_per_unit: f64) -> Bounds<'r> {
        if ms_per_unit == 1.0 {
            return Bounds::Borrowed(bounds);
        }
        if let Some((from, unit, converted)) = &self.converted
            && *unit == ms_per_unit
            && *from == bounds
        {
            return Bounds::Converted(Rc::clone(converted));
        }
        let converted: Rc<[f64]> = bounds.iter().map(|b| tidy(b * ms_per_unit)).collect();
        self.converted = Some((bounds, ms_per_unit, Rc::clone(&converted)));
        Bounds::Converted(converted)
    }

    /// An exponential histogram point, as [`Self::explicit`].
    pub(super) fn exponential(
        &mut self,
        stream: Stream<'_>,
        temporality: Temporality,
        point: &ExponentialHistogramDataPoint,
        ms_per_unit: f64,
        target: Target<'r>,
    ) -> Result<Option<u64>, Option<String>> {
        if self.no_recorded_value(&stream, point.flags) {
            return Err(None);
        }
        let temporality = temporality.check().map_err(Some)?;
        if !(exponential::MIN_SCALE..=exponential::MAX_SCALE).contains(&point.scale) {
            return Err(Some(format!(
                "scale {} is outside {}..={}",
                point.scale,
                exponential::MIN_SCALE,
                exponential::MAX_SCALE
            )));
        }
        if point
            .negative
            .as_ref()
            .is_some_and(|n| n.bucket_counts.iter().any(|&c| c > 0))
        {
            return Err(Some("negative durations".to_owned()));
        }
        let (offset, counts) = point
            .positive
            .as_ref()
            .map_or((0, &[][..]), |p| (p.offset, &p.bucket_counts[..]));
        let total = counts
            .iter()
            .try_fold(point.zero_count, |sum, &c| sum.checked_add(c));
        if total != Some(point.count) {
            return Err(Some(format!(
                "count {} is not zero_count plus the positive bucket_counts",
                point.count
            )));
        }
        let buckets = Buckets::new(point.scale, point.zero_count, i64::from(offset), counts);
        let buckets = match temporality {
            Temporality::Cumulative => {
                let times = (point.start_time_unix_nano, point.time_unix_nano);
                let counts_first = self.counts_first(stream.resource, times);
                stream.key(&mut self.key);
                match self
                    .streams
                    .get()
                    .exponential(&self.key, self.now_ms, &buckets, counts_first)
                {
                    Ok(Delta::Added(added)) => added,
                    Ok(Delta::Baseline) => return Ok(None),
                    Err(_) => return Err(Some(too_many_streams())),
                }
            }
            _ => buckets,
        };
        let count = buckets.count();
        let latency = (count > 0).then(|| buckets.to_millis(ms_per_unit));
        let bounds = latency.as_ref().map(|h| match &h.native {
            None => Bounds::Borrowed(&exponential::BOUNDS_MS),
            Some(bounds) => Bounds::Converted(Rc::clone(bounds)),
        });
        self.add_observed(
            target,
            count,
            bounds
                .as_ref()
                .zip(latency.as_ref())
                .map(|(b, h)| (b, &h.counts[..])),
        )?;
        Ok(Some(count))
    }
}
