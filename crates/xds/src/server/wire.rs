//! Protocol buffer encoding, by hand, where it pays: State-of-the-World requests read
//! without copying their names, and the two response messages written straight from
//! the shared resources (no copy of a resource but the one into the frame). Delta
//! requests are decoded by prost.
//!
//! Every length read from a message is checked against what is left of it before
//! anything is allocated or sliced; a message is at most [`MAX_REQUEST`] bytes.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use prost::Message;
use prost::bytes::Bytes;

use super::prepared::{Changes, Wire};
use crate::resources::{Resource, TypeUrl};

/// The largest request accepted.
pub(super) const MAX_REQUEST: usize = 64 << 20;

/// A request message, decoded from its bytes.
pub(super) trait WireMessage: Sized {
    /// What a stream's earlier requests tell about decoding the next.
    type Seen: Default + Send;
    fn from_wire(b: Bytes, seen: &mut Self::Seen) -> Result<Self, String>;
}

impl WireMessage for DeltaDiscoveryRequest {
    type Seen = ();
    fn from_wire(b: Bytes, _: &mut ()) -> Result<Self, String> {
        Message::decode(b).map_err(|e| e.to_string())
    }
}

/// A State-of-the-World request. Envoy repeats every subscribed name in every request
/// (thousands for endpoints, in every ACK): the names stay in the request's bytes,
/// hashed from there, and are copied out only when the subscription changes.
#[derive(Debug)]
pub(super) struct SotwRequest {
    raw: Bytes,
    pub(super) node: Option<Node>,
    pub(super) version_info: String,
    pub(super) type_url: String,
    pub(super) response_nonce: String,
    pub(super) error_detail: Option<envoy_types::pb::google::rpc::Status>,
    /// How many `resource_names` there are, and whether one is `*`.
    pub(super) names_count: usize,
    pub(super) star: bool,
    /// A digest of the names' bytes, when they are one run of fields.
    pub(super) names_digest: Option<u64>,
}

impl SotwRequest {
    /// `resource_names`, read again from the request's bytes (checked when decoded).
    pub(super) fn names(&self) -> impl Iterator<Item = &[u8]> + Clone {
        let b = self.raw.as_ref();
        let mut at = 0;
        std::iter::from_fn(move || {
            while at < b.len() {
                let key = read_varint(b, &mut at).ok()?;
                if key >> 3 == 3 && key & 7 == 2 {
                    let len = read_len(b, &mut at).ok()?;
                    let v = &b[at..at + len];
                    at += len;
                    return Some(v);
                }
                skip_field(b, &mut at, key).ok()?;
            }
            None
        })
    }
}

fn read_varint(b: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at).ok_or("truncated varint")?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

/// A length-delimited field's length, checked against what is left of the message.
fn read_len(b: &[u8], at: &mut usize) -> Result<usize, String> {
    let len = read_varint(b, at)?;
    usize::try_from(len)
        .ok()
        .filter(|len| *len <= b.len() - *at)
        .ok_or_else(|| "truncated field".to_string())
}

/// How deep groups (wire types 3 and 4, which nothing here sends) may nest, as in prost.
const GROUP_DEPTH: usize = 100;

/// Steps over the value of a field whose key was read.
fn skip_field(b: &[u8], at: &mut usize, key: u64) -> Result<(), String> {
    let mut groups: Vec<u64> = Vec::new();
    let mut key = key;
    loop {
        match key & 7 {
            0 => {
                read_varint(b, at)?;
            }
            1 | 5 => {
                let len = if key & 7 == 1 { 8 } else { 4 };
                if b.len() - *at < len {
                    return Err("truncated field".into());
                }
                *at += len;
            }
            2 => {
                let len = read_len(b, at)?;
                *at += len;
            }
            3 if groups.len() < GROUP_DEPTH => groups.push(key >> 3),
            3 => return Err("groups nested too deep".into()),
            4 if groups.pop() == Some(key >> 3) => {}
            4 => return Err("an end of group without its start".into()),
            w => return Err(format!("unexpected wire type {w}")),
        }
        if groups.is_empty() {
            return Ok(());
        }
        key = read_varint(b, at)?;
    }
}

