//! Applications' `http.server.request.duration` histograms (explicit or
//! exponential), their cluster from `weir.cluster` or `service.name`, a
//! failure from the status code or `error.type`.

use super::*;

impl<'r> Run<'_, 'r> {
    pub(super) fn app_duration(&mut self, resource: &Resource<'r>, metric: &'r Metric) {
        let Some(ms_per_unit) = ms_per_unit(&metric.unit) else {
            let why = format!("unit {:?} is not one of s, ms, us, ns", metric.unit);
            return self.reject_all(metric, &why);
        };
        match &metric.data {
            Some(Data::Histogram(histogram)) => {
                let temporality = Temporality::of(histogram.aggregation_temporality);
                for point in &histogram.data_points {
                    self.app_point(
                        resource,
                        metric,
                        &point.attributes,
                        |run, stream, target| {
                            run.explicit(stream, temporality, point, ms_per_unit, target)
                        },
                    );
                }
            }
            Some(Data::ExponentialHistogram(histogram)) => {
                let temporality = Temporality::of(histogram.aggregation_temporality);
                for point in &histogram.data_points {
                    self.app_point(
                        resource,
                        metric,
                        &point.attributes,
                        |run, stream, target| {
                            run.exponential(stream, temporality, point, ms_per_unit, target)
                        },
                    );
                }
            }
            _ => self.reject_all(metric, "expected a histogram or an exponential histogram"),
        }
    }

    /// One data point of an application's duration histogram: its cluster
    /// and outcome from its attributes, then `count` adds it (explicit or
    /// exponential buckets), and the point is tallied.
    fn app_point(
        &mut self,
        resource: &Resource<'r>,
        metric: &'r Metric,
        attributes: &'r [KeyValue],
        count: impl FnOnce(&mut Self, Stream<'_>, Target<'r>) -> Result<Option<u64>, Option<String>>,
    ) {
        let stream = Stream::new(resource, &metric.name, attributes);
        let outcome = match app_labels(resource, attributes) {
            Err(why) => Point::Rejected(why),
            Ok((cluster, failed)) => {
                let target = Target {
                    cluster,
                    origin: "",
                    kind: SourceKind::Application,
                    requests: true,
                    failed,
                };
                let counted = count(self, stream, target);
                // Set by `add_observed` for this point alone: taken at once.
                let latency = self.app_latency.take();
                if let Ok(Some(requests)) = counted
                    && requests > 0
                {
                    self.out.app_points.push(AppPoint {
                        cluster,
                        attributes,
                        requests,
                        failed,
                        latency,
                    });
                }
                app_outcome(counted)
            }
        };
        self.tally(&metric.name, outcome);
    }
}

/// Milliseconds per unit of a duration histogram (UCUM units; none means
/// seconds, as the semantic conventions specify).
pub(super) fn ms_per_unit(unit: &str) -> Option<f64> {
    match unit {
        "s" | "" => Some(1000.0),
        "ms" => Some(1.0),
        "us" => Some(1e-3),
        "ns" => Some(1e-6),
        _ => None,
    }
}

/// An application data point's cluster and whether it failed.
pub(super) fn app_labels<'a>(
    resource: &Resource<'a>,
    attributes: &'a [KeyValue],
) -> Result<(&'a str, bool), String> {
    let cluster = string_attr(attributes, WEIR_CLUSTER)
        .or_else(|| string_attr(resource.attributes, WEIR_CLUSTER))
        .or_else(|| string_attr(resource.attributes, SERVICE_NAME))
        .ok_or_else(|| {
            format!("no cluster: no attribute {WEIR_CLUSTER}, and no resource attribute {WEIR_CLUSTER} or {SERVICE_NAME}")
        })?;
    let failed = match int_attr(attributes, STATUS_CODE) {
        Some(Ok(code)) => code >= 500,
        Some(Err(())) => return Err(format!("{STATUS_CODE} is not an integer")),
        None => find(attributes, ERROR_TYPE).is_some(),
    };
    Ok((cluster, failed))
}

/// What became of an application's histogram data point.
pub(super) fn app_outcome(counted: Result<Option<u64>, Option<String>>) -> Point {
    match counted {
        Ok(_) => Point::Used,
        Err(Some(why)) => Point::Rejected(why),
        Err(None) => Point::Ignored,
    }
}
