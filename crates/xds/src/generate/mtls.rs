//! Istio mutual TLS between sidecars, in one place: the SDS secrets a proxy's agent
//! serves (`default`, `ROOTCA` over the `sds-grpc` cluster), the client side of an
//! outbound cluster (`ISTIO_MUTUAL`, and auto mTLS: mTLS toward endpoints that run a
//! sidecar, plaintext toward the rest, chosen per endpoint), and the server side of the
//! inbound listener.
//!
//! Istio's rules, from `pilot/pkg/networking/core/cluster_tls.go`
//! (`buildIstioMutualTLS`, `buildAutoMtlsSettings`) and
//! `pilot/pkg/networking/core/listener_builder.go` / `security/authn` (inbound chains):
//! SNI `outbound_.PORT_.SUBSET_.HOST`; ALPN `istio-peer-exchange`, `istio` (and `h2`
//! for HTTP/2 clusters); the server's certificate checked against the mesh's roots and
//! the service's accounts; endpoints carry `tlsMode: istio` when their pod has the
//! `security.istio.io/tlsMode: istio` label, and the cluster's transport socket
//! matches choose mTLS for them.

use envoy_types::pb::envoy::config::cluster::v3::cluster::TransportSocketMatch;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::grpc_service::{EnvoyGrpc, TargetSpecifier};
use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
use envoy_types::pb::envoy::config::core::v3::{
    ApiConfigSource, ApiVersion, ConfigSource, GrpcService, Metadata, TransportSocket,
    api_config_source::ApiType,
};
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::{
    CombinedCertificateValidationContext, ValidationContextType,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::subject_alt_name_matcher::SanType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    SubjectAltNameMatcher, UpstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher;
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::google::protobuf::{Any, BoolValue, Struct, Value, value::Kind};
use prost::{Message, Name};

/// The pod label Istio's injector sets on pods with a sidecar.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
/// The endpoint metadata namespace transport socket matches read.
pub const TRANSPORT_SOCKET_MATCH: &str = "envoy.transport_socket_match";
/// The SDS secret with the workload's certificate chain and key.
pub const WORKLOAD_SECRET: &str = "default";
/// The SDS secret with the mesh's roots.
pub const ROOT_SECRET: &str = "ROOTCA";
/// The bootstrap cluster of the agent's SDS server.
pub const SDS_CLUSTER: &str = "sds-grpc";
/// ALPNs of mesh mTLS a client offers (Istio's `ALPNInMeshWithMxc`).
pub const CLIENT_ALPN: &[&str] = &["istio-peer-exchange", "istio"];
/// ALPNs the inbound listener takes for mesh mTLS (Istio's `mtlsTCPWithMxcALPNs` and
/// the HTTP ones).
pub const SERVER_MATCH_ALPN: &[&str] = &[
    "istio-peer-exchange",
    "istio",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
];
const TLS_SOCKET: &str = "envoy.transport_sockets.tls";

/// `outbound_.PORT_.SUBSET_.HOST` (empty subset: `_`), the SNI of mesh mTLS.
pub fn outbound_sni(port: u16, subset: &str, host: &str) -> String {
    format!("outbound_.{port}_.{subset}_.{host}")
}

fn any<M: Message + Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

/// An SDS secret served by the agent on `sds-grpc`.
fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(ConfigSource {
            config_source_specifier: Some(ConfigSourceSpecifier::ApiConfigSource(
                ApiConfigSource {
                    api_type: ApiType::Grpc as i32,
                    transport_api_version: ApiVersion::V3 as i32,
                    set_node_on_first_message_only: true,
                    grpc_services: vec![GrpcService {
                        target_specifier: Some(TargetSpecifier::EnvoyGrpc(EnvoyGrpc {
                            cluster_name: SDS_CLUSTER.to_string(),
                            ..Default::default()
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            )),
            resource_api_version: ApiVersion::V3 as i32,
            ..Default::default()
        }),
    }
}

/// The workload's certificate and the mesh's roots from SDS, peers' SANs checked
/// against `sans` (none: any identity under the roots).
fn common(sans: &[String], alpn: &[&str]) -> CommonTlsContext {
    CommonTlsContext {
        tls_certificate_sds_secret_configs: vec![sds(WORKLOAD_SECRET)],
        validation_context_type: Some(ValidationContextType::CombinedValidationContext(
            CombinedCertificateValidationContext {
                default_validation_context: Some(CertificateValidationContext {
                    match_typed_subject_alt_names: sans
                        .iter()
                        .map(|san| SubjectAltNameMatcher {
                            san_type: SanType::Uri as i32,
                            matcher: Some(StringMatcher {
                                match_pattern: Some(MatchPattern::Exact(san.clone())),
                                ignore_case: false,
                            }),
                            oid: String::new(),
                        })
                        .collect(),
                    ..Default::default()
                }),
                validation_context_sds_secret_config: Some(sds(ROOT_SECRET)),
                ..Default::default()
            },
        )),
        alpn_protocols: alpn.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    }
}

/// The client side of mesh mTLS toward a cluster: SNI `sni`, the server's identity
/// one of `sans` (the service's accounts), ALPN `istio-peer-exchange`, `istio` (and
/// `h2` for an HTTP/2 cluster).
pub fn client_socket(sni: &str, sans: &[String], h2: bool) -> TransportSocket {
    let mut alpn = CLIENT_ALPN.to_vec();
    if h2 {
        alpn.push("h2");
    }
    let context = UpstreamTlsContext {
        common_tls_context: Some(common(sans, &alpn)),
        sni: sni.to_string(),
        ..Default::default()
    };
    TransportSocket {
        name: TLS_SOCKET.to_string(),
        config_type: Some(ConfigType::TypedConfig(any(&context))),
    }
}

/// Auto mTLS: `tlsMode-istio` (endpoints with `tlsMode: istio`) over `mtls`,
/// `tlsMode-disabled` (the rest) in plaintext.
pub fn auto_matches(mtls: TransportSocket) -> Vec<TransportSocketMatch> {
    vec![
        TransportSocketMatch {
            name: "tlsMode-istio".into(),
            r#match: Some(tls_mode_istio()),
            transport_socket: Some(mtls),
        },
        TransportSocketMatch {
            name: "tlsMode-disabled".into(),
            r#match: Some(Struct::default()),
            transport_socket: Some(TransportSocket {
                name: "envoy.transport_sockets.raw_buffer".into(),
                config_type: Some(ConfigType::TypedConfig(any(&RawBuffer::default()))),
            }),
        },
    ]
}

fn tls_mode_istio() -> Struct {
    Struct {
        fields: [(
            "tlsMode".to_string(),
            Value {
                kind: Some(Kind::StringValue("istio".into())),
            },
        )]
        .into(),
    }
}

/// Whether an endpoint's labels say it runs a sidecar (`security.istio.io/tlsMode: istio`).
pub fn runs_sidecar(tls_mode: Option<&str>) -> bool {
    tls_mode == Some("istio")
}

/// The metadata of an endpoint that runs a sidecar: `tlsMode: istio` for the
/// transport socket matches.
pub fn endpoint_metadata() -> Metadata {
    Metadata {
        filter_metadata: [(TRANSPORT_SOCKET_MATCH.to_string(), tls_mode_istio())].into(),
        ..Default::default()
    }
}

/// The server side of mesh mTLS on the inbound listener: the workload's certificate,
/// a client certificate required and checked against the mesh's roots (any identity in
/// the trust domain: authorization is another policy's business).
pub fn server_socket(http: bool) -> TransportSocket {
    let alpn: &[&str] = if http { &["h2", "http/1.1"] } else { &[] };
    let context = DownstreamTlsContext {
        common_tls_context: Some(common(&[], alpn)),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    };
    TransportSocket {
        name: TLS_SOCKET.to_string(),
        config_type: Some(ConfigType::TypedConfig(any(&context))),
    }
}