/// A run of resource names a stream sent before: its length in bytes, its digest, how
/// many names it holds and whether one is `*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct NamesRun {
    len: usize,
    digest: u64,
    count: usize,
    star: bool,
}

/// The last runs of names a stream sent, most recent first, one per type at most.
#[derive(Default)]
pub(super) struct SeenRuns(Vec<NamesRun>);

impl SeenRuns {
    /// The earlier run that `b[start..]` begins with, if its bytes are the same: an
    /// ACK repeats the names of the request before it, and its thousands of name
    /// fields need not be walked again.
    fn matching(&self, b: &[u8], start: usize) -> Option<NamesRun> {
        self.0.iter().copied().find(|r| {
            let end = start + r.len;
            // The run must end where another field starts.
            end <= b.len()
                && b.get(end) != Some(&NAME_KEY)
                && xxhash_rust::xxh3::xxh3_64(&b[start..end]) == r.digest
        })
    }

    fn remember(&mut self, run: NamesRun) {
        if let Some(i) = self.0.iter().position(|r| *r == run) {
            self.0.remove(i);
        }
        self.0.insert(0, run);
        self.0.truncate(TypeUrl::COUNT);
    }
}

/// The key of a `resource_names` field (3, length-delimited).
const NAME_KEY: u8 = (3 << 3) | 2;

/// Where the `resource_names` fields of a request are, as they are read.
#[derive(Default)]
struct NamesSpan {
    /// From the first name field's key to the end of the last.
    start: Option<usize>,
    end: usize,
    /// Whether nothing else stands between them.
    one_run: bool,
}

impl NamesSpan {
    fn add(&mut self, field_start: usize, end: usize) {
        match self.start {
            None => {
                self.start = Some(field_start);
                self.one_run = true;
            }
            Some(_) if self.end != field_start => self.one_run = false,
            Some(_) => {}
        }
        self.end = end;
    }
}

/// `DiscoveryRequest`: version_info 1, node 2, resource_names 3, type_url 4,
/// response_nonce 5, error_detail 6 (others skipped). As prost does, the last of a
/// repeated string field counts, and repeated message fields merge.
impl WireMessage for SotwRequest {
    type Seen = SeenRuns;
    fn from_wire(raw: Bytes, seen: &mut SeenRuns) -> Result<Self, String> {
        let mut r = SotwRequest {
            raw: Bytes::new(),
            node: None,
            version_info: String::new(),
            type_url: String::new(),
            response_nonce: String::new(),
            error_detail: None,
            names_count: 0,
            star: false,
            names_digest: None,
        };
        let mut span = NamesSpan::default();
        // The digest of a run known from an earlier request, and where it ends.
        let mut known = None;
        let b = raw.as_ref();
        let string = |s: &[u8]| String::from_utf8(s.to_vec()).map_err(|e| e.to_string());
        let mut at = 0;
        while at < b.len() {
            let field_start = at;
            // The names an earlier request of the stream sent, all at once.
            if span.start.is_none()
                && b[at] == NAME_KEY
                && let Some(run) = seen.matching(b, at)
            {
                r.names_count = run.count;
                r.star = run.star;
                span.add(at, at + run.len);
                known = Some((span.end, run.digest));
                at = span.end;
                continue;
            }
            // The common case first: a resource name shorter than 128 bytes.
            if b[at] == NAME_KEY
                && let Some(&len) = b.get(at + 1)
                && len < 0x80
            {
                let (start, end) = (at + 2, at + 2 + usize::from(len));
                if end > b.len() {
                    return Err("truncated field".into());
                }
                r.names_count += 1;
                r.star |= &b[start..end] == b"*";
                span.add(field_start, end);
                at = end;
                continue;
            }
            let key = read_varint(b, &mut at)?;
            if key & 7 != 2 {
                skip_field(b, &mut at, key)?;
                continue;
            }
            let len = read_len(b, &mut at)?;
            let v = &b[at..at + len];
            at += len;
            match key >> 3 {
                1 => r.version_info = string(v)?,
                2 => merge(&mut r.node, v)?,
                3 => {
                    r.names_count += 1;
                    r.star |= v == b"*";
                    span.add(field_start, at);
                }
                4 => r.type_url = string(v)?,
                5 => r.response_nonce = string(v)?,
                6 => merge(&mut r.error_detail, v)?,
                _ => {}
            }
        }
        r.names_digest = match span.start {
            Some(start) if span.one_run => {
                let digest = match known {
                    Some((end, digest)) if end == span.end => digest,
                    _ => xxhash_rust::xxh3::xxh3_64(&b[start..span.end]),
                };
                seen.remember(NamesRun {
                    len: span.end - start,
                    digest,
                    count: r.names_count,
                    star: r.star,
                });
                Some(digest)
            }
            _ => None,
        };
        r.raw = raw;
        Ok(r)
    }
}

