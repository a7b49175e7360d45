//! What the resource tests share: the example policy, options, and decoding
//! a resource the way Envoy does.

use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use weir_policy::Policy;

use super::{Options, WasmSource};

/// The example policy of the repository.
pub(super) fn fleet() -> Policy {
    let text = include_str!("../../../examples/policies/iot-fleet.yaml");
    weir_policy::source::load("iot-fleet.yaml", text).unwrap()
}

/// A digest for the remote module (of nothing in particular).
pub(super) const SHA256: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// The default listener, the module from a local file.
pub(super) fn local_options() -> Options {
    Options::new(WasmSource::Local("/opt/weir/weir_filter.wasm".into()))
}

/// The default listener, the module fetched from weir.
pub(super) fn remote_options() -> Options {
    Options::new(WasmSource::Remote {
        uri: "http://127.0.0.1:9902/filter.wasm".into(),
        sha256: SHA256.into(),
        server: Some("127.0.0.1:9902".parse().unwrap()),
    })
}

/// Unpacks `any`, which must hold an `M`.
pub(super) fn decode<M: Message + Name + Default>(any: &Any) -> M {
    assert_eq!(any.type_url, M::type_url());
    M::decode(any.value.as_slice()).unwrap()
}
