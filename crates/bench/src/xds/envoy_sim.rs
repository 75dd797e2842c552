//! The simulated Envoy sidecars of `isthmus bench xds`: each speaks ADS (State-of-the-
//! World or Delta) on HTTP/2 directly, subscribes as Envoy does, ACKs every response and
//! reports what it received to the bench.

use super::*;

/// A length-delimited field's key and length.
fn put_field_header(tag: u32, len: usize, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// A string field, omitted when empty (proto3).
fn put_str(tag: u32, s: &str, buf: &mut Vec<u8>) {
    if !s.is_empty() {
        put_field_header(tag, s.len(), buf);
        buf.extend_from_slice(s.as_bytes());
    }
}

/// What a simulated proxy tells the bench.
pub(super) enum Event {
    Configured {
        proxy: usize,
        elapsed: Duration,
        /// Clusters, endpoint assignments, listeners, routes held.
        counts: [usize; 4],
        bytes: usize,
    },
    Failed {
        proxy: usize,
        reason: String,
    },
    /// A response, ACKed at `at`.
    Response {
        proxy: usize,
        type_index: usize,
        resources: usize,
        removed: usize,
        /// Whether it carries the changing endpoint's assignment.
        target: bool,
        at: Instant,
    },
}

fn type_index(t: &str) -> usize {
    TYPES.iter().position(|x| *x == t).unwrap_or(TYPES.len())
}

/// What the simulated proxies read of responses: prost messages with just the fields
/// they use, resource bodies as slices of the received message. Decoding Envoy's full
/// types would leave every proxy's initial config (1.6 MB of small allocations each)
/// as garbage that the allocator gives back to the kernel for seconds afterwards, on
/// the cores the control plane is measured on.
mod lean {
    use prost::bytes::Bytes;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(bytes = "bytes", tag = "2")]
        pub value: Bytes,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DiscoveryResponse {
        #[prost(string, tag = "1")]
        pub version_info: String,
        #[prost(message, repeated, tag = "2")]
        pub resources: Vec<Any>,
        #[prost(string, tag = "4")]
        pub type_url: String,
        #[prost(string, tag = "5")]
        pub nonce: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, optional, tag = "2")]
        pub resource: Option<Any>,
        #[prost(string, tag = "3")]
        pub name: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DeltaDiscoveryResponse {
        #[prost(message, repeated, tag = "2")]
        pub resources: Vec<Resource>,
        #[prost(string, tag = "4")]
        pub type_url: String,
        #[prost(string, tag = "5")]
        pub nonce: String,
        #[prost(string, repeated, tag = "6")]
        pub removed_resources: Vec<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EdsClusterConfig {
        #[prost(string, tag = "2")]
        pub service_name: String,
    }

    /// `envoy.config.cluster.v3.Cluster`: name, type (the discovery type), EDS config.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Cluster {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(int32, tag = "2")]
        pub r#type: i32,
        #[prost(message, optional, tag = "3")]
        pub eds_cluster_config: Option<EdsClusterConfig>,
    }

    /// `ClusterLoadAssignment` and `RouteConfiguration` alike: the name is field 1.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Named {
        #[prost(string, tag = "1")]
        pub name: String,
    }
}

/// The EDS name of a cluster, if it is an EDS cluster.
fn eds_name(any: &lean::Any) -> Option<(String, Option<String>)> {
    let c = lean::Cluster::decode(any.value.clone()).ok()?;
    let eds = c.r#type == DiscoveryType::Eds as i32;
    let service = c
        .eds_cluster_config
        .map(|e| e.service_name)
        .filter(|s| !s.is_empty());
    Some((c.name.clone(), eds.then(|| service.unwrap_or(c.name))))
}

/// The RDS names of a listener's HTTP connection managers.
fn rds_names(any: &lean::Any) -> Option<(String, Vec<String>)> {
    let l = Listener::decode(any.value.clone()).ok()?;
    let mut out = Vec::new();
    for chain in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
        for f in &chain.filters {
            if let Some(ConfigType::TypedConfig(a)) = &f.config_type
                && a.type_url.ends_with("HttpConnectionManager")
                && let Ok(hcm) = HttpConnectionManager::decode(a.value.as_slice())
                && let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier
            {
                out.push(rds.route_config_name);
            }
        }
    }
    Some((l.name, out))
}

/// The name (field 1) of a load assignment or route configuration.
fn name_of(any: &lean::Any) -> String {
    lean::Named::decode(any.value.clone())
        .map(|n| n.name)
        .unwrap_or_default()
}

