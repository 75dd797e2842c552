//! gRPC, by hand: the Aggregated Discovery Service's two methods, requests read from
//! the request body, and responses written to the response body.
//!
//! tonic's generated server encodes responses through a buffer per stream that keeps
//! the capacity of the largest response it ever held (a full CDS response is about a
//! megabyte): at 1,000 proxies that alone is a gigabyte. Here the resources a response
//! carries are encoded once for every connection that sends the same ones at the same
//! time (`Changes`: a whole mesh connecting gets each view's clusters encoded once,
//! not once per proxy), each connection adds only its own version and nonce around
//! them, and the buffers are freed once written; requests are read into a buffer
//! released after each message.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::Frame;
use prost::bytes::{Buf, Bytes, BytesMut};
use tokio::sync::mpsc;
use tonic::Status;
use tonic::codegen::http;

use super::Inner;
use super::connection::{Conn, Protocol, Stream, drive};
use super::delta::DeltaType;
use super::sotw::SotwType;
use super::wire::{MAX_REQUEST, WireMessage};

const SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";
/// Responses queued per stream before a push waits for the proxy to read.
const QUEUED_RESPONSES: usize = 16;

/// Encoded responses (each a gRPC frame in one or more parts) for one stream, or the
/// status that ends it.
pub(super) type Responses = mpsc::Sender<Result<Vec<Bytes>, Status>>;

/// The Aggregated Discovery Service, to mount on a tonic server
/// (`Server::builder().add_service(server.service())`).
#[derive(Clone)]
pub struct AdsService {
    inner: Arc<Inner>,
}

impl tonic::server::NamedService for AdsService {
    const NAME: &'static str = SERVICE;
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for AdsService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let response = match req.uri().path() {
            SOTW_PATH => self.open::<SotwType>(req),
            DELTA_PATH => self.open::<DeltaType>(req),
            other => {
                Status::unimplemented(format!("{other} is not a method of {SERVICE}")).into_http()
            }
        };
        std::future::ready(Ok(response))
    }
}

impl AdsService {
    pub(super) fn new(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    /// Starts a stream: its task reads requests and pushes, and writes responses.
    fn open<P: Protocol>(
        &self,
        req: http::Request<tonic::body::Body>,
    ) -> http::Response<tonic::body::Body> {
        if let Some(enc) = req.headers().get("grpc-encoding")
            && enc != "identity"
        {
            return Status::unimplemented(format!(
                "compressed requests ({enc:?}) are not supported; send them uncompressed"
            ))
            .into_http();
        }
        self.inner.start_pushing();
        let (tx, rx) = mpsc::channel(QUEUED_RESPONSES);
        let p = Stream::<P>::new(Conn::new(&self.inner, tx));
        tokio::spawn(drive(p, Requests::new(req.into_body())));
        let mut response = http::Response::new(tonic::body::Body::new(ResponseBody {
            rx,
            parts: Vec::new().into_iter(),
            done: false,
        }));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        response
    }
}

/// gRPC messages from a request body.
pub(super) struct Requests<T: WireMessage> {
    body: tonic::body::Body,
    buf: BytesMut,
    /// What earlier requests of the stream tell about the next ones.
    seen: T::Seen,
    _t: PhantomData<fn() -> T>,
}

impl<T: WireMessage> Requests<T> {
    pub(super) fn new(body: tonic::body::Body) -> Self {
        Self {
            body,
            buf: BytesMut::new(),
            seen: T::Seen::default(),
            _t: PhantomData,
        }
    }

    /// The next message; `None` when the proxy closed its side. Cancel-safe: what was
    /// read stays in the buffer.
    pub(super) async fn message(&mut self) -> Result<Option<T>, Status> {
        loop {
            if self.buf.len() >= 5 {
                if self.buf[0] != 0 {
                    return Err(Status::unimplemented(
                        "compressed requests are not supported; send them uncompressed",
                    ));
                }
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if len > MAX_REQUEST {
                    return Err(Status::resource_exhausted(format!(
                        "a request of {len} bytes; at most {MAX_REQUEST} are accepted"
                    )));
                }
                if self.buf.len() >= 5 + len {
                    self.buf.advance(5);
                    let msg = self.buf.split_to(len).freeze();
                    if self.buf.is_empty() {
                        // Keep no buffer between messages.
                        self.buf = BytesMut::new();
                    }
                    return T::from_wire(msg, &mut self.seen).map(Some).map_err(|e| {
                        Status::invalid_argument(format!("cannot decode the request: {e}"))
                    });
                }
                // Room for the whole message at once.
                self.buf.reserve(5 + len - self.buf.len());
            }
            let frame = std::future::poll_fn(|cx| {
                http_body::Body::poll_frame(Pin::new(&mut self.body), cx)
            })
            .await;
            match frame {
                None if self.buf.is_empty() => return Ok(None),
                None => {
                    return Err(Status::internal(
                        "the request stream ended inside a message",
                    ));
                }
                Some(Err(status)) => return Err(status),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// A stream's response body: the frames its task encoded, then the status as trailers.
struct ResponseBody {
    rx: mpsc::Receiver<Result<Vec<Bytes>, Status>>,
    /// The rest of the response being written.
    parts: std::vec::IntoIter<Bytes>,
    done: bool,
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(part) = self.parts.next() {
            return Poll::Ready(Some(Ok(Frame::data(part))));
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(parts))) => {
                self.parts = parts.into_iter();
                let first = self.parts.next().unwrap_or_default();
                Poll::Ready(Some(Ok(Frame::data(first))))
            }
            Poll::Ready(end) => {
                self.done = true;
                let status = match end {
                    Some(Err(status)) => status,
                    _ => Status::ok(""),
                };
                let mut trailers = http::HeaderMap::new();
                let _ = status.add_header(&mut trailers);
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}
