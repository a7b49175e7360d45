//! OTLP ingestion over real sockets: a tonic client against the gRPC service,
//! reqwest against `POST /v1/metrics`, and random payloads in process.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
    exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use weir::metrics_store::MetricsStore;
use weir::otlp::{self, Ingest, MAX_REQUEST_BYTES};

/// Every test's clock stands still here.
const NOW: u64 = 1_700_000_000_000;

fn clock() -> u64 {
    NOW
}

const DELTA: i32 = 1;
const CUMULATIVE: i32 = 2;

fn ingest() -> (Ingest, Arc<Mutex<MetricsStore>>) {
    let store = Arc::new(Mutex::new(MetricsStore::new(60_000)));
    (Ingest::new(Arc::clone(&store), clock), store)
}

fn window(store: &Mutex<MetricsStore>, cluster: &str) -> weir::metrics_store::WindowStats {
    store.lock().unwrap().window(cluster, NOW, 10_000)
}

// ---- building requests ------------------------------------------------------

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn s(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.to_owned()))
}

fn request(resource: Vec<KeyValue>, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource,
                ..Resource::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..ScopeMetrics::default()
            }],
            ..ResourceMetrics::default()
        }],
    }
}

fn metric(name: &str, unit: &str, data: Data) -> Metric {
    Metric {
        name: name.to_owned(),
        unit: unit.to_owned(),
        data: Some(data),
        ..Metric::default()
    }
}

/// Envoy's `cluster.upstream_rq_xx`: (cluster, class, value).
fn rq_xx(temporality: i32, points: &[(&str, &str, i64)]) -> Metric {
    let data_points = points
        .iter()
        .map(|&(cluster, class, value)| NumberDataPoint {
            attributes: vec![
                s("envoy.cluster_name", cluster),
                s("envoy.response_code_class", class),
            ],
            time_unix_nano: 1,
            value: Some(number_data_point::Value::AsInt(value)),
            ..NumberDataPoint::default()
        })
        .collect();
    metric(
        "cluster.upstream_rq_xx",
        "",
        Data::Sum(Sum {
            data_points,
            aggregation_temporality: temporality,
            is_monotonic: true,
        }),
    )
}

const ENVOY_BOUNDS: [f64; 10] = [0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];

fn hist_point(attributes: Vec<KeyValue>, bounds: &[f64], counts: &[u64]) -> HistogramDataPoint {
    HistogramDataPoint {
        attributes,
        count: counts.iter().sum(),
        sum: Some(1.0),
        explicit_bounds: bounds.to_vec(),
        bucket_counts: counts.to_vec(),
        ..HistogramDataPoint::default()
    }
}

/// Envoy's `cluster.upstream_rq_time` for one cluster.
fn rq_time(temporality: i32, cluster: &str, counts: &[u64]) -> Metric {
    metric(
        "cluster.upstream_rq_time",
        "",
        Data::Histogram(Histogram {
            data_points: vec![hist_point(
                vec![s("envoy.cluster_name", cluster)],
                &ENVOY_BOUNDS,
                counts,
            )],
            aggregation_temporality: temporality,
        }),
    )
}

fn gauge(name: &str, n: usize) -> Metric {
    metric(
        name,
        "",
        Data::Gauge(Gauge {
            data_points: vec![
                NumberDataPoint {
                    value: Some(number_data_point::Value::AsInt(3)),
                    ..NumberDataPoint::default()
                };
                n
            ],
        }),
    )
}

/// What an Envoy sends every second for clusters `ingest-eu` and `ingest-us`.
fn envoy_flush() -> ExportMetricsServiceRequest {
    request(
        vec![s("service.name", "envoy"), s("host.name", "edge-1")],
        vec![
            rq_xx(
                DELTA,
                &[
                    ("ingest-eu", "2", 950),
                    ("ingest-eu", "5", 50),
                    ("ingest-us", "2", 300),
                    ("ingest-us", "4", 20),
                ],
            ),
            metric(
                "cluster.upstream_rq",
                "",
                Data::Sum(Sum {
                    data_points: vec![NumberDataPoint {
                        attributes: vec![
                            s("envoy.cluster_name", "ingest-eu"),
                            s("envoy.response_code", "200"),
                        ],
                        value: Some(number_data_point::Value::AsInt(950)),
                        ..NumberDataPoint::default()
                    }],
                    aggregation_temporality: DELTA,
                    is_monotonic: true,
                }),
            ),
            gauge("cluster.upstream_rq_active", 2),
            gauge("wasmcustom.weir.queue_depth", 1),
            // 1000 requests: 500 at most 5 ms, 400 at most 10 ms, 90 at most 25, 10 at most 50.
            rq_time(DELTA, "ingest-eu", &[0, 0, 500, 400, 90, 10, 0, 0, 0, 0, 0]),
            rq_time(DELTA, "ingest-us", &[0, 0, 0, 0, 0, 0, 320, 0, 0, 0, 0]),
        ],
    )
}

// ---- servers ----------------------------------------------------------------

async fn grpc_server(ingest: &Ingest) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = ingest.grpc_service();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

async fn http_server(ingest: &Ingest) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = ingest.http_router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}/v1/metrics")
}

