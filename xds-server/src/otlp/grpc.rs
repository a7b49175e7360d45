//! OTLP/gRPC: `opentelemetry.proto.collector.metrics.v1.MetricsService/Export`.

use std::convert::Infallible;
use std::task::{Context, Poll};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::{Code, Status};

use super::{Ingest, MAX_REQUEST_BYTES, Refusal, Transport};

/// The gRPC method's path.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

/// The OTLP metrics gRPC service, ready for `tonic`'s
/// `Server::builder().add_service(..)`.
///
/// It is the generated `MetricsServiceServer` (requests up to
/// [`MAX_REQUEST_BYTES`], gzip accepted) with its refusals made OTLP's and
/// counted: a request too large is answered `RESOURCE_EXHAUSTED` (tonic says
/// `OUT_OF_RANGE`), one that does not decode `INVALID_ARGUMENT` (tonic says
/// `INTERNAL`). The handler itself never fails, so these codes can only come
/// from tonic's decoding.
#[derive(Clone)]
pub struct GrpcService {
    server: MetricsServiceServer<Handler>,
    ingest: Ingest,
}

impl GrpcService {
    pub(crate) fn new(ingest: Ingest) -> Self {
        let server = MetricsServiceServer::new(Handler {
            ingest: ingest.clone(),
        })
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .accept_compressed(CompressionEncoding::Gzip);
        Self { server, ingest }
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
        let export = request.uri().path() == EXPORT_PATH;
        let mut server = self.server.clone();
        let ingest = self.ingest.clone();
        Box::pin(async move {
            if export {
                ingest.count_request(Transport::Grpc);
            }
            let response = match server.call(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            Ok(if export {
                refine(response, &ingest)
            } else {
                response
            })
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

struct Handler {
    ingest: Ingest,
}

#[tonic::async_trait]
impl MetricsService for Handler {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, Status> {
        let outcome = self.ingest.export(request.get_ref(), Transport::Grpc);
        Ok(tonic::Response::new(outcome.response()))
    }
}
