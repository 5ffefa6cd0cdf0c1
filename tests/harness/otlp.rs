//! An OTLP trace receiver inside the test, over gRPC or HTTP/protobuf: it decodes what
//! floe exports and keeps every span with its service name.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
pub use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// A span as received, with the `service.name` of the resource that sent it.
#[derive(Debug, Clone)]
pub struct Received {
    pub service: String,
    pub span: Span,
}

impl Received {
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    pub fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }

    /// An attribute's value as text (numbers and booleans written out).
    pub fn attr(&self, key: &str) -> Option<String> {
        text_of(&self.span.attributes, key)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text_of(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    Some(match value.value.as_ref()? {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        Value::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    })
}

type Store = Arc<Mutex<Vec<Received>>>;

fn keep(store: &Store, request: ExportTraceServiceRequest) {
    let mut spans = store.lock().expect("span store");
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .as_ref()
            .and_then(|r| text_of(&r.attributes, "service.name"))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                spans.push(Received {
                    service: service.clone(),
                    span,
                });
            }
        }
    }
}

pub struct Receiver {
    /// What to give floe as its OTLP endpoint.
    pub endpoint: String,
    spans: Store,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Receiver {
    /// An OTLP/gRPC receiver (`TraceService/Export`) on a free port.
    pub fn grpc() -> Receiver {
        Self::start(|listener, store| async move {
            let incoming = tokio_stream_of(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(Grpc(store)))
                .serve_with_incoming(incoming)
                .await;
        })
    }

    /// An OTLP/HTTP receiver (`POST /v1/traces`, protobuf) on a free port.
    pub fn http() -> Receiver {
        Self::start(|listener, store| async move {
            let app = axum::Router::new()
                .route("/v1/traces", axum::routing::post(http_export))
                .with_state(store);
            let _ = axum::serve(listener, app).await;
        })
    }

    fn start<F, Fut>(serve: F) -> Receiver
    where
        F: FnOnce(tokio::net::TcpListener, Store) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("receiver runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the receiver");
        let addr: SocketAddr = listener.local_addr().expect("receiver address");
        let spans = Store::default();
        runtime.spawn(serve(listener, spans.clone()));
        Receiver {
            endpoint: format!("http://{addr}"),
            spans,
            runtime: Some(runtime),
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Received> {
        self.spans.lock().expect("span store").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn tokio_stream_of(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::wrappers::TcpListenerStream::new(listener)
}

struct Grpc(Store);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        keep(&self.0, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn http_export(
    axum::extract::State(store): axum::extract::State<Store>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            keep(&store, request);
            let response = ExportTraceServiceResponse::default().encode_to_vec();
            (
                [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                response,
            )
                .into_response()
        }
        Err(e) => (axum::http::StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}
