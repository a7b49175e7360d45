//! Reading OTLP attributes: by key, as text or integers, and in a canonical
//! text form for stream keys.

use super::*;

pub(super) fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

/// A non-empty string attribute.
pub(super) fn string_attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match find(attributes, key) {
        Some(any_value::Value::StringValue(s)) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// A string attribute, or the first string of an array attribute.
pub(crate) fn text_attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match find(attributes, key) {
        Some(any_value::Value::StringValue(s)) if !s.is_empty() => Some(s),
        Some(any_value::Value::ArrayValue(array)) => {
            array.values.iter().find_map(|v| match &v.value {
                Some(any_value::Value::StringValue(s)) if !s.is_empty() => Some(s.as_str()),
                _ => None,
            })
        }
        _ => None,
    }
}

/// An integer attribute, also given as a string of digits or an integral
/// double; `Err` if present but not an integer.
pub(super) fn int_attr(attributes: &[KeyValue], key: &str) -> Option<Result<i64, ()>> {
    let value = find(attributes, key)?;
    Some(match value {
        any_value::Value::IntValue(i) => Ok(*i),
        any_value::Value::StringValue(s) => s.trim().parse().map_err(|_| ()),
        any_value::Value::DoubleValue(d) if d.fract() == 0.0 && d.abs() < 9.0e15 => Ok(*d as i64),
        _ => Err(()),
    })
}

/// Attributes in a canonical text form (sorted by key, every string
/// prefixed by its length so that none can be mistaken for another), for
/// stream keys.
pub(super) fn canonical(attributes: &[KeyValue], out: &mut String) {
    if attributes.windows(2).all(|w| w[0].key <= w[1].key) {
        for kv in attributes {
            canonical_kv(kv, out);
        }
    } else {
        let mut sorted: Vec<&KeyValue> = attributes.iter().collect();
        sorted.sort_by(|a, b| a.key.cmp(&b.key));
        for kv in sorted {
            canonical_kv(kv, out);
        }
    }
}

pub(super) fn canonical_kv(kv: &KeyValue, out: &mut String) {
    canonical_str(&kv.key, out);
    out.push('=');
    canonical_value(kv.value.as_ref(), out);
    out.push(';');
}

pub(super) fn canonical_str(s: &str, out: &mut String) {
    let _ = write!(out, "{}:", s.len());
    out.push_str(s);
}

pub(super) fn canonical_value(value: Option<&AnyValue>, out: &mut String) {
    use any_value::Value as V;
    let _ = match value.and_then(|v| v.value.as_ref()) {
        None => write!(out, "-"),
        Some(V::StringValue(s)) => {
            out.push('s');
            canonical_str(s, out);
            Ok(())
        }
        Some(V::BoolValue(b)) => write!(out, "{b}"),
        Some(V::IntValue(i)) => write!(out, "i{i}"),
        Some(V::DoubleValue(d)) => write!(out, "d{d:?}"),
        Some(V::BytesValue(b)) => write!(out, "b{b:?}"),
        Some(V::StringValueStrindex(i)) => write!(out, "x{i}"),
        Some(V::ArrayValue(a)) => {
            out.push('[');
            for v in &a.values {
                canonical_value(Some(v), out);
                out.push(',');
            }
            write!(out, "]")
        }
        Some(V::KvlistValue(kv)) => {
            out.push('{');
            canonical(&kv.values, out);
            write!(out, "}}")
        }
    };
}