async fn grpc_client(addr: SocketAddr) -> MetricsServiceClient<tonic::transport::Channel> {
    MetricsServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

/// Posts `body` with this content type; the status and the body.
async fn post(url: &str, content_type: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

/// `google.rpc.Status`, as HTTP error bodies carry it.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

// ---- gRPC -------------------------------------------------------------------

#[tokio::test]
async fn grpc_envoy_flush_reaches_the_store() {
    let (ingest, store) = ingest();
    let mut client = grpc_client(grpc_server(&ingest).await).await;
    let response = client.export(envoy_flush()).await.unwrap().into_inner();
    assert_eq!(response, ExportMetricsServiceResponse::default());

    let eu = window(&store, "ingest-eu");
    assert_eq!((eu.requests, eu.errors), (1000, 50));
    assert_eq!(eu.error_rate(), Some(0.05));
    assert_eq!(eu.latency.count(), 1000);
    assert_eq!(eu.latency.quantile(0.5), Some(5.0));
    assert_eq!(eu.latency.quantile(0.9), Some(10.0));
    assert_eq!(eu.latency.quantile(0.99), Some(25.0));
    let us = window(&store, "ingest-us");
    assert_eq!((us.requests, us.errors), (320, 0));
    assert_eq!(us.latency.quantile(0.5), Some(75.0));

    // A second flush adds up in the window.
    client.export(envoy_flush()).await.unwrap();
    assert_eq!(window(&store, "ingest-eu").requests, 2000);

    let status = ingest.status();
    assert_eq!(status["requests"]["grpc"], 2);
    // Per flush: 4 rq_xx points and 2 histogram points used; 1 + 2 + 1 others ignored.
    assert_eq!(status["data_points"]["used"], 12);
    assert_eq!(status["data_points"]["ignored"], 8);
    assert_eq!(status["data_points"]["accepted"], 20);
    assert_eq!(status["data_points"]["rejected"], 0);
    assert_eq!(status["last_request_at_ms"], NOW);
    assert!(status["last_error"].is_null());
}

#[tokio::test]
async fn grpc_partial_success_names_the_rejected_points() {
    let (ingest, store) = ingest();
    let mut client = grpc_client(grpc_server(&ingest).await).await;
    let mut bad_histogram = rq_time(DELTA, "ingest-eu", &[1, 2, 3]);
    if let Some(Data::Histogram(h)) = &mut bad_histogram.data {
        h.data_points[0].count = 6;
    }
    let request = request(
        vec![],
        vec![
            rq_xx(DELTA, &[("ingest-eu", "2", 10), ("ingest-eu", "9", 1)]),
            bad_histogram,
            gauge("cluster.upstream_rq_active", 1),
        ],
    );
    let response = client.export(request).await.unwrap().into_inner();
    let partial = response.partial_success.expect("partial success");
    assert_eq!(partial.rejected_data_points, 2);
    assert!(
        partial
            .error_message
            .contains("envoy.response_code_class must be 1 to 5"),
        "{}",
        partial.error_message
    );
    assert!(
        partial
            .error_message
            .contains("3 bucket_counts for 10 explicit_bounds"),
        "{}",
        partial.error_message
    );
    assert_eq!(window(&store, "ingest-eu").requests, 10);
    let status = ingest.status();
    assert_eq!(status["data_points"]["rejected"], 2);
    assert_eq!(status["data_points"]["accepted"], 2);
    assert_eq!(status["partial_successes"], 1);
    assert!(
        status["last_error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("2 data points rejected: ")
    );
}

mod raw {
    //! A gRPC codec sending arbitrary bytes as the request message.
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
    use prost::Message as _;
    use prost::bytes::BufMut as _;
    use tonic::Status;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    #[derive(Clone, Copy, Default)]
    pub(crate) struct RawCodec;

    pub(crate) struct RawEncoder;
    pub(crate) struct ResponseDecoder;

    impl Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = ExportMetricsServiceResponse;
        type Encoder = RawEncoder;
        type Decoder = ResponseDecoder;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> ResponseDecoder {
            ResponseDecoder
        }
    }

    impl Encoder for RawEncoder {
        type Item = Vec<u8>;
        type Error = Status;
        fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
            buf.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for ResponseDecoder {
        type Item = ExportMetricsServiceResponse;
        type Error = Status;
        fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
            ExportMetricsServiceResponse::decode(buf)
                .map(Some)
                .map_err(|e| Status::internal(e.to_string()))
        }
    }
}

async fn grpc_raw(
    addr: SocketAddr,
    bytes: Vec<u8>,
) -> Result<ExportMetricsServiceResponse, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    );
    grpc.unary(tonic::Request::new(bytes), path, raw::RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn grpc_refuses_malformed_and_oversized_requests() {
    let (ingest, store) = ingest();
    let addr = grpc_server(&ingest).await;

    // Field 1 (resource_metrics) claims 100 bytes and has 2.
    let err = grpc_raw(addr, vec![0x0a, 100, 1, 2]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("does not decode"), "{err:?}");

    // The raw path works with a valid message too.
    let ok = grpc_raw(addr, envoy_flush().encode_to_vec()).await.unwrap();
    assert_eq!(ok, ExportMetricsServiceResponse::default());
    assert_eq!(window(&store, "ingest-eu").requests, 1000);

    // A valid message, just too large.
    let mut huge = envoy_flush();
    huge.resource_metrics[0].scope_metrics[0].metrics[2].name = "x".repeat(MAX_REQUEST_BYTES);
    let err = grpc_client(addr).await.export(huge).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");

    let status = ingest.status();
    assert_eq!(status["requests"]["grpc"], 3);
    assert_eq!(status["refused_requests"]["malformed"], 1);
    assert_eq!(status["refused_requests"]["too_large"], 1);
    assert_eq!(status["last_error"]["transport"], "grpc");
    // Nothing else was added.
    assert_eq!(window(&store, "ingest-eu").requests, 1000);
}

#[tokio::test]
async fn grpc_accepts_gzip() {
    let (ingest, store) = ingest();
    let client = grpc_client(grpc_server(&ingest).await).await;
    let mut client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
    client.export(envoy_flush()).await.unwrap();
    assert_eq!(window(&store, "ingest-eu").requests, 1000);
}

#[tokio::test]
async fn grpc_bounds_what_it_inflates() {
    let (ingest, store) = ingest();
    let client = grpc_client(grpc_server(&ingest).await).await;
    let mut client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
    // A few kilobytes on the wire that inflate past the largest request.
    let mut bomb = envoy_flush();
    bomb.resource_metrics[0].scope_metrics[0].metrics[0].description = "a".repeat(5 << 20);
    assert!(bomb.encoded_len() > MAX_REQUEST_BYTES);
    let err = client.export(bomb).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert_eq!(ingest.status()["refused_requests"]["too_large"], 1);
    assert_eq!(
        window(&store, "ingest-eu").requests,
        0,
        "nothing of it was added"
    );

    // The connection and the server go on.
    client.export(envoy_flush()).await.unwrap();
    assert_eq!(window(&store, "ingest-eu").requests, 1000);
}

// ---- HTTP -------------------------------------------------------------------

#[tokio::test]
async fn http_protobuf_and_json_reach_the_store() {
    let (ingest, store) = ingest();
    let url = http_server(&ingest).await;

    let (status, body) = post(
        &url,
        "application/x-protobuf",
        envoy_flush().encode_to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        ExportMetricsServiceResponse::decode(&body[..]).unwrap(),
        ExportMetricsServiceResponse::default()
    );
    assert_eq!(window(&store, "ingest-eu").requests, 1000);

    // OTLP/JSON as the specification writes it: lowerCamelCase keys, 64-bit
    // integers as strings, enums as integers; an application's histogram in seconds.
    let json = r#"{
      "resourceMetrics": [{
        "resource": {"attributes": [
          {"key": "service.name", "value": {"stringValue": "checkout"}},
          {"key": "weir.cluster", "value": {"stringValue": "payments-eu"}}
        ]},
        "scopeMetrics": [{
          "scope": {"name": "io.opentelemetry.http", "version": "1.0"},
          "metrics": [{
            "name": "http.server.request.duration",
            "unit": "s",
            "description": "Duration of HTTP server requests.",
            "histogram": {
              "aggregationTemporality": 1,
              "dataPoints": [
                {
                  "attributes": [
                    {"key": "http.request.method", "value": {"stringValue": "POST"}},
                    {"key": "http.response.status_code", "value": {"intValue": "200"}}
                  ],
                  "startTimeUnixNano": "1700000000000000000",
                  "timeUnixNano": "1700000001000000000",
                  "count": "95",
                  "sum": 1.9,
                  "bucketCounts": ["0", "50", "40", "5", "0"],
                  "explicitBounds": [0.005, 0.01, 0.025, 0.05],
                  "exemplars": [{"timeUnixNano": "1700000000500000000", "asDouble": 0.007,
                                 "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174"}]
                },
                {
                  "attributes": [
                    {"key": "http.request.method", "value": {"stringValue": "POST"}},
                    {"key": "http.response.status_code", "value": {"intValue": "503"}}
                  ],
                  "count": "5",
                  "sum": 0.25,
                  "bucketCounts": ["0", "0", "0", "0", "5"],
                  "explicitBounds": [0.005, 0.01, 0.025, 0.05],
                  "min": 0.05, "max": "Infinity"
                }
              ]
            }
          }, {
            "name": "http.server.active_requests",
            "sum": {"aggregationTemporality": 2, "dataPoints": [{"asInt": "3"}]}
          }]
        }]
      }]
    }"#;
    let (status, body) = post(&url, "application/json; charset=utf-8", json.into()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        serde_json::json!({})
    );
    let payments = window(&store, "payments-eu");
    assert_eq!((payments.requests, payments.errors), (100, 5));
    assert_eq!(payments.latency.bounds, vec![5.0, 10.0, 25.0, 50.0]);
    assert_eq!(payments.latency.counts, vec![0, 50, 40, 5, 5]);
    assert_eq!(payments.latency.quantile(0.5), Some(10.0));
    let status = ingest.status();
    assert_eq!(status["requests"]["http"], 2);
    assert_eq!(status["data_points"]["used"], 8);
}

#[tokio::test]
async fn http_partial_success_is_encoded_like_the_request() {
    let (ingest, store) = ingest();
    let url = http_server(&ingest).await;
    let json = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[
        {"name":"cluster.upstream_rq_xx","sum":{"aggregationTemporality":1,"dataPoints":[
          {"attributes":[{"key":"envoy.cluster_name","value":{"stringValue":"c"}},
                         {"key":"envoy.response_code_class","value":{"stringValue":"5"}}],"asInt":"4"},
          {"attributes":[{"key":"envoy.response_code_class","value":{"stringValue":"2"}}],"asInt":"9"}]}}]}]}]}"#;
    let (status, body) = post(&url, "application/json", json.into()).await;
    assert_eq!(status, 200);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["partialSuccess"]["rejectedDataPoints"], "1");
    assert_eq!(
        body["partialSuccess"]["errorMessage"],
        "cluster.upstream_rq_xx: no attribute envoy.cluster_name (1 data point)"
    );
    let c = window(&store, "c");
    assert_eq!((c.requests, c.errors), (4, 4));

    let decoded = otlp::decode_json(json.as_bytes()).unwrap();
    let (status, body) = post(&url, "application/x-protobuf", decoded.encode_to_vec()).await;
    assert_eq!(status, 200);
    let response = ExportMetricsServiceResponse::decode(&body[..]).unwrap();
    assert_eq!(response.partial_success.unwrap().rejected_data_points, 1);
    assert_eq!(window(&store, "c").requests, 8);
}

