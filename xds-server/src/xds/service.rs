//! The ADS gRPC service, routed by hand rather than through the generated
//! server: requests are decoded by tonic with a small buffer (tonic's 8 KiB
//! default per stream was most of what a connected Envoy cost, and xDS
//! requests are small), and responses are sent as [`wire::Body`], of
//! resources encoded once per snapshot, instead of being encoded again into
//! a buffer per stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::Ready;
use tonic::Status;
use tonic::body::Body;
use tonic::codec::{BufferSettings, Streaming};
use tonic::codegen::{Service, http};
use tonic::server::NamedService;
use tonic_prost::ProstCodec;

use super::{AdsServer, MAX_REQUEST_BYTES, wire};

const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// Each stream's request buffer: it grows for a larger request.
const BUFFER_BYTES: usize = 1024;

/// `AggregatedDiscoveryService`, both methods, served by an [`AdsServer`].
#[derive(Clone)]
pub struct AdsService {
    server: Arc<AdsServer>,
}

impl AdsService {
    pub(super) fn new(server: AdsServer) -> Self {
        Self {
            server: Arc::new(server),
        }
    }
}

impl NamedService for AdsService {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

impl<B> Service<http::Request<B>> for AdsService
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let response = match request.uri().path() {
            SOTW_PATH => self.serve(request, |server, requests| {
                server.open(requests, super::sotw::Sotw::new)
            }),
            DELTA_PATH => self.serve(request, |server, requests| {
                server.open(requests, super::delta::Delta::new)
            }),
            _ => Status::unimplemented("no such method").into_http(),
        };
        futures::future::ready(Ok(response))
    }
}

impl AdsService {
    /// One stream of `Req`: its requests decoded, its responses from `open`.
    fn serve<B, Req>(
        &self,
        request: http::Request<B>,
        open: impl FnOnce(&AdsServer, Streaming<Req>) -> super::ResponseStream,
    ) -> http::Response<Body>
    where
        B: tonic::codegen::Body + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
        Req: prost::Message + Default + Send + 'static,
    {
        // Envoy does not compress xDS requests; one that says it does is
        // refused as tonic refuses an encoding it was not given.
        if let Some(encoding) = request.headers().get("grpc-encoding")
            && encoding != "identity"
        {
            return Status::unimplemented(format!(
                "request compression {encoding:?} is not supported"
            ))
            .into_http();
        }
        let decoder =
            ProstCodec::<(), Req>::raw_decoder(BufferSettings::new(BUFFER_BYTES, 4 * BUFFER_BYTES));
        let requests =
            Streaming::new_request(decoder, request.into_body(), None, Some(MAX_REQUEST_BYTES));
        let body = wire::Body::new(open(&self.server, requests));
        let mut response = http::Response::new(Body::new(body));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        response
    }
}
