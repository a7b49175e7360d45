//! The Weir filter's own metrics, under Envoy's `wasmcustom.` prefix: each
//! class's admission outcomes (sums), the requests in flight and queued
//! (gauges), and the counts of canaries' device segments (sums of non-5xx
//! and 5xx responses, a latency histogram in milliseconds), recorded under
//! their series' name (`weir_policy::segments`).

use super::*;

impl<'r> Run<'_, 'r> {
    pub(super) fn admission(&mut self, kind: Kind<'_>, metric: &Metric) {
        match (kind, &metric.data) {
            (Kind::Class(class, outcome), Some(Data::Sum(sum))) => {
                let temporality = Temporality::of(sum.aggregation_temporality);
                for point in &sum.data_points {
                    let outcome = match admission_value(point) {
                        Ok(Some(value)) => match temporality.check() {
                            Ok(temporality) => {
                                self.admission.push(AdmissionPoint::Count {
                                    class: class.to_owned(),
                                    outcome,
                                    value,
                                    cumulative: temporality == Temporality::Cumulative,
                                });
                                Point::Used
                            }
                            Err(why) => Point::Rejected(why),
                        },
                        Ok(None) => Point::Ignored,
                        Err(why) => Point::Rejected(why),
                    };
                    self.tally(&metric.name, outcome);
                }
            }
            (Kind::Class(..), _) => self.reject_all(metric, "expected a sum"),
            (Kind::InFlight | Kind::QueueDepth, Some(Data::Gauge(gauge))) => {
                for point in &gauge.data_points {
                    let outcome = match admission_value(point) {
                        Ok(Some(value)) => {
                            self.admission.push(if kind == Kind::InFlight {
                                AdmissionPoint::InFlight(value)
                            } else {
                                AdmissionPoint::QueueDepth(value)
                            });
                            Point::Used
                        }
                        Ok(None) => Point::Ignored,
                        Err(why) => Point::Rejected(why),
                    };
                    self.tally(&metric.name, outcome);
                }
            }
            (Kind::InFlight | Kind::QueueDepth, _) => self.reject_all(metric, "expected a gauge"),
        }
    }
}

impl<'r> Run<'_, 'r> {
    pub(super) fn segment(
        &mut self,
        resource: &Resource<'r>,
        metric: &'r Metric,
        series: &'r str,
        measure: Measure,
    ) {
        match (measure, &metric.data) {
            (Measure::Ok | Measure::Errors, Some(Data::Sum(sum))) => {
                let temporality = Temporality::of(sum.aggregation_temporality);
                for point in &sum.data_points {
                    let outcome =
                        match self.counter_increase(resource, &metric.name, temporality, point) {
                            Ok(Some(value)) => {
                                let failed = measure == Measure::Errors;
                                let added = self.out.totals.add(
                                    (series, ""),
                                    SourceKind::Segment,
                                    (value, 0),
                                    failed,
                                    MAX_COUNT,
                                );
                                match added {
                                    Some(_) => Point::Used,
                                    None => Point::Rejected(implausible(value)),
                                }
                            }
                            Ok(None) => Point::Used,
                            Err(None) => Point::Ignored,
                            Err(Some(why)) => Point::Rejected(why),
                        };
                    self.tally(&metric.name, outcome);
                }
            }
            (Measure::LatencyMs, Some(Data::Histogram(histogram))) => {
                let temporality = Temporality::of(histogram.aggregation_temporality);
                for point in &histogram.data_points {
                    let stream = Stream::new(resource, &metric.name, &point.attributes);
                    let target = Target {
                        cluster: series,
                        origin: "",
                        kind: SourceKind::Segment,
                        requests: false,
                        failed: false,
                    };
                    let outcome = match self.explicit(stream, temporality, point, 1.0, target) {
                        Ok(_) => Point::Used,
                        Err(Some(why)) => Point::Rejected(why),
                        Err(None) => Point::Ignored,
                    };
                    self.tally(&metric.name, outcome);
                }
            }
            (Measure::LatencyMs, _) => {
                self.reject_all(metric, "expected a histogram with explicit buckets")
            }
            _ => self.reject_all(metric, "expected a sum"),
        }
    }
}

/// An admission data point's value; `None` if flagged "no recorded value".
pub(super) fn admission_value(point: &NumberDataPoint) -> Result<Option<u64>, String> {
    if point.flags & NO_RECORDED_VALUE != 0 {
        return Ok(None);
    }
    counter_value(point).map(Some)
}