/// What a simulated proxy holds.
pub(super) struct Sim {
    i: usize,
    started: Instant,
    target: Arc<str>,
    events: mpsc::UnboundedSender<Event>,
    /// Cluster → its EDS name (EDS clusters).
    clusters: BTreeMap<String, Option<String>>,
    /// Listener → the route configurations it names.
    listeners: BTreeMap<String, Vec<String>>,
    endpoints: BTreeSet<String>,
    routes: BTreeSet<String>,
    got: [bool; 4],
    bytes: usize,
    configured: bool,
}

impl Sim {
    pub(super) fn new(i: usize, target: Arc<str>, events: mpsc::UnboundedSender<Event>) -> Self {
        Self {
            i,
            started: Instant::now(),
            target,
            events,
            clusters: BTreeMap::new(),
            listeners: BTreeMap::new(),
            endpoints: BTreeSet::new(),
            routes: BTreeSet::new(),
            got: [false; 4],
            bytes: 0,
            configured: false,
        }
    }

    fn eds_wanted(&self) -> BTreeSet<String> {
        self.clusters.values().flatten().cloned().collect()
    }

    fn rds_wanted(&self) -> BTreeSet<String> {
        self.listeners.values().flatten().cloned().collect()
    }

    fn fail(&self, reason: impl Into<String>) {
        let _ = self.events.send(Event::Failed {
            proxy: self.i,
            reason: reason.into(),
        });
    }

    fn responded(&mut self, type_url: &str, resources: usize, removed: usize, target: bool) {
        let t = type_index(type_url);
        if t < 4 {
            self.got[t] = true;
        }
        let _ = self.events.send(Event::Response {
            proxy: self.i,
            type_index: t,
            resources,
            removed,
            target,
            at: Instant::now(),
        });
        if !self.configured
            && self.got[0]
            && self.got[2]
            && self.eds_wanted().is_subset(&self.endpoints)
            && self.rds_wanted().is_subset(&self.routes)
        {
            self.configured = true;
            let _ = self.events.send(Event::Configured {
                proxy: self.i,
                elapsed: self.started.elapsed(),
                counts: [
                    self.clusters.len(),
                    self.endpoints.len(),
                    self.listeners.len(),
                    self.routes.len(),
                ],
                bytes: self.bytes,
            });
        }
    }
}

const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// A simulated proxy's ADS stream: gRPC framing on an HTTP/2 stream of its own
/// connection, without a gRPC library in between. Requests go out as the bytes the
/// proxy encoded, in parts (a SotW ACK's long, unchanging list of names is shared, not
/// copied: Envoy's own serialization is cheap next to this process's, which stands in
/// for a thousand of them on the control plane's cores); responses are decoded with
/// prost.
struct AdsStream {
    send: h2::SendStream<Bytes>,
    recv: h2::RecvStream,
    buf: BytesMut,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for AdsStream {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

fn grpc_error(headers: &http::HeaderMap) -> Option<String> {
    let status = headers.get("grpc-status")?.to_str().ok()?;
    (status != "0").then(|| {
        let message = headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .unwrap_or_default();
        format!("grpc-status {status}: {message}")
    })
}

/// Writes one gRPC message made of `parts` (the first carries the length prefix).
fn send_message(send: &mut h2::SendStream<Bytes>, parts: &[Bytes]) -> Result<(), String> {
    let len: usize = parts.iter().map(Bytes::len).sum();
    let mut head = BytesMut::with_capacity(5 + parts.first().map_or(0, Bytes::len));
    head.put_u8(0);
    head.put_u32(u32::try_from(len).map_err(|_| "request too large".to_string())?);
    let mut rest = parts.iter();
    if let Some(p) = rest.next() {
        head.extend_from_slice(p);
    }
    let closed = |e: h2::Error| format!("request stream closed: {e}");
    send.send_data(head.freeze(), false).map_err(closed)?;
    for p in rest {
        send.send_data(p.clone(), false).map_err(closed)?;
    }
    Ok(())
}

impl AdsStream {
    /// Connects and opens an ADS stream; `first` are the requests sent before the
    /// server's response headers are awaited.
    async fn open(addr: SocketAddr, path: &str, first: &[&[Bytes]]) -> Result<Self, String> {
        let connect = async {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let _ = tcp.set_nodelay(true);
            // Frames go out in one write per burst, as Envoy writes them (its codec
            // fills one buffer per event-loop turn): a SotW ACK's 45 KB of names in
            // four frames is one write, not four.
            let tcp = tokio::io::BufWriter::with_capacity(64 << 10, tcp);
            // The receive windows of a gRPC client (hyper's defaults).
            let (client, connection) = h2::client::Builder::new()
                .initial_window_size(2 << 20)
                .initial_connection_window_size(5 << 20)
                .handshake::<_, Bytes>(tcp)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let connection = tokio::spawn(async move {
                let _ = connection.await;
            });
            let mut client = client.ready().await.map_err(|e| format!("connect: {e}"))?;
            let request = http::Request::post(format!("http://{addr}{path}"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .map_err(|e| e.to_string())?;
            let (response, mut send) = client
                .send_request(request, false)
                .map_err(|e| format!("stream: {e}"))?;
            for parts in first {
                send_message(&mut send, parts)?;
            }
            let response = response.await.map_err(|e| format!("stream: {e}"))?;
            if let Some(e) = grpc_error(response.headers()) {
                return Err(format!("stream: {e}"));
            }
            Ok(AdsStream {
                send,
                recv: response.into_body(),
                buf: BytesMut::new(),
                connection,
            })
        };
        tokio::time::timeout(Duration::from_secs(20), connect)
            .await
            .map_err(|_| "connect timed out (20 s)".to_string())?
    }

    /// Sends one request message made of `parts`.
    fn send(&mut self, parts: &[Bytes]) -> Result<(), String> {
        send_message(&mut self.send, parts)
    }

    /// The next response; `Err` with the reason when the stream ends.
    async fn message<T: Message + Default>(&mut self) -> Result<T, String> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if self.buf.len() >= 5 + len {
                    self.buf.advance(5);
                    let msg = self.buf.split_to(len);
                    return T::decode(msg).map_err(|e| format!("cannot decode a response: {e}"));
                }
                self.buf.reserve(5 + len - self.buf.len());
            }
            match self.recv.data().await {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.buf.extend_from_slice(&data);
                }
                Some(Err(e)) => return Err(format!("stream: {e}")),
                None => {
                    let trailers = self.recv.trailers().await.ok().flatten();
                    let why = trailers.as_ref().and_then(grpc_error).unwrap_or_default();
                    return Err(format!("stream closed by the server {why}")
                        .trim()
                        .to_string());
                }
            }
        }
    }
}