#[tokio::test]
async fn http_refuses_what_it_cannot_read() {
    let (ingest, store) = ingest();
    let url = http_server(&ingest).await;

    let (status, body) = post(&url, "application/x-protobuf", vec![0x0a, 100, 1, 2]).await;
    assert_eq!(status, 400);
    let rpc = RpcStatus::decode(&body[..]).unwrap();
    assert_eq!(rpc.code, tonic::Code::InvalidArgument as i32);
    assert!(rpc.message.contains("does not decode"), "{}", rpc.message);

    let (status, body) = post(
        &url,
        "application/json",
        br#"{"resourceMetrics": {}}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["code"], 3);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("resourceMetrics: expected an array"),
        "{body}"
    );
    let (status, _) = post(&url, "application/json", b"not json".to_vec()).await;
    assert_eq!(status, 400);

    let (status, _) = post(&url, "text/plain", b"hello".to_vec()).await;
    assert_eq!(status, 415);

    let (status, body) = post(
        &url,
        "application/x-protobuf",
        vec![0; MAX_REQUEST_BYTES + 1],
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(
        RpcStatus::decode(&body[..]).unwrap().code,
        tonic::Code::ResourceExhausted as i32
    );
    // Streamed without a length, it is cut off all the same.
    assert_eq!(post_chunked(&url, 5, 1 << 20).await, 413);

    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status().as_u16(), 405);

    let status = ingest.status();
    assert_eq!(status["refused_requests"]["malformed"], 3);
    assert_eq!(status["refused_requests"]["unsupported"], 1);
    assert_eq!(status["refused_requests"]["too_large"], 2);
    assert_eq!(status["requests"]["http"], 6);
    assert_eq!(status["last_error"]["transport"], "http");
    assert_eq!(window(&store, "ingest-eu").requests, 0);
}

