//! Device segments: what tells them apart, and the names of the metrics the
//! filter counts them in.
//!
//! A canary's `analysis.segments.by` lists dimensions — `device_type` and
//! `region` (the values of the routing headers that carry them) or
//! `header:NAME` — and the filter counts each request of the canary's
//! placement under its value in each dimension, per variant:
//!
//! ```text
//! weir.segment.<canary>.<dimension>.<value>.<variant>.<measure>
//! ```
//!
//! with `measure` one of `ok` and `errors` (counters of non-5xx and 5xx
//! responses) and `latency_ms`
//! (a histogram). Envoy shows them under `wasmcustom.` and its stats sink
//! exports them to `weir`. The three free parts are escaped ([`escape`]) so
//! that a `.` never appears inside one: `2.1.0` is written `2%2E1%2E0`.
//! A request without the header counts under [`MISSING`]; values past the
//! first [`crate::model::Segments::top`] of a dimension under [`OTHER`].

use crate::model::{RoutingHeaders, Variant};

/// The value of a request that does not carry the dimension's header.
pub const MISSING: &str = "(none)";
/// The pooled value of every value past the ones counted on their own.
pub const OTHER: &str = "(other)";
/// Longest value kept; longer ones are cut (at a character boundary).
pub const MAX_VALUE_BYTES: usize = 64;
/// Most dimensions a canary may name.
pub const MAX_DIMENSIONS: usize = 4;
/// Most values per dimension counted on their own.
pub const MAX_TOP: u32 = 32;

const PREFIX: &str = "weir.segment.";

/// A dimension as written in the policy, and the header it reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dimension {
    /// As written: `device_type`, `region` or `header:NAME`.
    pub name: String,
    /// The request header whose value is the segment.
    pub header: String,
}

/// Parses one entry of `segments.by` against the routing headers.
pub fn dimension(written: &str, routing: &RoutingHeaders) -> Result<Dimension, String> {
    let header = match written {
        "device_type" => routing.device_type.clone(),
        "region" => routing.region.clone(),
        other => match other.strip_prefix("header:") {
            Some(name) => {
                crate::names::check_header_name(name)?;
                name.to_owned()
            }
            None => {
                return Err(format!(
                    "`{written}` is not a segment dimension: use `device_type`, `region` or `header:NAME`"
                ));
            }
        },
    };
    Ok(Dimension {
        name: written.to_owned(),
        header,
    })
}

/// The attribute of an application's data points that carries a
/// dimension's value: the policy's `segments.attributes` entry, else the
/// semantic conventions' `http.request.header.<header>`.
pub fn attribute(
    dimension: &Dimension,
    named: &std::collections::BTreeMap<String, String>,
) -> String {
    named
        .get(&dimension.name)
        .cloned()
        .unwrap_or_else(|| format!("http.request.header.{}", dimension.header))
}

/// The series name of a segment: its metric names without the measure.
pub fn series_name(canary: &str, dimension: &str, value: &str, variant: Variant) -> String {
    format!(
        "{PREFIX}{}.{}.{}.{}",
        escape(canary),
        escape(dimension),
        escape(value),
        variant_name(variant)
    )
}

/// What a segment metric measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    /// Counter: responses other than 5xx.
    Ok,
    /// Counter: 5xx responses.
    Errors,
    /// Histogram: time to the response's headers, in milliseconds.
    LatencyMs,
}

impl Measure {
    fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Errors => "errors",
            Self::LatencyMs => "latency_ms",
        }
    }
}

fn variant_name(variant: Variant) -> &'static str {
    match variant {
        Variant::Canary => "canary",
        Variant::Stable => "stable",
    }
}

/// The metric name of one segment's measure (without Envoy's `wasmcustom.`).
pub fn metric_name(
    canary: &str,
    dimension: &str,
    value: &str,
    variant: Variant,
    measure: Measure,
) -> String {
    format!(
        "{}.{}",
        series_name(canary, dimension, value, variant),
        measure.name()
    )
}

/// The series a segment metric belongs to: its name without the measure.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SegmentKey {
    /// The canary cluster.
    pub canary: String,
    /// The dimension as the policy writes it.
    pub dimension: String,
    /// The segment's value.
    pub value: String,
    /// Which variant served the requests.
    pub variant: Variant,
}

/// A segment metric's name, read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentMetric {
    /// Whose counts.
    pub key: SegmentKey,
    /// What is measured.
    pub measure: Measure,
}

