//! OTLP/JSON (`application/json`) → the protobuf messages.
//!
//! The OTLP/JSON encoding is the proto3 JSON mapping with OTLP's own rules:
//! lowerCamelCase keys, 64-bit integers as decimal strings (numbers are
//! accepted too), enums as integers (their names are accepted too), `NaN`,
//! `Infinity` and `-Infinity` as strings, `null` as absent, and unknown keys
//! ignored. The original snake_case field names are accepted as well, as the
//! proto3 mapping asks of parsers.
//!
//! `opentelemetry-proto`'s own serde support is not used: with it, a value it
//! cannot read inside a metric (an enum given by name, `"NaN"` in a gauge, a
//! histogram's `"sum": "Infinity"`) silently drops the whole metric instead of
//! failing, because the metric's data is a flattened optional enum.
//!
//! Only what the translation reads is converted: resource and data point
//! attributes, metric names and units, sums, histograms and exponential
//! histograms in full, and the number of data points of gauges and summaries
//! (which are counted but never used). A field of the wrong type among those
//! makes the whole document malformed — as a protobuf with a wrong wire type
//! would be — and the error names its path.

use std::fmt;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
    exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde_json::{Map, Value};

/// Why an OTLP/JSON document could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonError {
    /// Where, as a JSON path (`resourceMetrics[0].scopeMetrics[1]…`); empty
    /// when the document is not JSON at all.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for JsonError {}

type Result<T> = std::result::Result<T, JsonError>;

/// Reads an OTLP/JSON `ExportMetricsServiceRequest`.
pub(crate) fn decode(bytes: &[u8]) -> Result<ExportMetricsServiceRequest> {
    // serde_json refuses nesting deeper than 128 levels, so the recursion below
    // (attribute values) is bounded too.
    let value: Value = serde_json::from_slice(bytes).map_err(|err| JsonError {
        path: String::new(),
        message: format!("not JSON: {err}"),
    })?;
    let root = Path::ROOT;
    let object = object(&value, &root)?;
    let path = root.key("resourceMetrics");
    let resource_metrics = array(field(object, "resourceMetrics", "resource_metrics"), &path)?
        .iter()
        .enumerate()
        .map(|(i, v)| resource_metrics(v, &path.index(i)))
        .collect::<Result<_>>()?;
    Ok(ExportMetricsServiceRequest { resource_metrics })
}

fn resource_metrics(value: &Value, path: &Path<'_>) -> Result<ResourceMetrics> {
    let object = object(value, path)?;
    let resource = match field(object, "resource", "resource") {
        None => None,
        Some(value) => {
            let path = path.key("resource");
            let object = self::object(value, &path)?;
            Some(Resource {
                attributes: attributes(object, &path)?,
                ..Resource::default()
            })
        }
    };
    let scopes = path.key("scopeMetrics");
    let scope_metrics = array(field(object, "scopeMetrics", "scope_metrics"), &scopes)?
        .iter()
        .enumerate()
        .map(|(i, v)| scope_metrics(v, &scopes.index(i)))
        .collect::<Result<_>>()?;
    Ok(ResourceMetrics {
        resource,
        scope_metrics,
        ..ResourceMetrics::default()
    })
}

fn scope_metrics(value: &Value, path: &Path<'_>) -> Result<ScopeMetrics> {
    let object = object(value, path)?;
    let list = path.key("metrics");
    let metrics = array(field(object, "metrics", "metrics"), &list)?
        .iter()
        .enumerate()
        .map(|(i, v)| metric(v, &list.index(i)))
        .collect::<Result<_>>()?;
    Ok(ScopeMetrics {
        metrics,
        ..ScopeMetrics::default()
    })
}

/// The keys of `Metric.data`, in the JSON spelling and the proto one.
const DATA_KEYS: [(&str, &str); 5] = [
    ("gauge", "gauge"),
    ("sum", "sum"),
    ("histogram", "histogram"),
    ("exponentialHistogram", "exponential_histogram"),
    ("summary", "summary"),
];

