//! Responses as they go on the wire. Every stream sends the same resources,
//! so a response is the few bytes that are this stream's own (versions,
//! nonce, the gRPC length prefix) followed by resources encoded once per
//! snapshot ([`crate::snapshot::Wire`]) and shared by reference: a push to
//! ten thousand streams copies no resource, and no stream keeps an encode
//! buffer the size of its largest response.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use http_body::Frame;
use tonic::Status;
use tonic::codegen::http::HeaderMap;

use super::{MAX_RESPONSE_BYTES, ResponseStream};

/// The gRPC message prefix: a compression flag and the length.
const GRPC_PREFIX_BYTES: usize = 5;

/// Shared entries smaller than this are copied into the response's first
/// chunk rather than sent as chunks of their own.
const COPY_BELOW_BYTES: usize = 2048;

/// One response, ready to send.
#[derive(Debug)]
pub(crate) struct Encoded {
    type_url: &'static str,
    /// The prefix and this stream's fields first, then the shared entries.
    chunks: Vec<Bytes>,
}

impl Encoded {
    /// A response of `type_url`: `own` (a response holding only this
    /// stream's fields) followed by `shared`, entries of the same message's
    /// repeated `resources` field as [`crate::snapshot::Wire`] holds them.
    pub(super) fn new<M: prost::Message>(
        type_url: &'static str,
        own: &M,
        shared: impl IntoIterator<Item = Bytes>,
    ) -> Result<Self, Status> {
        let own_len = own.encoded_len();
        let shared: Vec<Bytes> = shared.into_iter().filter(|b| !b.is_empty()).collect();
        let len = own_len + shared.iter().map(Bytes::len).sum::<usize>();
        let Some(len) = u32::try_from(len)
            .ok()
            .filter(|l| *l as usize <= MAX_RESPONSE_BYTES)
        else {
            return Err(Status::resource_exhausted(format!(
                "a {type_url} response of {len} bytes exceeds the largest sent ({MAX_RESPONSE_BYTES})"
            )));
        };
        // Small entries are copied after the stream's own fields: each chunk
        // becomes an HTTP/2 DATA frame, and a frame costs both ends more than
        // copying a few hundred bytes.
        let (small, large): (Vec<Bytes>, Vec<Bytes>) =
            shared.into_iter().partition(|b| b.len() < COPY_BELOW_BYTES);
        let copied: usize = small.iter().map(Bytes::len).sum();
        let mut head = BytesMut::with_capacity(GRPC_PREFIX_BYTES + own_len + copied);
        head.put_u8(0);
        head.put_u32(len);
        own.encode(&mut head)
            .map_err(|e| Status::internal(format!("encoding a response: {e}")))?;
        for entry in &small {
            head.put_slice(entry);
        }
        let mut chunks = Vec::with_capacity(1 + large.len());
        chunks.push(head.freeze());
        chunks.extend(large);
        Ok(Self { type_url, chunks })
    }

    pub(super) fn type_url(&self) -> &'static str {
        self.type_url
    }

    /// The message's bytes as the Envoy reads them, after checking that the
    /// gRPC prefix gives their length.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(super) fn message_bytes(&self) -> Result<Vec<u8>, String> {
        let bytes: Vec<u8> = self.chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let prefix: [u8; GRPC_PREFIX_BYTES] = bytes
            .get(..GRPC_PREFIX_BYTES)
            .and_then(|p| p.try_into().ok())
            .ok_or("shorter than the gRPC prefix")?;
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if prefix[0] != 0 || len != bytes.len() - GRPC_PREFIX_BYTES {
            return Err(format!(
                "the prefix {prefix:?} does not give the length {}",
                bytes.len() - GRPC_PREFIX_BYTES
            ));
        }
        Ok(bytes[GRPC_PREFIX_BYTES..].to_vec())
    }

    /// The message as the Envoy will decode it.
    #[cfg(test)]
    pub(super) fn decode<M: prost::Message + Default>(&self) -> M {
        M::decode(self.message_bytes().unwrap().as_slice()).unwrap()
    }
}

/// A stream's responses as an HTTP/2 body: each response's chunks as data
/// frames, then the trailers that end a gRPC call (`grpc-status`).
pub(super) struct Body {
    responses: ResponseStream,
    chunks: std::vec::IntoIter<Bytes>,
    ended: bool,
}

