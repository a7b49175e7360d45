//! Envoy's stats sink: `cluster.upstream_rq_xx` (requests and 5xx by
//! cluster), `cluster.upstream_rq_time` (their latency) and
//! `cluster.upstream_cx_connect_ms` (connect times, by the Envoy's region),
//! delta or cumulative.

use super::*;

impl<'r> Run<'_, 'r> {
    pub(super) fn envoy_requests(&mut self, resource: &Resource<'r>, metric: &'r Metric) {
        let Some(Data::Sum(sum)) = &metric.data else {
            return self.reject_all(metric, "expected a sum");
        };
        let temporality = Temporality::of(sum.aggregation_temporality);
        for point in &sum.data_points {
            let outcome = self.envoy_requests_point(resource, &metric.name, temporality, point);
            self.tally(&metric.name, outcome);
        }
    }

    fn envoy_requests_point(
        &mut self,
        resource: &Resource<'r>,
        name: &'r str,
        temporality: Temporality,
        point: &'r NumberDataPoint,
    ) -> Point {
        let Some(cluster) = string_attr(&point.attributes, ENVOY_CLUSTER) else {
            return Point::Rejected(format!("no attribute {ENVOY_CLUSTER}"));
        };
        let class = match int_attr(&point.attributes, ENVOY_RESPONSE_CLASS) {
            Some(Ok(class @ 1..=5)) => class,
            _ => return Point::Rejected(format!("{ENVOY_RESPONSE_CLASS} must be 1 to 5")),
        };
        let value = match self.counter_increase(resource, name, temporality, point) {
            Ok(Some(value)) => value,
            Ok(None) => return Point::Used,
            Err(None) => return Point::Ignored,
            Err(Some(why)) => return Point::Rejected(why),
        };
        let added = self.out.totals.add(
            (cluster, ""),
            SourceKind::Envoy,
            (value, 0),
            class == 5,
            MAX_COUNT,
        );
        match added {
            Some(_) => Point::Used,
            None => Point::Rejected(implausible(value)),
        }
    }

    /// A counter point's increase: as it is if delta, else since the
    /// stream's last value (`Ok(None)` for a first value that is only a
    /// baseline); `Err(None)` for a point without a recorded value.
    pub(super) fn counter_increase(
        &mut self,
        resource: &Resource<'r>,
        name: &'r str,
        temporality: Temporality,
        point: &'r NumberDataPoint,
    ) -> Result<Option<u64>, Option<String>> {
        let stream = Stream::new(resource, name, &point.attributes);
        if self.no_recorded_value(&stream, point.flags) {
            return Err(None);
        }
        let temporality = temporality.check().map_err(Some)?;
        let value = counter_value(point).map_err(Some)?;
        if temporality != Temporality::Cumulative {
            return Ok(Some(value));
        }
        let times = (point.start_time_unix_nano, point.time_unix_nano);
        let counts_first = self.counts_first(resource, times);
        stream.key(&mut self.key);
        match self
            .streams
            .get()
            .sum(&self.key, self.now_ms, value, counts_first)
        {
            Ok(Delta::Added(v)) => Ok(Some(v)),
            Ok(Delta::Baseline) => Ok(None),
            Err(_) => Err(Some(too_many_streams())),
        }
    }

    pub(super) fn envoy_latency(&mut self, resource: &Resource<'r>, metric: &'r Metric) {
        self.envoy_histogram(resource, metric, "", SourceKind::Envoy);
    }

    /// Connect times count only from an Envoy that names its region: they
    /// are that region's RTT to the cluster.
    pub(super) fn envoy_connect(&mut self, resource: &Resource<'r>, metric: &'r Metric) {
        match string_attr(resource.attributes, RESOURCE_REGION) {
            Some(region) => self.envoy_histogram(resource, metric, region, SourceKind::Connect),
            None => self.out.ignored += points(metric.data.as_ref()),
        }
    }

    /// A histogram of Envoy's by cluster: its observations go to the
    /// cluster's `kind` of source, measured from `origin`.
    fn envoy_histogram(
        &mut self,
        resource: &Resource<'r>,
        metric: &'r Metric,
        origin: &'r str,
        kind: SourceKind,
    ) {
        let Some(Data::Histogram(histogram)) = &metric.data else {
            return self.reject_all(metric, "expected a histogram with explicit buckets");
        };
        let temporality = Temporality::of(histogram.aggregation_temporality);
        for point in &histogram.data_points {
            let outcome = match string_attr(&point.attributes, ENVOY_CLUSTER) {
                None => Point::Rejected(format!("no attribute {ENVOY_CLUSTER}")),
                Some(cluster) => {
                    let stream = Stream::new(resource, &metric.name, &point.attributes);
                    let target = Target {
                        cluster,
                        origin,
                        kind,
                        // Connections counted as such; Envoy's requests
                        // come from its counters.
                        requests: kind == SourceKind::Connect,
                        failed: false,
                    };
                    match self.explicit(stream, temporality, point, 1.0, target) {
                        Ok(_) => Point::Used,
                        Err(Some(why)) => Point::Rejected(why),
                        Err(None) => Point::Ignored,
                    }
                }
            };
            self.tally(&metric.name, outcome);
        }
    }
}