fn metric(value: &Value, path: &Path<'_>) -> Result<Metric> {
    let object = object(value, path)?;
    let name = string(object, "name", "name", path)?;
    let unit = string(object, "unit", "unit", path)?;
    let mut present = DATA_KEYS
        .iter()
        .filter_map(|&(camel, snake)| field(object, camel, snake).map(|v| (camel, v)));
    let data = match (present.next(), present.next()) {
        (None, _) => None,
        (Some((first, _)), Some((second, _))) => {
            return Err(path.error(format!(
                "a metric holds one kind of data, not both `{first}` and `{second}`"
            )));
        }
        (Some((kind, value)), None) => Some(data(kind, value, &path.key(kind))?),
    };
    Ok(Metric {
        name,
        unit,
        data,
        ..Metric::default()
    })
}

fn data(kind: &str, value: &Value, path: &Path<'_>) -> Result<Data> {
    let object = object(value, path)?;
    let points_path = path.key("dataPoints");
    let points = array(field(object, "dataPoints", "data_points"), &points_path)?;
    let temporality = || enum_temporality(object, path);
    Ok(match kind {
        "gauge" => Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint::default(); points.len()],
        }),
        "summary" => Data::Summary(Summary {
            data_points: vec![SummaryDataPoint::default(); points.len()],
        }),
        "sum" => Data::Sum(Sum {
            data_points: each(points, &points_path, number_point)?,
            aggregation_temporality: temporality()?,
            is_monotonic: boolean(object, "isMonotonic", "is_monotonic", path)?,
        }),
        "histogram" => Data::Histogram(Histogram {
            data_points: each(points, &points_path, histogram_point)?,
            aggregation_temporality: temporality()?,
        }),
        _ => Data::ExponentialHistogram(ExponentialHistogram {
            data_points: each(points, &points_path, exponential_point)?,
            aggregation_temporality: temporality()?,
        }),
    })
}

fn each<T>(
    values: &[Value],
    path: &Path<'_>,
    read: fn(&Map<String, Value>, &Path<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let path = path.index(i);
            read(object(v, &path)?, &path)
        })
        .collect()
}

fn number_point(object: &Map<String, Value>, path: &Path<'_>) -> Result<NumberDataPoint> {
    let value = match (
        field(object, "asInt", "as_int"),
        field(object, "asDouble", "as_double"),
    ) {
        (Some(_), Some(_)) => {
            return Err(path.error("a data point holds `asInt` or `asDouble`, not both"));
        }
        (Some(v), None) => Some(number_data_point::Value::AsInt(i64_of(
            v,
            &path.key("asInt"),
        )?)),
        (None, Some(v)) => Some(number_data_point::Value::AsDouble(f64_of(
            v,
            &path.key("asDouble"),
        )?)),
        (None, None) => None,
    };
    Ok(NumberDataPoint {
        attributes: attributes(object, path)?,
        start_time_unix_nano: opt_u64(object, "startTimeUnixNano", "start_time_unix_nano", path)?,
        time_unix_nano: opt_u64(object, "timeUnixNano", "time_unix_nano", path)?,
        flags: opt_u32(object, "flags", "flags", path)?,
        value,
        ..NumberDataPoint::default()
    })
}

fn histogram_point(object: &Map<String, Value>, path: &Path<'_>) -> Result<HistogramDataPoint> {
    Ok(HistogramDataPoint {
        attributes: attributes(object, path)?,
        start_time_unix_nano: opt_u64(object, "startTimeUnixNano", "start_time_unix_nano", path)?,
        time_unix_nano: opt_u64(object, "timeUnixNano", "time_unix_nano", path)?,
        count: opt_u64(object, "count", "count", path)?,
        sum: opt_f64(object, "sum", "sum", path)?,
        bucket_counts: u64_list(object, "bucketCounts", "bucket_counts", path)?,
        explicit_bounds: f64_list(object, "explicitBounds", "explicit_bounds", path)?,
        flags: opt_u32(object, "flags", "flags", path)?,
        min: opt_f64(object, "min", "min", path)?,
        max: opt_f64(object, "max", "max", path)?,
        ..HistogramDataPoint::default()
    })
}