/// Posts `chunks` chunks of `size` zeros with `Transfer-Encoding: chunked`
/// over a plain socket; the response's status.
async fn post_chunked(url: &str, chunks: usize, size: usize) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/v1/metrics");
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/metrics HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/x-protobuf\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    // The server may answer (and stop reading) before everything is written.
    let _ = socket.write_all(head.as_bytes()).await;
    for _ in 0..chunks {
        let _ = socket.write_all(format!("{size:x}\r\n").as_bytes()).await;
        let _ = socket.write_all(&vec![0; size]).await;
        let _ = socket.write_all(b"\r\n").await;
    }
    let _ = socket.write_all(b"0\r\n\r\n").await;
    let mut response = vec![0; 64];
    let n = socket.read(&mut response).await.unwrap();
    let line = String::from_utf8_lossy(&response[..n]).to_string();
    line.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn http_accepts_gzip_and_bounds_what_it_inflates() {
    let (ingest, store) = ingest();
    let url = http_server(&ingest).await;
    let client = reqwest::Client::new();
    let send = |body: Vec<u8>, encoding: &'static str| {
        client
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", encoding)
            .body(body)
            .send()
    };
    let response = send(gzip(&envoy_flush().encode_to_vec()), "gzip")
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(window(&store, "ingest-eu").requests, 1000);

    // 5 MiB of zeros compress to a few kilobytes.
    let bomb = gzip(&vec![0; 5 << 20]);
    assert!(bomb.len() < 64 << 10);
    let response = send(bomb, "gzip").await.unwrap();
    assert_eq!(response.status().as_u16(), 413);

    let response = send(b"not gzip".to_vec(), "gzip").await.unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let response = send(envoy_flush().encode_to_vec(), "br").await.unwrap();
    assert_eq!(response.status().as_u16(), 415);
}

// ---- translation over the wire ------------------------------------------------

