//! OTLP/HTTP: `POST /v1/metrics`, binary protobuf or JSON, optionally gzip.

use std::io::Read as _;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt as _;
use prost::Message as _;

use super::{ExportOutcome, Ingest, MAX_REQUEST_BYTES, Refusal, Transport};

/// Where OTLP/HTTP metrics are posted.
pub const METRICS_PATH: &str = "/v1/metrics";

pub(crate) fn router(ingest: Ingest) -> Router {
    Router::new()
        .route(METRICS_PATH, post(export))
        .with_state(ingest)
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Protobuf,
    Json,
}

impl Format {
    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        })
    }
}

/// `google.rpc.Status`, the body of OTLP/HTTP error responses.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

async fn export(State(ingest): State<Ingest>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let transport = if parts.headers.contains_key(crate::replication::FORWARDED) {
        Transport::Replica
    } else {
        Transport::Http
    };
    ingest.count_request(transport);
    let format = match media_type(&parts.headers).as_deref() {
        Some("application/x-protobuf" | "application/protobuf") => Format::Protobuf,
        Some("application/json") => Format::Json,
        other => {
            let message = format!(
                "Content-Type {:?} is not application/x-protobuf or application/json",
                other.unwrap_or("")
            );
            return refuse(&ingest, Refusal::Unsupported, Format::Protobuf, message);
        }
    };
    let gzip = match header_text(&parts.headers, header::CONTENT_ENCODING).as_deref() {
        None | Some("identity") => false,
        Some("gzip") => true,
        Some(other) => {
            let message = format!("Content-Encoding {other:?} is not gzip or identity");
            return refuse(&ingest, Refusal::Unsupported, format, message);
        }
    };
    let too_large = || format!("the request is larger than {MAX_REQUEST_BYTES} bytes");
    let declared =
        header_text(&parts.headers, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BYTES as u64) {
        return refuse(&ingest, Refusal::TooLarge, format, too_large());
    }
    let expected = declared.map_or(0, |n| n as usize);
    let bytes = match read_limited(body, expected, MAX_REQUEST_BYTES).await {
        Ok(bytes) => bytes,
        Err(None) => return refuse(&ingest, Refusal::TooLarge, format, too_large()),
        Err(Some(err)) => {
            let message = format!("the request body could not be read: {err}");
            return refuse(&ingest, Refusal::Malformed, format, message);
        }
    };
    let bytes = if gzip {
        match gunzip(&bytes, MAX_REQUEST_BYTES) {
            Ok(bytes) => bytes,
            Err(None) => return refuse(&ingest, Refusal::TooLarge, format, too_large()),
            Err(Some(err)) => {
                let message = format!("the request body is not gzip: {err}");
                return refuse(&ingest, Refusal::Malformed, format, message);
            }
        }
    } else {
        bytes
    };
    let decoded = match format {
        Format::Protobuf => super::decode_protobuf(&bytes).map_err(|e| e.to_string()),
        Format::Json => super::decode_json(&bytes).map_err(|e| e.to_string()),
    };
    match decoded {
        Ok(request) => {
            let outcome = ingest.export(&request, transport);
            respond(StatusCode::OK, format, encode_outcome(&outcome, format))
        }
        Err(err) => {
            let message = format!("the request does not decode: {err}");
            refuse(&ingest, Refusal::Malformed, format, message)
        }
    }
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
}

/// The media type without its parameters, lowercased.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = header_text(headers, header::CONTENT_TYPE)?;
    Some(value.split(';').next().unwrap_or("").trim().to_owned())
}

/// The body, or `Err(None)` once it passes `limit` bytes; `expected`: its
/// declared length (0 if unknown), room made for at once.
async fn read_limited(
    body: Body,
    expected: usize,
    limit: usize,
) -> Result<Vec<u8>, Option<axum::Error>> {
    let mut stream = body.into_data_stream();
    let mut out = Vec::with_capacity(expected.min(limit));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(Some)?;
        if out.len() + chunk.len() > limit {
            return Err(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Decompresses, or `Err(None)` if the result would pass `limit` bytes.
fn gunzip(bytes: &[u8], limit: usize) -> Result<Vec<u8>, Option<std::io::Error>> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(Some)?;
    if out.len() > limit {
        return Err(None);
    }
    Ok(out)
}

fn encode_outcome(outcome: &ExportOutcome, format: Format) -> Vec<u8> {
    let response = outcome.response();
    match format {
        Format::Protobuf => response.encode_to_vec(),
        Format::Json => {
            // Proto3 JSON: int64 as a string, empty messages left out.
            let body = match &response.partial_success {
                None => serde_json::json!({}),
                Some(partial) => serde_json::json!({"partialSuccess": {
                    "rejectedDataPoints": partial.rejected_data_points.to_string(),
                    "errorMessage": partial.error_message,
                }}),
            };
            body.to_string().into_bytes()
        }
    }
}

fn refuse(ingest: &Ingest, why: Refusal, format: Format, message: String) -> Response {
    ingest.refused(why, Transport::Http, &message);
    let (status, code) = match why {
        Refusal::Malformed => (StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument),
        Refusal::TooLarge => (
            StatusCode::PAYLOAD_TOO_LARGE,
            tonic::Code::ResourceExhausted,
        ),
        Refusal::Unsupported => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            tonic::Code::InvalidArgument,
        ),
    };
    let body = match format {
        Format::Protobuf => RpcStatus {
            code: code as i32,
            message,
        }
        .encode_to_vec(),
        Format::Json => serde_json::json!({"code": code as i32, "message": message})
            .to_string()
            .into_bytes(),
    };
    respond(status, format, body)
}

fn respond(status: StatusCode, format: Format, body: Vec<u8>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, format.content_type())],
        body,
    )
        .into_response()
}
