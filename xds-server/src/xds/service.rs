//! The ADS gRPC service, routed by hand rather than through the generated
//! server so that its codec can be chosen: every stream keeps an encode and a
//! decode buffer for its whole life, and tonic's default of 8 KiB each is
//! most of what a connected Envoy costs. xDS requests are small and responses
//! are written out as soon as they are encoded, so small buffers lose
//! nothing (they grow for a larger message).

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use futures::future::BoxFuture;
use tonic::body::Body;
use tonic::codec::{BufferSettings, Codec};
use tonic::codegen::{Service, http};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

use super::{AdsServer, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, ResponseStream};

const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// Each stream's initial encode and decode buffer.
const BUFFER_BYTES: usize = 1024;

/// Encoded responses are handed to the connection once this many bytes are
/// encoded. tonic keeps encoding the responses a stream has ready into one
/// buffer until then, and the buffer keeps its size for the stream's life:
/// a few KiB, so a push of several types does not leave every stream
/// holding all of them at once (32 KiB by default).
const YIELD_BYTES: usize = 4 * BUFFER_BYTES;

/// Prost's codec with small per-stream buffers.
struct SmallBuffers<T, U>(PhantomData<fn() -> (T, U)>);

impl<T, U> Codec for SmallBuffers<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(BUFFER_BYTES, YIELD_BYTES))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::new(BUFFER_BYTES, YIELD_BYTES))
    }
}

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

struct Sotw(Arc<AdsServer>);

impl StreamingService<DiscoveryRequest> for Sotw {
    type Response = DiscoveryResponse;
    type ResponseStream = ResponseStream<DiscoveryResponse>;
    type Future = std::future::Ready<Result<Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: Request<Streaming<DiscoveryRequest>>) -> Self::Future {
        let stream = self.0.open(request.into_inner(), super::sotw::Sotw::new);
        std::future::ready(Ok(Response::new(stream)))
    }
}

struct Delta(Arc<AdsServer>);

impl StreamingService<DeltaDiscoveryRequest> for Delta {
    type Response = DeltaDiscoveryResponse;
    type ResponseStream = ResponseStream<DeltaDiscoveryResponse>;
    type Future = std::future::Ready<Result<Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: Request<Streaming<DeltaDiscoveryRequest>>) -> Self::Future {
        let stream = self.0.open(request.into_inner(), super::delta::Delta::new);
        std::future::ready(Ok(Response::new(stream)))
    }
}

impl<B> Service<http::Request<B>> for AdsService
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let server = Arc::clone(&self.server);
        match request.uri().path() {
            SOTW_PATH => Box::pin(async move {
                let mut grpc = Grpc::new(SmallBuffers::<DiscoveryResponse, DiscoveryRequest>(
                    PhantomData,
                ))
                .apply_max_message_size_config(Some(MAX_REQUEST_BYTES), Some(MAX_RESPONSE_BYTES));
                Ok(grpc.streaming(Sotw(server), request).await)
            }),
            DELTA_PATH => Box::pin(async move {
                let mut grpc = Grpc::new(SmallBuffers::<
                    DeltaDiscoveryResponse,
                    DeltaDiscoveryRequest,
                >(PhantomData))
                .apply_max_message_size_config(Some(MAX_REQUEST_BYTES), Some(MAX_RESPONSE_BYTES));
                Ok(grpc.streaming(Delta(server), request).await)
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}