/// One flush of Envoy 1.40's stats sink (`envoy/bootstrap.yaml`: deltas,
/// tags as attributes) from an Envoy running the filter, as captured on the
/// wire: the resource carries only `telemetry.sdk.*`, the filter's counters
/// are delta sums without attributes, its gauges plain gauges.
fn envoy_admission_flush(host: &str, admitted: i64, shed: i64, in_flight: i64) -> Vec<u8> {
    let at = |value: i64, start: u64| NumberDataPoint {
        start_time_unix_nano: start,
        time_unix_nano: 1_795_576_257_719_075_000,
        value: Some(number_data_point::Value::AsInt(value)),
        ..NumberDataPoint::default()
    };
    let sum = |name: &str, value: i64| {
        metric(
            name,
            "",
            Data::Sum(Sum {
                data_points: vec![at(value, 1_795_576_256_720_124_000)],
                aggregation_temporality: DELTA,
                is_monotonic: true,
            }),
        )
    };
    let gauge = |name: &str, value: i64| {
        metric(
            name,
            "",
            Data::Gauge(Gauge {
                data_points: vec![at(value, 0)],
            }),
        )
    };
    let mut resource = vec![
        s("telemetry.sdk.name", "envoy"),
        s("telemetry.sdk.language", "cpp"),
        s(
            "telemetry.sdk.version",
            "9e5580933739775e8bce696a57a2e1bc99368f23/1.40.0/Clean/RELEASE/BoringSSL",
        ),
    ];
    if !host.is_empty() {
        resource.push(s("host.name", host));
    }
    request(
        resource,
        vec![
            gauge("wasm.wasm_vm_count", 3),
            gauge("wasmcustom.weir.in_flight", in_flight),
            gauge("wasm.envoy.wasm.runtime.v8.active", 3),
            sum("wasmcustom.weir.canary.ingest-eu-canary.stable", 3),
            sum("wasmcustom.weir.class.alarm.admitted", admitted),
            rq_xx(DELTA, &[("ingest-eu", "2", admitted)]),
            sum("wasmcustom.weir.class.heartbeat.shed", shed),
            gauge("wasmcustom.weir.queue.depth", 2),
        ],
    )
    .encode_to_vec()
}

#[tokio::test]
async fn the_filters_admission_counters_are_kept_per_source() {
    let (ingest, store) = ingest();
    let url = http_server(&ingest).await;
    let mut client = grpc_client(grpc_server(&ingest).await).await;
    let flush = |host, admitted, shed, in_flight| {
        ExportMetricsServiceRequest::decode(
            &envoy_admission_flush(host, admitted, shed, in_flight)[..],
        )
        .unwrap()
    };
    client.export(flush("", 5, 1, 4)).await.unwrap();
    client.export(flush("", 3, 0, 2)).await.unwrap();
    let (status, _) = post(
        &url,
        "application/x-protobuf",
        envoy_admission_flush("edge-2", 10, 2, 1),
    )
    .await;
    assert_eq!(status, 200);

    let admission = store.lock().unwrap().admission();
    assert_eq!(admission.sources, 2);
    assert_eq!(
        admission.classes["alarm"],
        weir::metrics_store::ClassCounts {
            admitted: 18,
            ..Default::default()
        }
    );
    assert_eq!(admission.classes["heartbeat"].shed, 3);
    // The last in-flight value of each source, summed.
    assert_eq!((admission.in_flight, admission.queue_depth), (3, 4));
    // Admission counters do not count as cluster requests.
    assert_eq!(window(&store, "ingest-eu").requests, 18);

    let status = ingest.status();
    // Per flush: 2 gauges and 2 counters of the filter's admission and 1
    // rq_xx used; the wasm gauges and the canary counter ignored.
    assert_eq!(status["data_points"]["used"], 15);
    assert_eq!(status["data_points"]["ignored"], 9);
    assert_eq!(status["data_points"]["rejected"], 0);

    // Cumulative totals replace each other.
    let mut cumulative = flush("edge-3", 100, 0, 0);
    for metric in &mut cumulative.resource_metrics[0].scope_metrics[0].metrics {
        if let Some(Data::Sum(sum)) = &mut metric.data {
            sum.aggregation_temporality = CUMULATIVE;
        }
    }
    ingest.ingest(&cumulative);
    ingest.ingest(&cumulative);
    assert_eq!(
        store.lock().unwrap().admission().classes["alarm"].admitted,
        118
    );
}

#[tokio::test]
async fn cumulative_sources_become_deltas_with_a_reset() {
    let (ingest, store) = ingest();
    let url = http_server(&ingest).await;
    let flush = |ok: i64, errors: i64, counts: &[u64]| {
        request(
            vec![s("service.name", "envoy"), s("host.name", "edge-2")],
            vec![
                rq_xx(CUMULATIVE, &[("c", "2", ok), ("c", "5", errors)]),
                rq_time(CUMULATIVE, "c", counts),
            ],
        )
        .encode_to_vec()
    };
    let totals = |store: &Mutex<MetricsStore>| {
        let w = window(store, "c");
        (w.requests, w.errors, w.latency.count())
    };
    let mut counts = [0u64; 11];
    counts[3] = 100;
    post(&url, "application/x-protobuf", flush(1000, 10, &counts)).await;
    assert_eq!(
        totals(&store),
        (0, 0, 0),
        "a first cumulative value is a baseline"
    );

    counts[3] = 130;
    counts[5] = 5;
    post(&url, "application/x-protobuf", flush(1030, 15, &counts)).await;
    assert_eq!(totals(&store), (35, 5, 35));

    // Envoy restarted: every value went down and counts from zero.
    let mut counts = [0u64; 11];
    counts[2] = 7;
    post(&url, "application/x-protobuf", flush(6, 1, &counts)).await;
    assert_eq!(totals(&store), (42, 6, 42));

    counts[2] = 10;
    post(&url, "application/x-protobuf", flush(8, 2, &counts)).await;
    assert_eq!(totals(&store), (45, 7, 45));
    assert_eq!(ingest.status()["cumulative_streams"], 3);

    // 4xx appear for the first time: Envoy reports a counter once it is used,
    // and this source is known, so the whole value is new.
    let mut request = ExportMetricsServiceRequest::decode(&flush(9, 2, &counts)[..]).unwrap();
    request.resource_metrics[0].scope_metrics[0].metrics[0] =
        rq_xx(CUMULATIVE, &[("c", "2", 9), ("c", "5", 2), ("c", "4", 6)]);
    post(&url, "application/x-protobuf", request.encode_to_vec()).await;
    assert_eq!(totals(&store).0, 45 + 1 + 6);
    assert_eq!(ingest.status()["data_points"]["rejected"], 0);
}

