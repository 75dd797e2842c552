//! The hand-written codec against prost, on random messages: requests prost encodes
//! (with fields in any order, unknown fields anywhere, names repeated from one request
//! to the next) read as prost reads them, also through the gRPC framing in random
//! chunks; responses encoded byte for byte as prost encodes them.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    Resource as DeltaResource,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use proptest::prelude::*;
use prost::Message;
use prost::bytes::Bytes;
use prost::encoding;

use super::grpc::Requests;
use super::prepared::{Changes, Wire};
use super::wire::tests::assert_encodes_as_prost;
use super::wire::{SeenRuns, SotwRequest, WireMessage, encode_delta, encode_sotw};
use crate::resources::Resource;

/// Resource names: short, empty, `*`, not ASCII, longer than a one-byte length, large.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-z0-9|.-]{0,16}",
        1 => Just(String::new()),
        1 => Just("*".to_string()),
        1 => "\\PC{1,6}",
        1 => "[a-z]{120,300}",
        1 => (16_000usize..17_000).prop_map(|n| "n".repeat(n)),
    ]
}

fn node() -> impl Strategy<Value = Option<Node>> {
    proptest::option::of(
        ("[a-z~.0-9]{0,40}", "[a-z.]{0,10}").prop_map(|(id, cluster)| Node {
            id,
            cluster,
            ..Default::default()
        }),
    )
}

fn status() -> impl Strategy<Value = Option<RpcStatus>> {
    proptest::option::of(
        (any::<i32>(), "\\PC{0,20}").prop_map(|(code, message)| RpcStatus {
            code,
            message,
            details: vec![],
        }),
    )
}

/// A field neither request message knows (numbers from 10), of any wire type.
fn unknown_field() -> impl Strategy<Value = Vec<u8>> {
    (
        10u32..2000,
        0u8..5,
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..20),
    )
        .prop_map(|(tag, kind, n, bytes)| {
            let mut b = Vec::new();
            match kind {
                0 => encoding::uint64::encode(tag, &n, &mut b),
                1 => encoding::fixed64::encode(tag, &n, &mut b),
                2 => encoding::bytes::encode(tag, &bytes, &mut b),
                3 => encoding::fixed32::encode(tag, &(n as u32), &mut b),
                _ => {
                    // A group holding a varint field.
                    encoding::encode_key(tag, encoding::WireType::StartGroup, &mut b);
                    encoding::uint64::encode(1, &n, &mut b);
                    encoding::encode_key(tag, encoding::WireType::EndGroup, &mut b);
                }
            }
            b
        })
}

/// A State-of-the-World request's fields, but for its names.
#[derive(Clone, Debug)]
struct SotwFields {
    version_info: String,
    node: Option<Node>,
    type_url: String,
    response_nonce: String,
    error_detail: Option<RpcStatus>,
}

fn sotw_fields() -> impl Strategy<Value = SotwFields> {
    (
        "[a-z0-9]{0,16}",
        node(),
        "[a-z./]{0,60}",
        "[0-9]{0,4}",
        status(),
    )
        .prop_map(
            |(version_info, node, type_url, response_nonce, error_detail)| SotwFields {
                version_info,
                node,
                type_url,
                response_nonce,
                error_detail,
            },
        )
}

/// How a request's encoding is laid out: unknown fields inserted at positions (taken
/// modulo the number of fields), and whether the fields are shuffled.
#[derive(Clone, Debug)]
struct Layout {
    unknown: Vec<(usize, Vec<u8>)>,
    shuffle: Option<u64>,
}

fn layout() -> impl Strategy<Value = Layout> {
    (
        proptest::collection::vec((any::<usize>(), unknown_field()), 0..4),
        proptest::option::weighted(0.2, any::<u64>()),
    )
        .prop_map(|(unknown, shuffle)| Layout { unknown, shuffle })
}

