//! The Weir filter's own metrics, under Envoy's `wasmcustom.` prefix: each
//! class's admission outcomes (sums) and the requests in flight and queued
//! (gauges).

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

/// An admission data point's value; `None` if flagged "no recorded value".
pub(super) fn admission_value(point: &NumberDataPoint) -> Result<Option<u64>, String> {
    if point.flags & NO_RECORDED_VALUE != 0 {
        return Ok(None);
    }
    counter_value(point).map(Some)
}