fn exponential_point(
    object: &Map<String, Value>,
    path: &Path<'_>,
) -> Result<ExponentialHistogramDataPoint> {
    let buckets = |camel: &'static str| -> Result<Option<Buckets>> {
        let Some(value) = field(object, camel, camel) else {
            return Ok(None);
        };
        let path = path.key(camel);
        let object = self::object(value, &path)?;
        Ok(Some(Buckets {
            offset: opt_i32(object, "offset", "offset", &path)?,
            bucket_counts: u64_list(object, "bucketCounts", "bucket_counts", &path)?,
        }))
    };
    Ok(ExponentialHistogramDataPoint {
        attributes: attributes(object, path)?,
        start_time_unix_nano: opt_u64(object, "startTimeUnixNano", "start_time_unix_nano", path)?,
        time_unix_nano: opt_u64(object, "timeUnixNano", "time_unix_nano", path)?,
        count: opt_u64(object, "count", "count", path)?,
        sum: opt_f64(object, "sum", "sum", path)?,
        scale: opt_i32(object, "scale", "scale", path)?,
        zero_count: opt_u64(object, "zeroCount", "zero_count", path)?,
        positive: buckets("positive")?,
        negative: buckets("negative")?,
        flags: opt_u32(object, "flags", "flags", path)?,
        min: opt_f64(object, "min", "min", path)?,
        max: opt_f64(object, "max", "max", path)?,
        zero_threshold: opt_f64(object, "zeroThreshold", "zero_threshold", path)?.unwrap_or(0.0),
        ..ExponentialHistogramDataPoint::default()
    })
}

fn attributes(object: &Map<String, Value>, path: &Path<'_>) -> Result<Vec<KeyValue>> {
    let path = path.key("attributes");
    array(field(object, "attributes", "attributes"), &path)?
        .iter()
        .enumerate()
        .map(|(i, v)| key_value(v, &path.index(i)))
        .collect()
}

fn key_value(value: &Value, path: &Path<'_>) -> Result<KeyValue> {
    let object = object(value, path)?;
    let value = match field(object, "value", "value") {
        None => None,
        Some(v) => Some(any_value(v, &path.key("value"))?),
    };
    Ok(KeyValue {
        key: string(object, "key", "key", path)?,
        value,
        ..KeyValue::default()
    })
}

fn any_value(value: &Value, path: &Path<'_>) -> Result<AnyValue> {
    use any_value::Value as V;
    let object = object(value, path)?;
    let value = if let Some(v) = field(object, "stringValue", "string_value") {
        Some(V::StringValue(
            str_of(v, &path.key("stringValue"))?.to_owned(),
        ))
    } else if let Some(v) = field(object, "boolValue", "bool_value") {
        Some(V::BoolValue(bool_of(v, &path.key("boolValue"))?))
    } else if let Some(v) = field(object, "intValue", "int_value") {
        Some(V::IntValue(i64_of(v, &path.key("intValue"))?))
    } else if let Some(v) = field(object, "doubleValue", "double_value") {
        Some(V::DoubleValue(f64_of(v, &path.key("doubleValue"))?))
    } else if let Some(v) = field(object, "arrayValue", "array_value") {
        let path = path.key("arrayValue");
        let list = path.key("values");
        let values = array(field(self::object(v, &path)?, "values", "values"), &list)?
            .iter()
            .enumerate()
            .map(|(i, v)| any_value(v, &list.index(i)))
            .collect::<Result<_>>()?;
        Some(V::ArrayValue(ArrayValue { values }))
    } else if let Some(v) = field(object, "kvlistValue", "kvlist_value") {
        let path = path.key("kvlistValue");
        let list = path.key("values");
        let values = array(field(self::object(v, &path)?, "values", "values"), &list)?
            .iter()
            .enumerate()
            .map(|(i, v)| key_value(v, &list.index(i)))
            .collect::<Result<_>>()?;
        Some(V::KvlistValue(KeyValueList { values }))
    } else if let Some(v) = field(object, "bytesValue", "bytes_value") {
        // Base64 in JSON; weir only compares attribute values, so the text is kept as is.
        Some(V::BytesValue(
            str_of(v, &path.key("bytesValue"))?.as_bytes().to_vec(),
        ))
    } else {
        None
    };
    Ok(AnyValue { value })
}

fn enum_temporality(object: &Map<String, Value>, path: &Path<'_>) -> Result<i32> {
    let path = path.key("aggregationTemporality");
    match field(object, "aggregationTemporality", "aggregation_temporality") {
        None => Ok(0),
        Some(Value::String(name)) => match name.as_str() {
            "AGGREGATION_TEMPORALITY_UNSPECIFIED" => Ok(0),
            "AGGREGATION_TEMPORALITY_DELTA" => Ok(1),
            "AGGREGATION_TEMPORALITY_CUMULATIVE" => Ok(2),
            _ => Err(path.error(format!("unknown aggregation temporality {name:?}"))),
        },
        Some(v) => i32_of(v, &path),
    }
}