/// `resource_names` (field 3 of `DiscoveryRequest`), encoded.
fn encode_names(names: &[String]) -> Bytes {
    let mut b = Vec::new();
    for n in names {
        put_field_header(3, n.len(), &mut b);
        b.extend_from_slice(n.as_bytes());
    }
    Bytes::from(b)
}

/// A `DiscoveryRequest` without its names (sent after it, as their own part).
fn sotw_request(type_url: &str, version: &str, nonce: &str, node: Option<&Node>) -> Bytes {
    let mut b = Vec::with_capacity(type_url.len() + 64);
    put_str(1, version, &mut b);
    if let Some(node) = node {
        b.push((2 << 3) | 2);
        let _ = node.encode_length_delimited(&mut b);
    }
    put_str(4, type_url, &mut b);
    put_str(5, nonce, &mut b);
    Bytes::from(b)
}

pub(super) async fn sotw_proxy(addr: SocketAddr, node: Node, mut sim: Sim) {
    let req = |t: &str, v: &str, n: &str| sotw_request(t, v, n, None);
    let first = [
        sotw_request(CLUSTER, "", "", Some(&node)),
        req(LISTENER, "", ""),
    ];
    let mut stream = match AdsStream::open(addr, SOTW_PATH, &[&first[..1], &first[1..]]).await {
        Ok(s) => s,
        Err(e) => return sim.fail(e),
    };
    // Per type: the last accepted version and nonce.
    let mut last: HashMap<String, (String, String)> = HashMap::new();
    // What every endpoint and route request names (Envoy repeats it in each ACK), and
    // those names encoded.
    let (mut eds, mut rds): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    let (mut eds_wire, mut rds_wire) = (Bytes::new(), Bytes::new());
    loop {
        let resp: lean::DiscoveryResponse = match stream.message().await {
            Ok(r) => r,
            Err(e) => return sim.fail(e),
        };
        sim.bytes += resp.resources.iter().map(|a| a.value.len()).sum::<usize>();
        let mut target = false;
        let t = resp.type_url.as_str();
        let mut sent = Ok(());
        let names = match t {
            CLUSTER => {
                sim.clusters = resp.resources.iter().filter_map(eds_name).collect();
                let wanted: Vec<String> = sim.eds_wanted().into_iter().collect();
                if wanted != eds {
                    eds = wanted;
                    eds_wire = encode_names(&eds);
                    let (v, n) = last.get(ENDPOINT).cloned().unwrap_or_default();
                    sent = stream.send(&[req(ENDPOINT, &v, &n), eds_wire.clone()]);
                }
                Bytes::new()
            }
            LISTENER => {
                sim.listeners = resp.resources.iter().filter_map(rds_names).collect();
                let wanted: Vec<String> = sim.rds_wanted().into_iter().collect();
                if wanted != rds {
                    rds = wanted;
                    rds_wire = encode_names(&rds);
                    let (v, n) = last.get(ROUTE).cloned().unwrap_or_default();
                    sent = stream.send(&[req(ROUTE, &v, &n), rds_wire.clone()]);
                }
                Bytes::new()
            }
            ENDPOINT => {
                for a in &resp.resources {
                    let n = name_of(a);
                    target |= *n == *sim.target;
                    sim.endpoints.insert(n);
                }
                eds_wire.clone()
            }
            ROUTE => {
                for a in &resp.resources {
                    sim.routes.insert(name_of(a));
                }
                rds_wire.clone()
            }
            _ => Bytes::new(),
        };
        last.insert(
            resp.type_url.clone(),
            (resp.version_info.clone(), resp.nonce.clone()),
        );
        let ack = req(t, &resp.version_info, &resp.nonce);
        if let Err(e) = sent.and_then(|()| stream.send(&[ack, names])) {
            return sim.fail(e);
        }
        sim.responded(t, resp.resources.len(), 0, target);
    }
}