impl Body {
    pub(super) fn new(responses: ResponseStream) -> Self {
        Self {
            responses,
            chunks: Vec::new().into_iter(),
            ended: false,
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        loop {
            if let Some(chunk) = self.chunks.next() {
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if self.ended {
                return Poll::Ready(None);
            }
            let status = match ready!(self.responses.poll_next_unpin(cx)) {
                Some(Ok(response)) => {
                    self.chunks = response.chunks.into_iter();
                    continue;
                }
                Some(Err(status)) => status,
                None => Status::ok(""),
            };
            self.ended = true;
            return Poll::Ready(Some(Ok(Frame::trailers(trailers(&status)))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.chunks.len() == 0
    }
}

fn trailers(status: &Status) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    if status.add_header(&mut trailers).is_err() {
        // Only a message that cannot be a header value fails: say less.
        let _ = Status::new(status.code(), "").add_header(&mut trailers);
    }
    trailers
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
    use envoy_types::pb::google::protobuf::Any;
    use futures::stream;
    use http_body::Body as _;
    use prost::Message as _;

    use super::*;
    use crate::snapshot::{Resource, type_url};

    fn resource(name: &str) -> Resource {
        let body = Any {
            type_url: type_url::CLUSTER.into(),
            value: name.as_bytes().to_vec(),
        };
        Resource::new(name, body)
    }

    fn own(nonce: &str) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: "v1".into(),
            type_url: type_url::CLUSTER.into(),
            nonce: nonce.into(),
            ..Default::default()
        }
    }

    #[test]
    fn own_fields_and_shared_entries_make_the_whole_message() {
        let (a, b) = (resource("a"), resource("b"));
        let encoded = Encoded::new(
            type_url::CLUSTER,
            &own("7"),
            [a.wire.sotw.clone(), b.wire.sotw.clone()],
        )
        .unwrap();
        let whole = DiscoveryResponse {
            resources: vec![a.body, b.body],
            ..own("7")
        };
        assert_eq!(encoded.decode::<DiscoveryResponse>(), whole);
    }

    #[test]
    fn large_entries_are_sent_by_reference_small_ones_copied() {
        let big = Resource::new(
            "big",
            Any {
                type_url: type_url::CLUSTER.into(),
                value: vec![7; 3 * COPY_BELOW_BYTES],
            },
        );
        let small = resource("small");
        let shared = big.wire.sotw.clone();
        let encoded = Encoded::new(
            type_url::CLUSTER,
            &own("1"),
            [small.wire.sotw.clone(), shared.clone()],
        )
        .unwrap();
        assert_eq!(encoded.chunks.len(), 2, "the small entry joins the head");
        assert_eq!(encoded.chunks[1].as_ptr(), shared.as_ptr(), "not a copy");
        let decoded: DiscoveryResponse = encoded.decode();
        assert_eq!(decoded.resources, vec![small.body, big.body]);
    }

    #[tokio::test]
    async fn the_body_sends_every_chunk_then_an_ok_status() {
        let a = resource("a");
        let responses = vec![
            Encoded::new(type_url::CLUSTER, &own("1"), [a.wire.sotw.clone()]),
            Encoded::new(type_url::CLUSTER, &own("2"), []),
        ];
        let mut body = Body::new(Box::pin(stream::iter(responses)));
        let mut data = Vec::new();
        let mut trailers = None;
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            let frame = frame.unwrap();
            match frame.into_data() {
                Ok(chunk) => data.extend_from_slice(&chunk),
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        assert!(body.is_end_stream());
        assert_eq!(trailers.unwrap()["grpc-status"], "0");
        // Two length-prefixed messages, back to back.
        let first_len = u32::from_be_bytes(data[1..5].try_into().unwrap()) as usize;
        let first = DiscoveryResponse::decode(&data[5..5 + first_len]).unwrap();
        assert_eq!(first.resources, vec![a.body]);
        let second = DiscoveryResponse::decode(&data[10 + first_len..]).unwrap();
        assert_eq!(second, own("2"));
    }

    #[tokio::test]
    async fn a_failed_response_ends_the_stream_with_its_status() {
        let responses = vec![Err(Status::resource_exhausted("too large"))];
        let mut body = Body::new(Box::pin(stream::iter(responses)));
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))
            .await
            .unwrap()
            .unwrap();
        let trailers = frame.into_trailers().unwrap();
        assert_eq!(trailers["grpc-status"], "8");
        assert!(
            std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))
                .await
                .is_none()
        );
    }
}