// ---- fields -------------------------------------------------------------

/// A field by its JSON name or its proto name; `null` is absent.
fn field<'a>(object: &'a Map<String, Value>, camel: &str, snake: &str) -> Option<&'a Value> {
    object
        .get(camel)
        .or_else(|| object.get(snake))
        .filter(|v| !v.is_null())
}

fn object<'a>(value: &'a Value, path: &Path<'_>) -> Result<&'a Map<String, Value>> {
    value
        .as_object()
        .ok_or_else(|| path.error(format!("expected an object, found {}", kind(value))))
}

fn array<'a>(value: Option<&'a Value>, path: &Path<'_>) -> Result<&'a [Value]> {
    match value {
        None => Ok(&[]),
        Some(Value::Array(values)) => Ok(values),
        Some(other) => Err(path.error(format!("expected an array, found {}", kind(other)))),
    }
}

fn string(
    object: &Map<String, Value>,
    camel: &'static str,
    snake: &str,
    path: &Path<'_>,
) -> Result<String> {
    field(object, camel, snake)
        .map(|v| str_of(v, &path.key(camel)).map(str::to_owned))
        .transpose()
        .map(Option::unwrap_or_default)
}

fn boolean(
    object: &Map<String, Value>,
    camel: &'static str,
    snake: &str,
    path: &Path<'_>,
) -> Result<bool> {
    field(object, camel, snake)
        .map(|v| bool_of(v, &path.key(camel)))
        .transpose()
        .map(Option::unwrap_or_default)
}

fn opt_u64(
    object: &Map<String, Value>,
    camel: &'static str,
    snake: &str,
    path: &Path<'_>,
) -> Result<u64> {
    field(object, camel, snake)
        .map(|v| u64_of(v, &path.key(camel)))
        .transpose()
        .map(Option::unwrap_or_default)
}

fn opt_u32(
    object: &Map<String, Value>,
    camel: &'static str,
    snake: &str,
    path: &Path<'_>,
) -> Result<u32> {
    let path = path.key(camel);
    match field(object, camel, snake) {
        None => Ok(0),
        Some(v) => u32::try_from(u64_of(v, &path)?)
            .map_err(|_| path.error("out of range for a 32-bit unsigned integer")),
    }
}

fn opt_i32(
    object: &Map<String, Value>,
    camel: &'static str,
    snake: &str,
    path: &Path<'_>,
) -> Result<i32> {
    match field(object, camel, snake) {
        None => Ok(0),
        Some(v) => i32_of(v, &path.key(camel)),
    }
}

fn opt_f64(
    object: &Map<String, Value>,
    camel: &'static str,
    snake: &str,
    path: &Path<'_>,
) -> Result<Option<f64>> {
    field(object, camel, snake)
        .map(|v| f64_of(v, &path.key(camel)))
        .transpose()
}

fn u64_list(
    object: &Map<String, Value>,
    camel: &'static str,
    snake: &str,
    path: &Path<'_>,
) -> Result<Vec<u64>> {
    let path = path.key(camel);
    array(field(object, camel, snake), &path)?
        .iter()
        .enumerate()
        .map(|(i, v)| u64_of(v, &path.index(i)))
        .collect()
}

fn f64_list(
    object: &Map<String, Value>,
    camel: &'static str,
    snake: &str,
    path: &Path<'_>,
) -> Result<Vec<f64>> {
    let path = path.key(camel);
    array(field(object, camel, snake), &path)?
        .iter()
        .enumerate()
        .map(|(i, v)| f64_of(v, &path.index(i)))
        .collect()
}

// ---- scalars ------------------------------------------------------------

fn str_of<'a>(value: &'a Value, path: &Path<'_>) -> Result<&'a str> {
    value
        .as_str()
        .ok_or_else(|| path.error(format!("expected a string, found {}", kind(value))))
}

fn bool_of(value: &Value, path: &Path<'_>) -> Result<bool> {
    value
        .as_bool()
        .ok_or_else(|| path.error(format!("expected true or false, found {}", kind(value))))
}