/// Reads a name made by [`metric_name`]; `None` for any other. The first
/// part is the series' name ([`parse_series`] reads it).
pub fn split_metric_name(name: &str) -> Option<(&str, Measure)> {
    let (series, measure) = name.rsplit_once('.')?;
    let measure = match measure {
        "ok" => Measure::Ok,
        "errors" => Measure::Errors,
        "latency_ms" => Measure::LatencyMs,
        _ => return None,
    };
    Some((series, measure))
}

/// Reads a name made by [`metric_name`]; `None` for any other.
pub fn parse_metric_name(name: &str) -> Option<SegmentMetric> {
    let (series, measure) = split_metric_name(name)?;
    Some(SegmentMetric {
        key: parse_series(series)?,
        measure,
    })
}

/// Reads a segment metric's name without its measure.
pub fn parse_series(series: &str) -> Option<SegmentKey> {
    let rest = series.strip_prefix(PREFIX)?;
    let mut parts = rest.split('.');
    let (canary, dimension, value) = (parts.next()?, parts.next()?, parts.next()?);
    let variant = match parts.next()? {
        "canary" => Variant::Canary,
        "stable" => Variant::Stable,
        _ => return None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(SegmentKey {
        canary: unescape(canary)?,
        dimension: unescape(dimension)?,
        value: unescape(value)?,
        variant,
    })
}

/// Whether a name is under the segment metrics' prefix.
pub fn is_segment_metric(name: &str) -> bool {
    name.starts_with(PREFIX)
}

/// A header value as the segment's value: cut to [`MAX_VALUE_BYTES`],
/// [`MISSING`] when absent or empty.
pub fn value_of(header: Option<&str>) -> &str {
    match header.map(str::trim) {
        None | Some("") => MISSING,
        Some(v) if v.len() <= MAX_VALUE_BYTES => v,
        Some(v) => {
            let end = (0..=MAX_VALUE_BYTES)
                .rev()
                .find(|&i| v.is_char_boundary(i))
                .unwrap_or(0);
            v.get(..end).unwrap_or(MISSING)
        }
    }
}

/// Keeps ASCII letters, digits, `-` and `_`; writes every other byte as
/// `%XX`, so that the result holds no `.` (Envoy's name separator).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`escape`]; `None` for a malformed escape or bytes that
/// are not UTF-8.
pub fn unescape(text: &str) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            let hex = std::str::from_utf8(&hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimensions_read_the_routing_headers_or_a_named_one() {
        let routing = RoutingHeaders::default();
        assert_eq!(
            dimension("device_type", &routing).unwrap().header,
            "x-device-type"
        );
        assert_eq!(dimension("region", &routing).unwrap().header, "x-region");
        assert_eq!(
            dimension("header:x-firmware", &routing).unwrap().header,
            "x-firmware"
        );
        assert!(dimension("firmware", &routing).is_err());
        assert!(dimension("header:x-weir-cluster", &routing).is_err());
        assert!(dimension("header:", &routing).is_err());
    }

    #[test]
    fn names_round_trip_whatever_the_value() {
        for value in ["camera", "2.1.0", "a b/c%d", "(none)", "ünï", ""] {
            let name = metric_name(
                "ingest-eu.canary",
                "header:x-firmware",
                value,
                Variant::Canary,
                Measure::Errors,
            );
            assert_eq!(name.matches('.').count(), 6, "{name}");
            let parsed = parse_metric_name(&name).unwrap();
            let key = &parsed.key;
            assert_eq!(
                (
                    key.canary.as_str(),
                    key.dimension.as_str(),
                    key.value.as_str()
                ),
                ("ingest-eu.canary", "header:x-firmware", value)
            );
            assert_eq!(
                (key.variant, parsed.measure),
                (Variant::Canary, Measure::Errors)
            );
        }
        assert_eq!(
            metric_name(
                "c",
                "device_type",
                "2.1",
                Variant::Stable,
                Measure::LatencyMs
            ),
            "weir.segment.c.device_type.2%2E1.stable.latency_ms"
        );
        for bad in [
            "weir.segment.c.d.v.canary",
            "weir.segment.c.d.v.both.ok",
            "weir.segment.c.d.v.canary.ok.x",
            "weir.segment.c.d.%ZZ.canary.ok",
            "weir.segment.c.d.%FF.canary.ok",
            "weir.segment.c.d.v.canary.requests",
            "weir.class.alarm.admitted",
        ] {
            assert_eq!(parse_metric_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn values_are_cut_and_missing_ones_named() {
        assert_eq!(value_of(None), MISSING);
        assert_eq!(value_of(Some("  ")), MISSING);
        assert_eq!(value_of(Some("camera")), "camera");
        let long = "é".repeat(40);
        let cut = value_of(Some(&long));
        assert!(cut.len() <= MAX_VALUE_BYTES && long.starts_with(cut));
    }
}