/// Encodes a request field by field, as laid out; every field is written, even empty.
fn encode_sotw_request(f: &SotwFields, names: &[String], layout: &Layout) -> Vec<u8> {
    let mut fields: Vec<Vec<u8>> = Vec::new();
    let mut field = |write: &dyn Fn(&mut Vec<u8>)| {
        let mut b = Vec::new();
        write(&mut b);
        fields.push(b);
    };
    field(&|b| encoding::string::encode(1, &f.version_info, b));
    if let Some(n) = &f.node {
        field(&|b| encoding::message::encode(2, n, b));
    }
    for n in names {
        field(&|b| encoding::string::encode(3, n, b));
    }
    field(&|b| encoding::string::encode(4, &f.type_url, b));
    field(&|b| encoding::string::encode(5, &f.response_nonce, b));
    if let Some(e) = &f.error_detail {
        field(&|b| encoding::message::encode(6, e, b));
    }
    if let Some(mut seed) = layout.shuffle {
        for i in (1..fields.len()).rev() {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            fields.swap(i, (seed >> 33) as usize % (i + 1));
        }
    }
    for (at, u) in &layout.unknown {
        let at = at % (fields.len() + 1);
        fields.insert(at, u.clone());
    }
    fields.concat()
}

/// Our reading of a request is prost's.
fn assert_reads_as_prost(r: &SotwRequest, msg: &[u8]) -> Result<(), TestCaseError> {
    let p = DiscoveryRequest::decode(msg).expect("prost reads what it encoded");
    prop_assert_eq!(&r.version_info, &p.version_info);
    prop_assert_eq!(&r.node, &p.node);
    prop_assert_eq!(&r.type_url, &p.type_url);
    prop_assert_eq!(&r.response_nonce, &p.response_nonce);
    prop_assert_eq!(&r.error_detail, &p.error_detail);
    let names: Vec<&[u8]> = r.names().collect();
    let expected: Vec<&[u8]> = p.resource_names.iter().map(|n| n.as_bytes()).collect();
    prop_assert_eq!(&names, &expected);
    prop_assert_eq!(r.names_count, expected.len());
    prop_assert_eq!(r.star, expected.contains(&&b"*"[..]));
    Ok(())
}

/// Names of one request of a stream, from the names of the first: the same (an ACK),
/// one fewer, one more, or in reverse.
fn names_of(base: &[String], variant: u8) -> Vec<String> {
    match variant {
        0 => base.to_vec(),
        1 => base.iter().skip(1).cloned().collect(),
        2 => base.iter().cloned().chain(["more".to_string()]).collect(),
        _ => base.iter().rev().cloned().collect(),
    }
}

/// A body that yields the given chunks, every one at once.
struct Chunks(VecDeque<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = tonic::Status;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        Poll::Ready(self.0.pop_front().map(|c| Ok(http_body::Frame::data(c))))
    }
}

/// The messages a stream's body carries, cut into chunks at `cuts`, as `Requests`
/// reads them (a body that never waits: one poll finishes each read).
fn read_all<T: WireMessage>(messages: &[Vec<u8>], cuts: &[usize]) -> Vec<T> {
    let mut stream = Vec::new();
    for m in messages {
        stream.push(0);
        stream.extend_from_slice(&(m.len() as u32).to_be_bytes());
        stream.extend_from_slice(m);
    }
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    at.extend([0, stream.len()]);
    at.sort_unstable();
    let chunks = at
        .windows(2)
        .map(|w| Bytes::copy_from_slice(&stream[w[0]..w[1]]))
        .collect();
    let mut requests = Requests::<T>::new(tonic::body::Body::new(Chunks(chunks)));
    let mut out = Vec::new();
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        let mut read = std::pin::pin!(requests.message());
        match read.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(Some(m))) => out.push(m),
            Poll::Ready(Ok(None)) => return out,
            Poll::Ready(Err(e)) => panic!("the stream does not read: {e}"),
            Poll::Pending => panic!("a body that never waits kept the read waiting"),
        }
    }
}

fn delta_request() -> impl Strategy<Value = DeltaDiscoveryRequest> {
    (
        node(),
        "[a-z./]{0,60}",
        proptest::collection::vec(name(), 0..6),
        proptest::collection::vec(name(), 0..3),
        proptest::collection::hash_map("[a-z]{0,8}", "[0-9a-f]{0,16}", 0..3),
        "[0-9]{0,4}",
        status(),
    )
        .prop_map(
            |(node, type_url, subscribe, unsubscribe, initial, response_nonce, error_detail)| {
                DeltaDiscoveryRequest {
                    node,
                    type_url,
                    resource_names_subscribe: subscribe,
                    resource_names_unsubscribe: unsubscribe,
                    initial_resource_versions: initial.into_iter().collect::<HashMap<_, _>>(),
                    response_nonce,
                    error_detail,
                    ..Default::default()
                }
            },
        )
}