pub(super) async fn delta_proxy(addr: SocketAddr, node: Node, mut sim: Sim) {
    let request = |t: &str, sub: Vec<String>, unsub: Vec<String>, n: &str| DeltaDiscoveryRequest {
        type_url: t.into(),
        resource_names_subscribe: sub,
        resource_names_unsubscribe: unsub,
        response_nonce: n.into(),
        ..Default::default()
    };
    let req = |t: &str, sub: Vec<String>, unsub: Vec<String>, n: &str| {
        Bytes::from(request(t, sub, unsub, n).encode_to_vec())
    };
    let mut first = request(CLUSTER, vec![], vec![], "");
    first.node = Some(node);
    let first = [
        Bytes::from(first.encode_to_vec()),
        req(LISTENER, vec![], vec![], ""),
    ];
    let mut stream = match AdsStream::open(addr, DELTA_PATH, &[&first[..1], &first[1..]]).await {
        Ok(s) => s,
        Err(e) => return sim.fail(e),
    };
    let diff = |before: &BTreeSet<String>, after: &BTreeSet<String>| {
        (
            after.difference(before).cloned().collect::<Vec<_>>(),
            before.difference(after).cloned().collect::<Vec<_>>(),
        )
    };
    loop {
        let resp: lean::DeltaDiscoveryResponse = match stream.message().await {
            Ok(r) => r,
            Err(e) => return sim.fail(e),
        };
        sim.bytes += resp
            .resources
            .iter()
            .filter_map(|r| r.resource.as_ref())
            .map(|a| a.value.len())
            .sum::<usize>();
        let t = resp.type_url.as_str();
        let mut target = false;
        let mut sent = Ok(());
        match t {
            CLUSTER => {
                let before = sim.eds_wanted();
                for n in &resp.removed_resources {
                    sim.clusters.remove(n);
                }
                for r in &resp.resources {
                    if let Some((name, eds)) = r.resource.as_ref().and_then(eds_name) {
                        sim.clusters.insert(name, eds);
                    }
                }
                let (sub, unsub) = diff(&before, &sim.eds_wanted());
                if !sub.is_empty() || !unsub.is_empty() {
                    sent = stream.send(&[req(ENDPOINT, sub, unsub, "")]);
                }
            }
            LISTENER => {
                let before = sim.rds_wanted();
                for n in &resp.removed_resources {
                    sim.listeners.remove(n);
                }
                for r in &resp.resources {
                    if let Some((name, rds)) = r.resource.as_ref().and_then(rds_names) {
                        sim.listeners.insert(name, rds);
                    }
                }
                let (sub, unsub) = diff(&before, &sim.rds_wanted());
                if !sub.is_empty() || !unsub.is_empty() {
                    sent = stream.send(&[req(ROUTE, sub, unsub, "")]);
                }
            }
            ENDPOINT => {
                for r in &resp.resources {
                    target |= *r.name == *sim.target;
                    sim.endpoints.insert(r.name.clone());
                }
                for n in &resp.removed_resources {
                    sim.endpoints.remove(n);
                }
            }
            ROUTE => {
                for r in &resp.resources {
                    sim.routes.insert(r.name.clone());
                }
                for n in &resp.removed_resources {
                    sim.routes.remove(n);
                }
            }
            _ => {}
        }
        if let Err(e) = sent.and_then(|()| stream.send(&[req(t, vec![], vec![], &resp.nonce)])) {
            return sim.fail(e);
        }
        sim.responded(
            t,
            resp.resources.len(),
            resp.removed_resources.len(),
            target,
        );
    }
}
