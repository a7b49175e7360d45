//! The position of every node of a YAML document, by field path.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// Positions (line, column) by path: `a.b[2].c`.
pub(super) struct SpanIndex {
    values: HashMap<String, (u64, u64)>,
    keys: HashMap<String, (u64, u64)>,
}

impl SpanIndex {
    pub(super) fn build(text: &str) -> Result<Self, serde_saphyr::Error> {
        // Non-finite floats (`.nan`, `.inf`) pass: the typed pass reads them
        // into numbers, where validation reports them with their field, or
        // into strings, where they are fine.
        let options = serde_saphyr::options! {
            non_finite_float_policy: serde_saphyr::NonFiniteFloatPolicy::PassThrough,
        };
        let root: Spanned<Node> = serde_saphyr::from_str_with_options(text, options)?;
        let mut index = Self {
            values: HashMap::new(),
            keys: HashMap::new(),
        };
        index.visit(&root, String::new());
        Ok(index)
    }

    fn visit(&mut self, node: &Spanned<Node>, path: String) {
        let at = (node.referenced.line(), node.referenced.column());
        match &node.value {
            Node::Map(entries) => {
                for (key, value) in entries {
                    let child = if path.is_empty() {
                        key.value.0.clone()
                    } else {
                        format!("{path}.{}", key.value.0)
                    };
                    self.keys.insert(
                        child.clone(),
                        (key.referenced.line(), key.referenced.column()),
                    );
                    self.visit(value, child);
                }
            }
            Node::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.visit(item, format!("{path}[{i}]"));
                }
            }
            Node::Scalar => {}
        }
        self.values.insert(path, at);
    }

    /// Where the field at `path` is: a mapping entry's key, any other node's
    /// start; for a path the document lacks, its nearest ancestor that it has.
    pub(super) fn position(&self, path: &str) -> (u64, u64) {
        let mut path = path;
        loop {
            // A scalar is best pointed at itself; a mapping entry holding a
            // collection at its key, where its name is.
            if let Some(&at) = self
                .values
                .get(path)
                .filter(|_| !self.keys.contains_key(path) || self.is_scalar(path))
            {
                return at;
            }
            if let Some(&at) = self.keys.get(path) {
                return at;
            }
            if let Some(&at) = self.values.get(path) {
                return at;
            }
            match parent(path) {
                Some(up) => path = up,
                None => return self.values.get("").copied().unwrap_or((1, 1)),
            }
        }
    }

    fn is_scalar(&self, path: &str) -> bool {
        let dotted = format!("{path}.");
        let indexed = format!("{path}[");
        !self
            .values
            .keys()
            .any(|p| p.starts_with(&dotted) || p.starts_with(&indexed))
    }
}

fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

/// A YAML node, reduced to its shape.
enum Node {
    Map(Vec<(Spanned<Key>, Spanned<Node>)>),
    Seq(Vec<Spanned<Node>>),
    Scalar,
}

/// A mapping key, whatever scalar it was written as.
struct Key(String);

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<Key>>()? {
            let value = map.next_value::<Spanned<Node>>()?;
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // As written, as the policy's string keys read it: `007`, `1e3` and
        // `.inf` are region names, not numbers.
        deserializer.deserialize_string(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a scalar mapping key")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Key, E> {
        Ok(Key(v.to_string()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
        Ok(Key(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
        Ok(Key(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Key, E> {
        Ok(Key(v.to_string()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(Key(v.to_owned()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Key, E> {
        Ok(Key("null".to_owned()))
    }
}