#[test]
fn a_cluster_reported_by_envoy_and_an_application_counts_once() {
    let (ingest, store) = ingest();
    let app = |failed_count: u64| {
        request(
            vec![s("service.name", "ingest"), s("weir.cluster", "ingest-eu")],
            vec![metric(
                "http.server.request.duration",
                "ms",
                Data::Histogram(Histogram {
                    data_points: vec![
                        hist_point(
                            vec![kv(
                                "http.response.status_code",
                                any_value::Value::IntValue(200),
                            )],
                            &ENVOY_BOUNDS,
                            &[0, 0, 900, 0, 0, 0, 0, 0, 0, 0, 0],
                        ),
                        hist_point(
                            vec![kv(
                                "http.response.status_code",
                                any_value::Value::IntValue(503),
                            )],
                            &ENVOY_BOUNDS,
                            &[0, 0, failed_count, 0, 0, 0, 0, 0, 0, 0, 0],
                        ),
                    ],
                    aggregation_temporality: DELTA,
                }),
            )],
        )
    };
    // The application alone: its numbers.
    ingest.ingest(&app(100));
    let w = window(&store, "ingest-eu");
    assert_eq!((w.requests, w.errors), (1000, 100));
    // Envoy reports the same requests (1000, 50 of them 5xx): Envoy's
    // numbers, not the sum of both.
    ingest.ingest(&envoy_flush());
    let w = window(&store, "ingest-eu");
    assert_eq!((w.requests, w.errors, w.latency.count()), (1000, 50, 1000));
    // A cluster only the application reports keeps the application's.
    let only_app = request(
        vec![s("weir.cluster", "backoffice")],
        vec![metric(
            "http.server.request.duration",
            "s",
            Data::Histogram(Histogram {
                data_points: vec![hist_point(vec![], &[0.1], &[3, 1])],
                aggregation_temporality: DELTA,
            }),
        )],
    );
    ingest.ingest(&only_app);
    assert_eq!(window(&store, "backoffice").requests, 4);
}

#[tokio::test]
async fn exponential_application_histograms_over_json() {
    let (ingest, store) = ingest();
    let url = http_server(&ingest).await;
    // Scale 2 (base 2^(1/4)): index -28 covers (2^-7, 2^-6.75] s = (7.8, 9.3] ms and
    // index -20 covers (2^-5, 2^-4.75] s = (31.3, 37.2] ms.
    let json = |temporality: u8, zero: u64, low: u64, high: u64, code: u16| {
        format!(
            r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"telemetry-api"}}}}]}},
              "scopeMetrics":[{{"metrics":[{{"name":"http.server.request.duration","unit":"s",
                "exponentialHistogram":{{"aggregationTemporality":{temporality},"dataPoints":[{{
                  "attributes":[{{"key":"http.response.status_code","value":{{"intValue":"{code}"}}}}],
                  "count":"{count}","sum":1,"scale":2,"zeroCount":"{zero}",
                  "positive":{{"offset":-28,"bucketCounts":["{low}","0","0","0","0","0","0","0","{high}"]}},
                  "negative":{{"offset":0,"bucketCounts":[]}}}}]}}}}]}}]}}]}}"#,
            count = zero + low + high
        )
    };
    let (status, body) = post(&url, "application/json", json(1, 0, 90, 10, 200).into()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    post(&url, "application/json", json(1, 0, 0, 4, 500).into()).await;
    let w = window(&store, "telemetry-api");
    assert_eq!((w.requests, w.errors), (104, 4));
    assert_eq!(w.latency.bounds, otlp::EXPONENTIAL_BOUNDS_MS.to_vec());
    // (7.8, 9.3] ms is spread over (7.4, 8.8] and (8.8, 10]; (31.3, 37.2] ms
    // over (31, 37] and (37, 44].
    let within = |low: f64, high: f64| -> u64 {
        let bounds = &w.latency.bounds;
        let from = bounds.iter().position(|&b| b == low).unwrap() + 1;
        let to = bounds.iter().position(|&b| b == high).unwrap();
        w.latency.counts[from..=to].iter().sum()
    };
    assert_eq!(within(7.4, 10.0), 90);
    assert_eq!(within(31.0, 44.0), 14);
    assert_eq!(w.latency.count(), 104);
    let p50 = w.latency.quantile(0.5).unwrap();
    assert!((7.8..=9.3).contains(&p50), "{p50}");

    // Cumulative, from another service: a baseline, then the difference.
    let other = |zero, low, high| json(2, zero, low, high, 200).replace("telemetry-api", "other");
    post(&url, "application/json", other(1, 50, 5).into()).await;
    post(&url, "application/json", other(3, 80, 5).into()).await;
    let w = window(&store, "other");
    assert_eq!(w.requests, 32);
    assert_eq!(w.latency.counts[0], 2);
    let fast: u64 = w.latency.counts[14..=15].iter().sum();
    assert_eq!(fast, 30, "(7.4, 10] ms: {:?}", w.latency.counts);
}