/// An integer: a JSON number without a fraction, or a string of one.
fn integer(value: &Value, path: &Path<'_>) -> Result<i128> {
    let parsed = match value {
        Value::Number(n) => n.as_i64().map(i128::from).or_else(|| {
            n.as_u64().map(i128::from).or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 1.9e19)
                    .map(|f| f as i128)
            })
        }),
        Value::String(s) => s.trim().parse::<i128>().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| path.error(format!("expected an integer, found {}", kind(value))))
}

fn u64_of(value: &Value, path: &Path<'_>) -> Result<u64> {
    u64::try_from(integer(value, path)?)
        .map_err(|_| path.error("out of range for a 64-bit unsigned integer"))
}

fn i64_of(value: &Value, path: &Path<'_>) -> Result<i64> {
    i64::try_from(integer(value, path)?)
        .map_err(|_| path.error("out of range for a 64-bit integer"))
}

fn i32_of(value: &Value, path: &Path<'_>) -> Result<i32> {
    i32::try_from(integer(value, path)?)
        .map_err(|_| path.error("out of range for a 32-bit integer"))
}

/// A double: a JSON number, `"NaN"`, `"Infinity"`, `"-Infinity"`, or a
/// string holding a number.
fn f64_of(value: &Value, path: &Path<'_>) -> Result<f64> {
    let parsed = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            other => other.trim().parse::<f64>().ok(),
        },
        _ => None,
    };
    parsed.ok_or_else(|| path.error(format!("expected a number, found {}", kind(value))))
}

fn kind(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.len() <= 40 => format!("the string {s:?}"),
        Value::String(_) => "a string".to_owned(),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

// ---- paths --------------------------------------------------------------

/// Where in the document a value is, built on the stack and rendered only
/// for an error.
#[derive(Clone, Copy)]
struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    segment: Segment<'a>,
}

#[derive(Clone, Copy)]
enum Segment<'a> {
    Root,
    Key(&'a str),
    Index(usize),
}

