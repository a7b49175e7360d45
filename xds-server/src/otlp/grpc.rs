//! OTLP/gRPC: `opentelemetry.proto.collector.metrics.v1.MetricsService/Export`.

use std::convert::Infallible;
use std::task::{Context, Poll};

use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message as _;
use prost::bytes::Buf as _;
use tonic::codec::{
    Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder,
};
use tonic::codegen::{BoxFuture, Service, http};
use tonic::{Code, Status};

use super::{Ingest, MAX_REQUEST_BYTES, Refusal, Transport};

/// The gRPC method's path.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

/// The OTLP metrics gRPC service, ready for `tonic`'s
/// `Server::builder().add_service(..)`.
///
/// It serves what `opentelemetry-proto`'s generated `MetricsServiceServer`
/// would (requests up to [`MAX_REQUEST_BYTES`], gzip accepted, other methods
/// `UNIMPLEMENTED`), with two differences. Its codec decodes each message
/// from one contiguous buffer: `prost` reading through tonic's `DecodeBuf`
/// advances a `BytesMut` at every field, which cost weir more than the rest
/// of decoding. And its refusals are OTLP's and counted: a request too large
/// is answered `RESOURCE_EXHAUSTED` (tonic says `OUT_OF_RANGE`), one that does
/// not decode `INVALID_ARGUMENT` (tonic says `INTERNAL`). The handler itself
/// never fails, so these codes can only come from decoding.
#[derive(Clone)]
pub struct GrpcService {
    ingest: Ingest,
}

impl GrpcService {
    pub(crate) fn new(ingest: Ingest) -> Self {
        Self { ingest }
    }
}

impl tonic::server::NamedService for GrpcService {
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
}

impl Service<http::Request<tonic::body::Body>> for GrpcService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let ingest = self.ingest.clone();
        if request.uri().path() != EXPORT_PATH {
            return Box::pin(async move { Ok(Status::unimplemented("").into_http()) });
        }
        Box::pin(async move {
            ingest.count_request(Transport::Grpc);
            let mut accept = EnabledCompressionEncodings::default();
            accept.enable(CompressionEncoding::Gzip);
            let mut grpc = tonic::server::Grpc::new(ExportCodec)
                .apply_compression_config(accept, EnabledCompressionEncodings::default())
                .apply_max_message_size_config(Some(MAX_REQUEST_BYTES), None);
            let response = grpc.unary(Export(ingest.clone()), request).await;
            Ok(refine(response, &ingest))
        })
    }
}

/// Turns tonic's decoding errors into OTLP's codes, and counts them.
fn refine(
    response: http::Response<tonic::body::Body>,
    ingest: &Ingest,
) -> http::Response<tonic::body::Body> {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    match status.code() {
        Code::OutOfRange | Code::ResourceExhausted => {
            let message = format!("the request is larger than {MAX_REQUEST_BYTES} bytes");
            ingest.refused(Refusal::TooLarge, Transport::Grpc, &message);
            Status::resource_exhausted(message).into_http()
        }
        Code::Internal => {
            let message = format!("the request does not decode: {}", status.message());
            ingest.refused(Refusal::Malformed, Transport::Grpc, &message);
            Status::invalid_argument(message).into_http()
        }
        _ => response,
    }
}

/// The export method.
struct Export(Ingest);

impl tonic::server::UnaryService<ExportMetricsServiceRequest> for Export {
    type Response = ExportMetricsServiceResponse;
    type Future = BoxFuture<tonic::Response<Self::Response>, Status>;

    fn call(&mut self, request: tonic::Request<ExportMetricsServiceRequest>) -> Self::Future {
        let outcome = self.0.export(request.get_ref(), Transport::Grpc);
        Box::pin(async move { Ok(tonic::Response::new(outcome.response())) })
    }
}

/// Protobuf in and out; each request decoded from one contiguous buffer.
#[derive(Clone, Copy, Default)]
struct ExportCodec;

impl Codec for ExportCodec {
    type Encode = ExportMetricsServiceResponse;
    type Decode = ExportMetricsServiceRequest;
    type Encoder = ExportCodec;
    type Decoder = ExportCodec;

    fn encoder(&mut self) -> Self::Encoder {
        ExportCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        ExportCodec
    }
}

impl Encoder for ExportCodec {
    type Item = ExportMetricsServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf)
            .map_err(|err| Status::internal(err.to_string()))
    }
}

impl Decoder for ExportCodec {
    type Item = ExportMetricsServiceRequest;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        let bytes = buf.copy_to_bytes(buf.remaining());
        ExportMetricsServiceRequest::decode(&bytes[..])
            .map(Some)
            .map_err(|err| Status::internal(err.to_string()))
    }
}