// ---- robustness ----------------------------------------------------------------

/// xorshift64*: reproducible and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_bytes_never_panic() {
    let (ingest, _store) = ingest();
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let valid = envoy_flush().encode_to_vec();
    let valid_json = br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"cluster.upstream_rq_xx","sum":{"aggregationTemporality":1,"dataPoints":[{"attributes":[{"key":"envoy.cluster_name","value":{"stringValue":"c"}},{"key":"envoy.response_code_class","value":{"intValue":"2"}}],"asInt":"4"}]}}]}]}]}"#;
    let mut decoded = 0;
    for round in 0..4_000 {
        let payload = match round % 4 {
            0 => {
                let n = rng.below(600) as usize;
                rng.bytes(n)
            }
            1 => {
                // A valid message with a few bytes changed reaches the translation.
                let mut bytes = valid.clone();
                for _ in 0..=rng.below(4) {
                    let at = rng.below(bytes.len() as u64) as usize;
                    bytes[at] = rng.next() as u8;
                }
                bytes
            }
            2 => {
                let mut bytes = valid.clone();
                bytes.truncate(rng.below(bytes.len() as u64) as usize);
                bytes
            }
            _ => {
                let mut bytes = valid_json.to_vec();
                for _ in 0..=rng.below(3) {
                    let at = rng.below(bytes.len() as u64) as usize;
                    bytes[at] = *rng.pick(b"{}[]\":,0123456789-.eE nulltrefas\\");
                }
                let _ = otlp::decode_json(&bytes);
                bytes
            }
        };
        if otlp::decode_protobuf(&payload).is_ok() {
            decoded += 1;
        }
        let _ = ingest.ingest_bytes(&payload);
        if let Ok(request) = otlp::decode_json(&payload) {
            let _ = ingest.ingest(&request);
        }
    }
    assert!(decoded > 100, "only {decoded} payloads decoded");
    let status = ingest.status();
    assert!(status["requests"]["in_process"].as_u64().unwrap() >= 4_000);
}