fn resource() -> impl Strategy<Value = Resource> {
    let value = prop_oneof![
        8 => proptest::collection::vec(any::<u8>(), 0..300),
        1 => (17_000usize..20_000).prop_map(|n| vec![7u8; n]),
    ];
    (name(), "[0-9a-f]{0,16}", "[a-z./]{0,40}", value).prop_map(
        |(name, version, type_url, value)| Resource {
            name,
            any: Arc::new(Any { type_url, value }),
            version,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn sotw_requests_read_as_prost_reads_them(
        base in proptest::collection::vec(name(), 0..8),
        stream in proptest::collection::vec((sotw_fields(), 0u8..4, layout()), 1..5),
    ) {
        let mut seen = SeenRuns::default();
        let mut read: Vec<(Vec<Vec<u8>>, Option<u64>)> = Vec::new();
        for (fields, variant, layout) in &stream {
            let msg = encode_sotw_request(fields, &names_of(&base, *variant), layout);
            let r = SotwRequest::from_wire(Bytes::from(msg.clone()), &mut seen)
                .map_err(|e| TestCaseError::fail(format!("ours does not read it: {e}")))?;
            assert_reads_as_prost(&r, &msg)?;
            // Names with the same digest are the same names, in the same order.
            let names: Vec<Vec<u8>> = r.names().map(<[u8]>::to_vec).collect();
            for (earlier, digest) in &read {
                if r.names_digest.is_some() && r.names_digest == *digest {
                    prop_assert_eq!(earlier, &names);
                }
            }
            read.push((names, r.names_digest));
        }
    }

    #[test]
    fn requests_in_chunks_read_as_prost_reads_them(
        sotw in proptest::collection::vec(
            (sotw_fields(), proptest::collection::vec(name(), 0..5)), 0..4),
        delta in proptest::collection::vec(delta_request(), 0..4),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let layout = Layout { unknown: vec![], shuffle: None };
        let messages: Vec<Vec<u8>> = sotw
            .iter()
            .map(|(f, names)| encode_sotw_request(f, names, &layout))
            .collect();
        let read = read_all::<SotwRequest>(&messages, &cuts);
        prop_assert_eq!(read.len(), messages.len());
        for (r, m) in read.iter().zip(&messages) {
            assert_reads_as_prost(r, m)?;
        }
        let messages: Vec<Vec<u8>> = delta.iter().map(Message::encode_to_vec).collect();
        prop_assert_eq!(read_all::<DeltaDiscoveryRequest>(&messages, &cuts), delta);
    }

    #[test]
    fn responses_encode_as_prost_encodes_them(
        resources in proptest::collection::vec(resource(), 0..6),
        version in "[0-9a-f]{0,16}",
        type_url in "[a-z./]{0,60}",
        nonce in "[0-9]{0,4}",
        removed in proptest::collection::vec(name(), 0..4),
    ) {
        let refs: Vec<&Resource> = resources.iter().collect();
        let sotw = encode_sotw(
            &version,
            &Arc::new(Changes::new(Wire::Sotw, &refs, vec![])),
            &type_url,
            &nonce,
        );
        let expected = DiscoveryResponse {
            version_info: version.clone(),
            resources: resources.iter().map(|r| (*r.any).clone()).collect(),
            type_url: type_url.clone(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        assert_encodes_as_prost(&sotw, &expected);

        let delta = encode_delta(
            &version,
            &Arc::new(Changes::new(Wire::Delta, &refs, removed.clone())),
            &type_url,
            &nonce,
        );
        let expected = DeltaDiscoveryResponse {
            system_version_info: version,
            resources: resources
                .iter()
                .map(|r| DeltaResource {
                    name: r.name.clone(),
                    version: r.version.clone(),
                    resource: Some((*r.any).clone()),
                    ..Default::default()
                })
                .collect(),
            type_url,
            removed_resources: removed,
            nonce,
            ..Default::default()
        };
        assert_encodes_as_prost(&delta, &expected);
    }
}