impl<'a> Path<'a> {
    const ROOT: Path<'static> = Path {
        parent: None,
        segment: Segment::Root,
    };

    fn key(&'a self, key: &'a str) -> Path<'a> {
        Path {
            parent: Some(self),
            segment: Segment::Key(key),
        }
    }

    fn index(&'a self, index: usize) -> Path<'a> {
        Path {
            parent: Some(self),
            segment: Segment::Index(index),
        }
    }

    fn error(&self, message: impl Into<String>) -> JsonError {
        let mut segments = Vec::new();
        let mut at = Some(self);
        while let Some(path) = at {
            segments.push(path.segment);
            at = path.parent;
        }
        let mut rendered = String::new();
        for segment in segments.iter().rev() {
            match segment {
                Segment::Root => {}
                Segment::Key(key) if rendered.is_empty() => rendered.push_str(key),
                Segment::Key(key) => {
                    rendered.push('.');
                    rendered.push_str(key);
                }
                Segment::Index(i) => rendered.push_str(&format!("[{i}]")),
            }
        }
        if rendered.is_empty() {
            rendered.push_str("(the document)");
        }
        JsonError {
            path: rendered,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point;

    fn one_metric(json: &str) -> Result<Metric> {
        let doc = format!(r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{json}]}}]}}]}}"#);
        let mut request = decode(doc.as_bytes())?;
        Ok(request
            .resource_metrics
            .remove(0)
            .scope_metrics
            .remove(0)
            .metrics
            .remove(0))
    }

    #[test]
    fn reads_the_otlp_json_conventions() {
        let metric = one_metric(
            r#"{"name":"h","unit":"s","histogram":{"aggregationTemporality":1,"dataPoints":[
                {"attributes":[{"key":"http.response.status_code","value":{"intValue":"503"}},
                               {"key":"weir.cluster","value":{"stringValue":"c"}}],
                 "startTimeUnixNano":"1700000000000000000","timeUnixNano":"1700000001000000000",
                 "count":"3","sum":0.5,"bucketCounts":["1",2,"0"],"explicitBounds":[0.1,1],
                 "exemplars":[{"spanId":"zz-not-hex","asDouble":1}],"flags":0,"min":"NaN"}]}}"#,
        )
        .unwrap();
        assert_eq!(metric.name, "h");
        assert_eq!(metric.unit, "s");
        let Some(Data::Histogram(h)) = metric.data else {
            panic!("{:?}", metric.data)
        };
        assert_eq!(h.aggregation_temporality, 1);
        let p = &h.data_points[0];
        assert_eq!(p.count, 3);
        assert_eq!(p.bucket_counts, vec![1, 2, 0]);
        assert_eq!(p.explicit_bounds, vec![0.1, 1.0]);
        assert_eq!(p.start_time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(p.sum, Some(0.5));
        assert!(p.min.is_some_and(f64::is_nan));
        assert_eq!(
            p.attributes[0].value,
            Some(AnyValue {
                value: Some(any_value::Value::IntValue(503))
            })
        );
    }

    #[test]
    fn accepts_enum_names_proto_names_and_special_doubles() {
        let metric = one_metric(
            r#"{"name":"s","sum":{"aggregation_temporality":"AGGREGATION_TEMPORALITY_CUMULATIVE",
                "is_monotonic":true,"data_points":[{"as_int":7},{"asDouble":"Infinity"}]}}"#,
        )
        .unwrap();
        let Some(Data::Sum(s)) = metric.data else {
            panic!()
        };
        assert_eq!(s.aggregation_temporality, 2);
        assert!(s.is_monotonic);
        assert_eq!(
            s.data_points[0].value,
            Some(number_data_point::Value::AsInt(7))
        );
        assert_eq!(
            s.data_points[1].value,
            Some(number_data_point::Value::AsDouble(f64::INFINITY))
        );
    }

    #[test]
    fn reads_exponential_histograms() {
        let metric = one_metric(
            r#"{"name":"e","exponentialHistogram":{"aggregationTemporality":2,"dataPoints":[
                {"count":"4","scale":3,"zeroCount":"1","positive":{"offset":-2,"bucketCounts":["1","2"]},
                 "negative":{"bucketCounts":[]},"zeroThreshold":0}]}}"#,
        )
        .unwrap();
        let Some(Data::ExponentialHistogram(e)) = metric.data else {
            panic!()
        };
        let p = &e.data_points[0];
        assert_eq!((p.count, p.scale, p.zero_count), (4, 3, 1));
        assert_eq!(
            p.positive,
            Some(exponential_histogram_data_point::Buckets {
                offset: -2,
                bucket_counts: vec![1, 2]
            })
        );
    }

    #[test]
    fn unused_kinds_are_only_counted_and_unknown_keys_ignored() {
        let metric = one_metric(
            r#"{"name":"g","somethingNew":{"x":1},"gauge":{"dataPoints":[{"asDouble":"whatever"},{}]}}"#,
        )
        .unwrap();
        let Some(Data::Gauge(g)) = metric.data else {
            panic!()
        };
        assert_eq!(g.data_points.len(), 2);
        assert_eq!(
            decode(b"{}").unwrap(),
            ExportMetricsServiceRequest::default()
        );
        assert_eq!(
            decode(br#"{"resourceMetrics":null}"#).unwrap(),
            ExportMetricsServiceRequest::default()
        );
    }

    #[test]
    fn wrong_types_name_their_path() {
        let err =
            one_metric(r#"{"name":"s","sum":{"dataPoints":[{"asInt":"seven"}]}}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "resourceMetrics[0].scopeMetrics[0].metrics[0].sum.dataPoints[0].asInt: expected an integer, found the string \"seven\""
        );
        let err = one_metric(r#"{"name":"h","histogram":{"dataPoints":[{"bucketCounts":[-1]}]}}"#)
            .unwrap_err();
        assert!(err.to_string().contains("bucketCounts[0]"), "{err}");
        let err = one_metric(r#"{"name":"x","sum":{},"gauge":{}}"#).unwrap_err();
        assert!(err.message.contains("one kind of data"), "{err}");
        let err =
            one_metric(r#"{"name":"x","sum":{"aggregationTemporality":"SOMETIMES"}}"#).unwrap_err();
        assert!(err.message.contains("SOMETIMES"), "{err}");
        assert!(
            decode(b"[]")
                .unwrap_err()
                .to_string()
                .contains("expected an object")
        );
        assert!(decode(b"{").unwrap_err().message.starts_with("not JSON"));
        let deep = "[".repeat(10_000);
        assert!(decode(deep.as_bytes()).is_err());
    }
}