/// Random but well-formed requests about the metrics weir uses, with random
/// (often invalid) contents: the translation never panics and every data
/// point is accounted for.
#[test]
fn random_requests_never_panic_and_every_point_is_counted() {
    let (ingest, store) = ingest();
    let mut rng = Rng(0xdead_beef_0bad_f00d);
    let names = [
        "cluster.upstream_rq_xx",
        "cluster.upstream_rq_time",
        "http.server.request.duration",
        "other",
    ];
    let floats = [
        0.0,
        -1.0,
        0.5,
        1.0,
        2.0,
        1e300,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::MIN_POSITIVE,
    ];
    let counts = [0, 1, 2, 100, u64::MAX / 2, u64::MAX];
    let mut total_points = 0u64;
    for _ in 0..2_000 {
        let attributes = |rng: &mut Rng| {
            let mut out = Vec::new();
            for _ in 0..rng.below(4) {
                let key = *rng.pick(&[
                    "envoy.cluster_name",
                    "envoy.response_code_class",
                    "weir.cluster",
                    "http.response.status_code",
                    "error.type",
                    "service.name",
                ]);
                let value = match rng.below(4) {
                    0 => any_value::Value::StringValue(
                        rng.pick(&["", "c", "5", "2", "x"]).to_string(),
                    ),
                    1 => any_value::Value::IntValue(*rng.pick(&[i64::MIN, -1, 0, 2, 5, 500, 503])),
                    2 => any_value::Value::DoubleValue(*rng.pick(&floats)),
                    _ => any_value::Value::BoolValue(true),
                };
                out.push(kv(key, value));
            }
            out
        };
        let mut metrics = Vec::new();
        for _ in 0..rng.below(5) {
            let name = *rng.pick(&names);
            let unit = *rng.pick(&["", "s", "ms", "By", "us"]);
            let temporality = rng.below(4) as i32;
            let n = rng.below(4) as usize;
            total_points += n as u64;
            let data = match rng.below(5) {
                0 => Data::Sum(Sum {
                    data_points: (0..n)
                        .map(|_| NumberDataPoint {
                            attributes: attributes(&mut rng),
                            flags: rng.below(3) as u32,
                            value: match rng.below(3) {
                                0 => None,
                                1 => Some(number_data_point::Value::AsInt(*rng.pick(&[
                                    i64::MIN,
                                    -5,
                                    0,
                                    7,
                                    i64::MAX,
                                ]))),
                                _ => Some(number_data_point::Value::AsDouble(*rng.pick(&floats))),
                            },
                            ..NumberDataPoint::default()
                        })
                        .collect(),
                    aggregation_temporality: temporality,
                    is_monotonic: true,
                }),
                1 => Data::Histogram(Histogram {
                    data_points: (0..n)
                        .map(|_| {
                            let bounds: Vec<f64> =
                                (0..rng.below(6)).map(|_| *rng.pick(&floats)).collect();
                            let buckets: Vec<u64> =
                                (0..rng.below(8)).map(|_| *rng.pick(&counts)).collect();
                            let count = if rng.below(2) == 0 {
                                buckets.iter().fold(0u64, |a, &b| a.wrapping_add(b))
                            } else {
                                *rng.pick(&counts)
                            };
                            HistogramDataPoint {
                                attributes: attributes(&mut rng),
                                count,
                                explicit_bounds: bounds,
                                bucket_counts: buckets,
                                flags: rng.below(3) as u32,
                                ..HistogramDataPoint::default()
                            }
                        })
                        .collect(),
                    aggregation_temporality: temporality,
                }),
                2 => Data::ExponentialHistogram(ExponentialHistogram {
                    data_points: (0..n)
                        .map(|_| {
                            let len = *rng.pick(&[0usize, 1, 3, 700, 3_000]);
                            let buckets: Vec<u64> = (0..len).map(|_| *rng.pick(&counts)).collect();
                            let zero = *rng.pick(&counts);
                            let count = if rng.below(2) == 0 {
                                buckets.iter().fold(zero, |a, &b| a.wrapping_add(b))
                            } else {
                                *rng.pick(&counts)
                            };
                            ExponentialHistogramDataPoint {
                                attributes: attributes(&mut rng),
                                count,
                                scale: *rng.pick(&[-12, -10, -1, 0, 3, 20, 21, i32::MIN, i32::MAX]),
                                zero_count: zero,
                                positive: Some(Buckets {
                                    offset: *rng.pick(&[i32::MIN, -1000, -30, 0, 5, i32::MAX]),
                                    bucket_counts: buckets,
                                }),
                                negative: (rng.below(4) == 0).then(|| Buckets {
                                    offset: 0,
                                    bucket_counts: vec![rng.below(2)],
                                }),
                                flags: rng.below(3) as u32,
                                ..ExponentialHistogramDataPoint::default()
                            }
                        })
                        .collect(),
                    aggregation_temporality: temporality,
                }),
                3 => Data::Gauge(Gauge {
                    data_points: vec![NumberDataPoint::default(); n],
                }),
                _ => Data::Summary(Summary {
                    data_points: vec![SummaryDataPoint::default(); n],
                }),
            };
            metrics.push(metric(name, unit, data));
        }
        let resource = attributes(&mut rng);
        let outcome = ingest.ingest(&request(resource, metrics));
        assert_eq!(
            outcome.accepted() + outcome.rejected,
            outcome.used + outcome.ignored + outcome.rejected
        );
        for cluster in &outcome.clusters {
            let w = store.lock().unwrap().window(cluster, NOW, 1);
            assert!(w.errors <= w.requests, "{cluster}: {w:?}");
            assert!(w.requests <= otlp::MAX_COUNT && w.latency.count() <= otlp::MAX_COUNT);
        }
    }
    let status = ingest.status();
    let accepted = status["data_points"]["accepted"].as_u64().unwrap();
    let rejected = status["data_points"]["rejected"].as_u64().unwrap();
    assert_eq!(accepted + rejected, total_points);
    assert!(rejected > 0 && accepted > 0);
}

#[tokio::test]
async fn application_points_count_in_their_device_segments_over_http() {
    let (ingest, store) = ingest();
    let text = include_str!("../../examples/policies/iot-fleet.yaml").replace(
        "            min_samples: 200\n",
        "            min_samples: 200\n            segments: { by: [device_type] }\n",
    );
    let policy = weir::policy_source::parse(std::path::Path::new("p.yaml"), &text).unwrap();
    {
        let mut store = store.lock().unwrap();
        store.know_clusters(policy.clusters.iter().map(|c| c.name.clone()));
        store.plan_segments(&policy);
    }
    let url = http_server(&ingest).await;
    // The semantic conventions' captured request header: an array of strings.
    let body = r#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"ingest-eu-canary"}}]},
      "scopeMetrics":[{"metrics":[{"name":"http.server.request.duration","unit":"s",
        "histogram":{"aggregationTemporality":1,"dataPoints":[
          {"attributes":[{"key":"http.response.status_code","value":{"intValue":"503"}},
                         {"key":"http.request.header.x-device-type","value":{"arrayValue":{"values":[{"stringValue":"camera"}]}}}],
           "count":"6","explicitBounds":[0.01,0.1],"bucketCounts":["6","0","0"]},
          {"attributes":[{"key":"http.response.status_code","value":{"intValue":"200"}}],
           "count":"4","explicitBounds":[0.01,0.1],"bucketCounts":["4","0","0"]}]}}]}]}]}"#;
    let (status, response) = post(&url, "application/json", body.into()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&response));
    let windows = store
        .lock()
        .unwrap()
        .segment_windows("ingest-eu-canary", NOW, 10_000);
    let camera = windows.iter().find(|w| w.value == "camera").unwrap();
    assert_eq!((camera.canary.requests, camera.canary.errors), (6, 6));
    let none = windows
        .iter()
        .find(|w| w.value == weir_policy::segments::MISSING)
        .unwrap();
    assert_eq!((none.canary.requests, none.canary.errors), (4, 0));
    // The cluster's own totals are unchanged by it.
    assert_eq!(window(&store, "ingest-eu-canary").requests, 10);
}