/// An embedded message field: a later occurrence merges into an earlier one.
fn merge<M: Message + Default>(field: &mut Option<M>, v: &[u8]) -> Result<(), String> {
    field
        .get_or_insert_default()
        .merge(v)
        .map_err(|e| e.to_string())
}

fn varint_len(v: usize) -> usize {
    let bits = usize::BITS - (v | 1).leading_zeros();
    bits.div_ceil(7) as usize
}

pub(crate) fn put_varint(v: usize, buf: &mut Vec<u8>) {
    let mut v = v as u64;
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// A length-delimited field's size: key (tags here are below 16), length, content.
fn field_len(len: usize) -> usize {
    1 + varint_len(len) + len
}

pub(crate) fn put_field_header(tag: u8, len: usize, buf: &mut Vec<u8>) {
    buf.push((tag << 3) | 2);
    put_varint(len, buf);
}

/// A string field, omitted when empty (proto3).
fn str_field_len(s: &str) -> usize {
    if s.is_empty() { 0 } else { field_len(s.len()) }
}

pub(crate) fn put_str(tag: u8, s: &str, buf: &mut Vec<u8>) {
    if !s.is_empty() {
        put_field_header(tag, s.len(), buf);
        buf.extend_from_slice(s.as_bytes());
    }
}

/// A `google.protobuf.Any`'s encoded size.
fn any_len(r: &Resource) -> usize {
    str_field_len(&r.any.type_url)
        + if r.any.value.is_empty() {
            0
        } else {
            field_len(r.any.value.len())
        }
}

fn put_any(r: &Resource, buf: &mut Vec<u8>) {
    put_str(1, &r.any.type_url, buf);
    if !r.any.value.is_empty() {
        put_field_header(2, r.any.value.len(), buf);
        buf.extend_from_slice(&r.any.value);
    }
}

/// A delta `Resource`'s encoded size.
fn delta_resource_len(r: &Resource) -> usize {
    str_field_len(&r.name) + str_field_len(&r.version) + field_len(any_len(r))
}

/// The encoded size of a resource as a response carries it.
fn resource_len(kind: Wire, r: &Resource) -> usize {
    match kind {
        Wire::Sotw => any_len(r),
        Wire::Delta => delta_resource_len(r),
    }
}

/// The resources of a response, as its field 2: `Any`s (`DiscoveryResponse`) or
/// `Resource`s (`DeltaDiscoveryResponse`).
pub(super) fn encode_resources(kind: Wire, resources: &[&Resource]) -> Vec<u8> {
    let len: usize = resources
        .iter()
        .map(|r| field_len(resource_len(kind, r)))
        .sum();
    let mut wire = Vec::with_capacity(len);
    for r in resources {
        put_field_header(2, resource_len(kind, r), &mut wire);
        match kind {
            Wire::Sotw => put_any(r, &mut wire),
            Wire::Delta => {
                put_str(1, &r.version, &mut wire);
                put_field_header(2, any_len(r), &mut wire);
                put_any(r, &mut wire);
                put_str(3, &r.name, &mut wire);
            }
        }
    }
    debug_assert_eq!(wire.len(), len);
    wire
}

/// The encoded resources of shared [`Changes`], as the body of a response frame: alive
/// while any connection's response that carries them is queued or being written.
struct SharedWire(Arc<Changes>);

impl AsRef<[u8]> for SharedWire {
    fn as_ref(&self) -> &[u8] {
        &self.0.wire
    }
}

/// Shared resources smaller than this are copied into the response's one buffer;
/// larger ones are written from the shared buffer, between the response's own parts.
const COPY_BELOW: usize = 16 << 10;

/// A gRPC frame: this response's own fields, its version (field 1) before the shared
/// encoded resources and `tail` after them.
fn frame(
    version: &str,
    changes: &Arc<Changes>,
    tail_len: usize,
    tail: impl FnOnce(&mut Vec<u8>),
) -> Vec<Bytes> {
    let mut buf = Vec::with_capacity(64 + tail_len);
    buf.extend_from_slice(&[0; 5]);
    put_str(1, version, &mut buf);
    let head_len = buf.len() - 5;
    let len = head_len + changes.wire.len() + tail_len;
    buf[1..5].copy_from_slice(&(len as u32).to_be_bytes());
    if changes.wire.len() < COPY_BELOW {
        buf.reserve_exact(changes.wire.len() + tail_len);
        buf.extend_from_slice(&changes.wire);
        tail(&mut buf);
        debug_assert_eq!(buf.len(), 5 + len);
        return vec![Bytes::from(buf)];
    }
    let mut end = Vec::with_capacity(tail_len);
    tail(&mut end);
    debug_assert_eq!(end.len(), tail_len);
    vec![
        Bytes::from(buf),
        Bytes::from_owner(SharedWire(changes.clone())),
        Bytes::from(end),
    ]
}

/// A `DiscoveryResponse`, framed: fields in number order, as protobuf encoders write them.
pub(super) fn encode_sotw(
    version: &str,
    changes: &Arc<Changes>,
    type_url: &str,
    nonce: &str,
) -> Vec<Bytes> {
    frame(
        version,
        changes,
        str_field_len(type_url) + str_field_len(nonce),
        |b| {
            put_str(4, type_url, b);
            put_str(5, nonce, b);
        },
    )
}

/// A `DeltaDiscoveryResponse`, framed.
pub(super) fn encode_delta(
    version: &str,
    changes: &Arc<Changes>,
    type_url: &str,
    nonce: &str,
) -> Vec<Bytes> {
    let removed = &changes.removed;
    frame(
        version,
        changes,
        str_field_len(type_url)
            + str_field_len(nonce)
            + removed.iter().map(|n| field_len(n.len())).sum::<usize>(),
        |b| {
            put_str(4, type_url, b);
            put_str(5, nonce, b);
            for n in removed {
                put_field_header(6, n.len(), b);
                b.extend_from_slice(n.as_bytes());
            }
        },
    )
}

/// For the fuzz target (`crates/xds/fuzz`): reads `data` as a stream's gRPC frames,
/// as the server does, and decodes each message both as a State-of-the-World request
/// (one stream's earlier runs of names remembered) and as a Delta request. Panics
/// where the State-of-the-World decoder disagrees with itself (its count of names,
/// its `*`) or with prost on a message prost reads. Returns how many messages prost
/// read, as either request.
#[doc(hidden)]
pub fn fuzz_requests(data: &[u8]) -> usize {
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    let mut seen = SeenRuns::default();
    let mut rest = data;
    let mut read = 0;
    while let [0, l0, l1, l2, l3, body @ ..] = rest {
        let len = u32::from_be_bytes([*l0, *l1, *l2, *l3]) as usize;
        if len > MAX_REQUEST || len > body.len() {
            break;
        }
        let (msg, next) = body.split_at(len);
        rest = next;
        let ours = SotwRequest::from_wire(Bytes::copy_from_slice(msg), &mut seen);
        let delta = DeltaDiscoveryRequest::from_wire(Bytes::copy_from_slice(msg), &mut ());
        if let Ok(r) = &ours {
            assert_eq!(r.names().count(), r.names_count, "names counted");
            assert_eq!(r.names().any(|n| n == b"*"), r.star, "a `*` seen");
        }
        let sotw = DiscoveryRequest::decode(msg);
        read += usize::from(sotw.is_ok() || delta.is_ok());
        if let Ok(p) = sotw {
            let r = ours.unwrap_or_else(|e| panic!("prost reads what we do not: {e}"));
            assert_eq!(r.version_info, p.version_info);
            assert_eq!(r.node, p.node);
            assert_eq!(r.type_url, p.type_url);
            assert_eq!(r.response_nonce, p.response_nonce);
            assert_eq!(r.error_detail, p.error_detail);
            let names: Vec<&[u8]> = r.names().collect();
            let expected: Vec<&[u8]> = p.resource_names.iter().map(|n| n.as_bytes()).collect();
            assert_eq!(names, expected);
        }
    }
    read
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::resources;
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    };
    use envoy_types::pb::google::protobuf::Any;

    fn resource(name: &str, size: usize) -> Resource {
        Resource {
            name: name.into(),
            any: Arc::new(Any {
                type_url: resources::ENDPOINT.into(),
                value: vec![7; size],
            }),
            version: format!("v-{name}"),
        }
    }

    /// The message of a frame sent in parts.
    fn unframe(parts: &[Bytes]) -> Vec<u8> {
        let b: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        assert_eq!(b[0], 0);
        let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        assert_eq!(b.len(), 5 + len);
        b[5..].to_vec()
    }

    /// A framed response is `expected` as prost encodes it, byte for byte, and prost
    /// reads it back as `expected`.
    pub(in crate::server) fn assert_encodes_as_prost<M>(parts: &[Bytes], expected: &M)
    where
        M: Message + Default + PartialEq + std::fmt::Debug,
    {
        let message = unframe(parts);
        assert_eq!(&M::decode(message.as_slice()).unwrap(), expected);
        assert_eq!(message, expected.encode_to_vec());
    }

    fn changes(wire: Wire, rs: &[&Resource], removed: Vec<String>) -> Arc<Changes> {
        Arc::new(Changes::new(wire, rs, removed))
    }

    #[test]
    fn responses_encode_as_prost_does() {
        let rs = [resource("a", 0), resource("b", 200), resource("c", 70_000)];
        let refs: Vec<&Resource> = rs.iter().collect();
        let shared = changes(Wire::Sotw, &refs, vec![]);
        let sotw = encode_sotw("v1", &shared, resources::ENDPOINT, "7");
        assert_eq!(
            sotw.len(),
            3,
            "large resources are sent from the shared buffer"
        );
        assert_eq!(sotw[1].as_ptr(), shared.wire.as_ptr(), "not copied");
        let expected = DiscoveryResponse {
            version_info: "v1".into(),
            resources: rs.iter().map(|r| (*r.any).clone()).collect(),
            type_url: resources::ENDPOINT.into(),
            nonce: "7".into(),
            ..Default::default()
        };
        assert_encodes_as_prost(&sotw, &expected);
        // Small ones are copied into one buffer.
        let small = encode_sotw("v1", &changes(Wire::Sotw, &refs[..2], vec![]), "t", "1");
        assert_eq!(small.len(), 1);
        assert_eq!(
            DiscoveryResponse::decode(unframe(&small).as_slice())
                .unwrap()
                .resources
                .len(),
            2
        );

        let removed = vec!["gone".to_string(), String::new()];
        let delta = encode_delta(
            "",
            &changes(Wire::Delta, &refs, removed.clone()),
            resources::ENDPOINT,
            "8",
        );
        let expected = DeltaDiscoveryResponse {
            resources: rs
                .iter()
                .map(
                    |r| envoy_types::pb::envoy::service::discovery::v3::Resource {
                        name: r.name.clone(),
                        version: r.version.clone(),
                        resource: Some((*r.any).clone()),
                        ..Default::default()
                    },
                )
                .collect(),
            type_url: resources::ENDPOINT.into(),
            removed_resources: removed.clone(),
            nonce: "8".into(),
            ..Default::default()
        };
        assert_encodes_as_prost(&delta, &expected);
        let empty = encode_sotw("", &Arc::default(), "", "");
        assert_eq!(empty.len(), 1);
        assert_eq!(empty[0].as_ref(), &[0, 0, 0, 0, 0]);
    }

    #[test]
    fn sotw_requests_are_read_from_the_wire() {
        let req = DiscoveryRequest {
            version_info: "v1".into(),
            node: Some(Node {
                id: "sidecar~1.2.3.4~a.b~b.svc.cluster.local".into(),
                ..Default::default()
            }),
            resource_names: vec!["x".into(), String::new(), "y".repeat(300)],
            type_url: resources::ENDPOINT.into(),
            response_nonce: "3".into(),
            error_detail: Some(envoy_types::pb::google::rpc::Status {
                code: 3,
                message: "bad".into(),
                details: vec![],
            }),
            ..Default::default()
        };
        let mut seen = SeenRuns::default();
        let r = SotwRequest::from_wire(Bytes::from(req.encode_to_vec()), &mut seen).unwrap();
        assert!(r.names_digest.is_some(), "the names are one run");
        assert_eq!(r.version_info, "v1");
        assert_eq!(r.node, req.node);
        assert_eq!(r.type_url, req.type_url);
        assert_eq!(r.response_nonce, "3");
        assert_eq!(r.error_detail, req.error_detail);
        let names: Vec<&[u8]> = r.names().collect();
        let expected: Vec<&[u8]> = req.resource_names.iter().map(|n| n.as_bytes()).collect();
        assert_eq!(names, expected);
        let mut truncated = req.encode_to_vec();
        truncated.pop();
        assert!(SotwRequest::from_wire(Bytes::from(truncated), &mut SeenRuns::default()).is_err());

        // The same names again (an ACK) are recognised whole and read the same.
        let again = DiscoveryRequest {
            node: None,
            response_nonce: "4".into(),
            error_detail: None,
            ..req.clone()
        };
        let a = SotwRequest::from_wire(Bytes::from(again.encode_to_vec()), &mut seen).unwrap();
        assert_eq!(a.names_digest, r.names_digest);
        assert_eq!((a.names_count, a.star), (3, false));
        assert_eq!(a.names().collect::<Vec<_>>(), expected);
        assert_eq!(a.response_nonce, "4");
        // Names that only begin with the earlier run, or differ in a byte, are read
        // one by one.
        let mut longer = again.clone();
        longer.resource_names.push("*".into());
        let l = SotwRequest::from_wire(Bytes::from(longer.encode_to_vec()), &mut seen).unwrap();
        assert_eq!((l.names_count, l.star), (4, true));
        assert_ne!(l.names_digest, r.names_digest);
        let mut other = again.clone();
        other.resource_names[0] = "z".into();
        let o = SotwRequest::from_wire(Bytes::from(other.encode_to_vec()), &mut seen).unwrap();
        assert_eq!(o.names().next(), Some(&b"z"[..]));
        assert_ne!(o.names_digest, r.names_digest);
        assert_eq!(seen.0.len(), 3);
    }

    #[test]
    fn varints() {
        for v in [
            0usize,
            1,
            127,
            128,
            16_383,
            16_384,
            1 << 21,
            usize::MAX >> 1,
        ] {
            let mut buf = Vec::new();
            put_varint(v, &mut buf);
            assert_eq!(buf.len(), varint_len(v), "{v}");
        }
    }
}
