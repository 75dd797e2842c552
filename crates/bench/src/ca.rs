//! `isthmus bench ca`: the mesh's certificate authority, ECDSA P-256 throughout.
//!
//! Measured, on one core (one thread of this process, each for a bounded time): the CA
//! signing workload CSRs ([`isthmus_ca::CertificateAuthority::sign_workload`] on a
//! self-signed root: the CSR parsed and its signature checked, the identity checked,
//! the leaf signed), what the CA also does per request (an ES256 service-account token
//! verified), what each agent does first (a key pair and its CSR), and the TLS
//! handshake each agent's connection costs (in memory, both sides, rustls as the
//! control plane uses it; and with the client offering X25519 only, as Istio's Go agent
//! does first).
//!
//! Then a start-up storm: the control plane (`isthmus discovery`, a child process, with
//! its self-signed root) and N agents in this process starting at once, each with its
//! own key, CSR and service-account token, its own TLS connection to the control
//! plane's 15012 listener, and one `CreateCertificate` call, as Istio's agent asks for
//! its first certificate. Measured: the time until every agent holds a certificate, the
//! per-agent latency, every failure with its reason (an agent does not retry), and the
//! control plane's CPU time and memory, read from `/proc/PID/stat` and
//! `/proc/PID/status`. The agents share the machine's cores with the control plane.
//! Prints figures; asserts nothing. Every wait is bounded.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use isthmus_ca::proto::IstioCertificateRequest;
use isthmus_ca::proto::istio_certificate_service_client::IstioCertificateServiceClient;
use isthmus_ca::{
    CA_AUDIENCE, CLUSTER_ID_METADATA, CertificateAuthority, ClusterIssuer, TokenIssuer,
    TokenVerifier,
};
use isthmus_xds::discovery::BoundAddresses;
use tokio::task::JoinSet;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::memory::{memory, process_memory};
use crate::xds::{ControlPlane, cpu_seconds, http_get, mb, ms, pct, tempfile_dir};

/// What to measure, and with which control plane.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `isthmus` binary (its `discovery` subcommand is the control plane).
    pub binary: PathBuf,
    /// How long each one-core loop runs.
    pub seconds: f64,
    /// Agents starting at once against the control plane (0: none).
    pub agents: usize,
    /// Keep the control plane's directory and log.
    pub keep: bool,
}

const TRUST_DOMAIN: &str = "cluster.local";
const CLUSTER: &str = "cluster1";
/// The `iss` of the cluster's service-account tokens (a kubelet's, in Kubernetes).
const TOKEN_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The control plane's name in its certificate (Istio's istiod in `istio-system`).
const SERVER_NAME: &str = "istiod.istio-system.svc";
/// Distinct CSRs (and tokens) the one-core loops cycle through.
const DISTINCT: usize = 200;
/// The longest an agent may take to get its certificate, from the start.
const AGENT_DEADLINE: Duration = Duration::from_secs(120);

/// Runs the benchmark; returns its report, or on an error the report so far with the
/// error last.
pub async fn run(opts: &Options) -> Result<String, String> {
    let mut out = String::new();
    match run_into(opts, &mut out).await {
        Ok(()) => Ok(out),
        Err(e) => {
            let _ = writeln!(out, "error: {}", e.trim_end());
            Err(out)
        }
    }
}

async fn run_into(opts: &Options, out: &mut String) -> Result<(), String> {
    let budget = Duration::try_from_secs_f64(opts.seconds)
        .map_err(|e| format!("--seconds {}: {e}", opts.seconds))?;
    let _ = writeln!(
        out,
        "ca bench: ECDSA P-256 keys and certificates, trust domain {TRUST_DOMAIN}"
    );
    let one = tokio::task::spawn_blocking(move || one_core(budget))
        .await
        .map_err(|e| format!("the one-core loops failed: {e}"))??;
    out.push_str(&one);
    if opts.agents > 0 {
        agents_at_once(opts, out).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// One core

fn spiffe(namespace: &str, service_account: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}")
}

/// What an agent makes before it asks: a fresh P-256 key and a CSR for `identity`
/// (PEM), the way Istio's agent does (the identity as the one URI SAN).
fn key_and_csr(identity: &str) -> Result<String, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| format!("key: {e}"))?;
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        rcgen::string::Ia5String::try_from(identity).map_err(|e| format!("{identity}: {e}"))?,
    )];
    params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|e| format!("CSR: {e}"))
}

/// CPU time of the calling thread, in seconds, to the nanosecond.
fn thread_cpu() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 / 1e9)
}

/// A loop's figures: each iteration's time, the wall time and the thread's CPU time.
struct Timed {
    each: Vec<Duration>,
    wall: Duration,
    cpu: f64,
}

impl Timed {
    /// Calls `f(0)`, `f(1)`, … on this thread until `budget` has passed.
    fn run(
        budget: Duration,
        mut f: impl FnMut(usize) -> Result<(), String>,
    ) -> Result<Timed, String> {
        let mut each = Vec::new();
        let cpu0 = thread_cpu();
        let t0 = Instant::now();
        while t0.elapsed() < budget {
            let t = Instant::now();
            f(each.len())?;
            each.push(t.elapsed());
        }
        Ok(Timed {
            wall: t0.elapsed(),
            cpu: thread_cpu() - cpu0,
            each,
        })
    }

    fn line(&self, what: &str) -> String {
        let n = self.each.len() as f64;
        format!(
            "    {what:<44} {:>7.0}/s ({:.0} per CPU-second); each p50 {}  p99 {}  ({} in {:.1} s)\n",
            n / self.wall.as_secs_f64().max(1e-9),
            n / self.cpu.max(1e-9),
            us(pct(&self.each, 0.5)),
            us(pct(&self.each, 0.99)),
            self.each.len(),
            self.wall.as_secs_f64()
        )
    }
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// The one-core loops, each for `budget`, on the calling thread.
fn one_core(budget: Duration) -> Result<String, String> {
    let mut out = String::new();
    let tmp = tempfile_dir("ca")?;
    let ca = CertificateAuthority::self_signed(tmp.path(), TRUST_DOMAIN)
        .map_err(|e| format!("cannot make the CA: {e}"))?;
    let requests: Vec<(String, String, String)> = (0..DISTINCT)
        .map(|i| {
            let (ns, sa) = (format!("ns-{i}"), format!("sa-{i}"));
            Ok((key_and_csr(&spiffe(&ns, &sa))?, ns, sa))
        })
        .collect::<Result<_, String>>()?;
    let _ = writeln!(
        out,
        "  one core (one thread, {:.1} s each; {DISTINCT} distinct requests in turn):",
        budget.as_secs_f64()
    );

    let signed = Timed::run(budget, |i| {
        let (csr, ns, sa) = &requests[i % DISTINCT];
        let issued = ca
            .sign_workload(csr, ns, sa, Duration::ZERO)
            .map_err(|e| format!("the CA refused {ns}/{sa}: {e}"))?;
        if issued.cert_chain.len() < 2 {
            return Err(format!(
                "the CA answered {ns}/{sa} with {} PEM entries",
                issued.cert_chain.len()
            ));
        }
        Ok(())
    })?;
    out.push_str(&signed.line("CA signs a CSR (parse, check, sign)"));

    let issuer =
        TokenIssuer::generate(TOKEN_ISSUER).map_err(|e| format!("cannot make an issuer: {e}"))?;
    let mut verifier = TokenVerifier::new();
    verifier.insert(
        CLUSTER,
        ClusterIssuer::from_jwks(&issuer.jwks(), Some(TOKEN_ISSUER.to_string()))?,
    );
    let tokens: Vec<String> = (0..DISTINCT)
        .map(|i| {
            issuer.issue(
                &format!("ns-{i}"),
                &format!("sa-{i}"),
                &format!("pod-{i}"),
                CA_AUDIENCE,
                Duration::from_secs(3600),
            )
        })
        .collect();
    let verified = Timed::run(budget, |i| {
        verifier
            .verify(Some(CLUSTER), &tokens[i % DISTINCT])
            .map(drop)
            .map_err(|e| format!("a token was refused: {e}"))
    })?;
    out.push_str(&verified.line("CA verifies a service-account token (ES256)"));

    let made = Timed::run(budget, |i| {
        key_and_csr(&spiffe("bench", &format!("sa-{}", i % DISTINCT))).map(drop)
    })?;
    out.push_str(&made.line("agent makes a key pair and its CSR"));

    // The TLS handshake each agent's connection costs, both sides on this thread: with
    // the process's rustls provider as it is (what the control plane and this bench's
    // agents use), and offering X25519 only (what Istio's Go agent offers first; the
    // server takes the client's first share it supports).
    let (chain_pem, key_pem) = ca
        .sign_server(&[SERVER_NAME.to_string()], Duration::from_secs(3600))
        .map_err(|e| format!("cannot issue a server certificate: {e}"))?;
    let provider = rustls::crypto::CryptoProvider::get_default()
        .ok_or("no rustls crypto provider is installed")?;
    let mut x25519 = provider.as_ref().clone();
    x25519
        .kx_groups
        .retain(|g| g.name() == rustls::NamedGroup::X25519);
    for (provider, whose) in [
        (provider.clone(), "as configured"),
        (Arc::new(x25519), "as Istio's Go agent"),
    ] {
        let tls = Handshakes::new(provider, &chain_pem, &key_pem, &ca.root_bundle_pem())?;
        let mut sides = (Vec::new(), Vec::new());
        let mut group = None;
        let shaken = Timed::run(budget, |_| {
            let (server, client, kx) = tls.once()?;
            sides.0.push(server);
            sides.1.push(client);
            group = kx;
            Ok(())
        })?;
        out.push_str(&shaken.line(&format!(
            "TLS handshake, {} ({whose})",
            group.map_or("?".to_string(), |g| format!("{g:?}"))
        )));
        let _ = writeln!(
            out,
            "      of which the control plane's side p50 {}, the agent's side p50 {}",
            us(pct(&sides.0, 0.5)),
            us(pct(&sides.1, 0.5))
        );
    }
    Ok(out)
}

/// Full TLS handshakes in memory between a client trusting the CA's root and a server
/// with a certificate from it, as on 15012 (no resumption: each agent is new).
struct Handshakes {
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
}

impl Handshakes {
    fn new(
        provider: Arc<rustls::crypto::CryptoProvider>,
        chain_pem: &str,
        key_pem: &str,
        root_pem: &str,
    ) -> Result<Self, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let err = |e: rustls::Error| e.to_string();
        let pem = |e: rustls::pki_types::pem::Error| e.to_string();
        let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(pem)?;
        let mut roots = rustls::RootCertStore::empty();
        for root in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
            roots.add(root.map_err(pem)?).map_err(err)?;
        }
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(err)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(err)?;
        server.alpn_protocols = vec![b"h2".to_vec()];
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(err)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"h2".to_vec()];
        client.resumption = rustls::client::Resumption::disabled();
        Ok(Handshakes {
            client: Arc::new(client),
            server: Arc::new(server),
        })
    }

    /// One handshake; returns the time spent in the server's and in the client's
    /// connection, and the key exchange group they agreed on.
    fn once(&self) -> Result<(Duration, Duration, Option<rustls::NamedGroup>), String> {
        let err = |e: rustls::Error| e.to_string();
        let io = |e: std::io::Error| e.to_string();
        let name =
            rustls::pki_types::ServerName::try_from(SERVER_NAME).map_err(|e| e.to_string())?;
        let t = Instant::now();
        let mut client = rustls::ClientConnection::new(self.client.clone(), name).map_err(err)?;
        let mut client_time = t.elapsed();
        let t = Instant::now();
        let mut server = rustls::ServerConnection::new(self.server.clone()).map_err(err)?;
        let mut server_time = t.elapsed();
        let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
        for _ in 0..10 {
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
            let t = Instant::now();
            to_server.clear();
            while client.wants_write() {
                client.write_tls(&mut to_server).map_err(io)?;
            }
            client_time += t.elapsed();
            let t = Instant::now();
            let mut rd = to_server.as_slice();
            while !rd.is_empty() {
                server.read_tls(&mut rd).map_err(io)?;
                server.process_new_packets().map_err(err)?;
            }
            to_client.clear();
            while server.wants_write() {
                server.write_tls(&mut to_client).map_err(io)?;
            }
            server_time += t.elapsed();
            let t = Instant::now();
            let mut rd = to_client.as_slice();
            while !rd.is_empty() {
                client.read_tls(&mut rd).map_err(io)?;
                client.process_new_packets().map_err(err)?;
            }
            client_time += t.elapsed();
        }
        if client.is_handshaking() || server.is_handshaking() {
            return Err("a TLS handshake did not finish in 10 rounds".into());
        }
        Ok((
            server_time,
            client_time,
            client.negotiated_key_exchange_group().map(|g| g.name()),
        ))
    }
}

// ---------------------------------------------------------------------------------
// Agents at once

/// Starts `isthmus discovery` on `dir/mesh.yaml` with every listener on port 0; returns
/// it and its TLS (15012) address once it is ready.
async fn start_control_plane(
    dir: &Path,
    opts: &Options,
) -> Result<(ControlPlane, SocketAddr), String> {
    let address_file = dir.join("discovery.addresses");
    let log = std::fs::File::create(dir.join("discovery.log")).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(&opts.binary);
    cmd.arg("discovery")
        .arg("--mesh")
        .arg(dir.join("mesh.yaml"))
        .args([
            "--grpc-address",
            "127.0.0.1:0",
            "--debug-address",
            "127.0.0.1:0",
            "--secure-grpc-address",
            "127.0.0.1:0",
        ])
        .arg("--address-file")
        .arg(&address_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    cmd.env("NO_COLOR", "1");
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", opts.binary.display()))?;
    // Killed when dropped, whichever way this returns.
    let mut cp = ControlPlane {
        child,
        grpc: SocketAddr::from(([127, 0, 0, 1], 0)),
        debug: SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let mut secure = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = cp.child.try_wait() {
            // The directory goes when the bench returns: the log's end, here.
            let log = std::fs::read_to_string(dir.join("discovery.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            return Err(format!(
                "the control plane exited ({status}); its log ends:\n{}",
                lines[lines.len().saturating_sub(10)..].join("\n")
            ));
        }
        if cp.debug.port() == 0
            && let Some(bound) = BoundAddresses::read(&address_file)
        {
            (cp.grpc, cp.debug, secure) = (bound.grpc, bound.debug, bound.secure);
        }
        if cp.debug.port() != 0
            && let Some(r) = http_get(cp.debug, "/ready").await
            && r.starts_with("HTTP/1.1 200")
        {
            let secure =
                secure.ok_or("the control plane serves no TLS listener (--secure-grpc-address)")?;
            return Ok((cp, secure));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("the control plane was not ready within 60 s".into())
}

/// One agent's times: making its key and CSR, its TLS connection, the call, and from
/// the start of all agents until it held its certificate.
struct AgentTimes {
    key: Duration,
    connect: Duration,
    call: Duration,
    held: Duration,
}

/// An error and its causes, one after the other.
fn causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let _ = write!(s, ": {cause}");
        source = cause.source();
    }
    s
}

/// Agent `i` (`bench/sa-I`): a key and CSR, a TLS connection to `addr` trusting
/// `root`, and `CreateCertificate` with its token.
async fn agent(
    i: usize,
    addr: SocketAddr,
    root: Arc<str>,
    token: String,
    t0: Instant,
) -> Result<AgentTimes, String> {
    let start = Instant::now();
    let csr = key_and_csr(&spiffe("bench", &format!("sa-{i}")))?;
    let key = start.elapsed();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(root.as_bytes()))
        .domain_name(SERVER_NAME);
    let connecting = Instant::now();
    let channel = Channel::from_shared(format!("https://{addr}"))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| causes(&e))?
        .connect()
        .await
        .map_err(|e| format!("connect: {}", causes(&e)))?;
    let connect = connecting.elapsed();
    let mut request = tonic::Request::new(IstioCertificateRequest {
        csr,
        subject_id: String::new(),
        validity_duration: 0,
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .map_err(|_| "the token is not a header value")?,
    );
    request.metadata_mut().insert(
        CLUSTER_ID_METADATA,
        tonic::metadata::MetadataValue::from_static(CLUSTER),
    );
    let calling = Instant::now();
    let chain = IstioCertificateServiceClient::new(channel)
        .create_certificate(request)
        .await
        .map_err(|s| format!("CreateCertificate: {:?}: {}", s.code(), s.message()))?
        .into_inner()
        .cert_chain;
    let call = calling.elapsed();
    if chain.len() < 2 || !chain[0].starts_with("-----BEGIN CERTIFICATE-----") {
        return Err(format!(
            "CreateCertificate answered {} entries, not a leaf and the root",
            chain.len()
        ));
    }
    Ok(AgentTimes {
        key,
        connect,
        call,
        held: t0.elapsed(),
    })
}

async fn agents_at_once(opts: &Options, out: &mut String) -> Result<(), String> {
    let n = opts.agents;
    let tmp = tempfile_dir("ca")?;
    let dir = tmp.path().to_path_buf();
    let issuer =
        TokenIssuer::generate(TOKEN_ISSUER).map_err(|e| format!("cannot make an issuer: {e}"))?;
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).map_err(|e| format!("cannot write {name}: {e}"))
    };
    std::fs::create_dir_all(dir.join("c1")).map_err(|e| format!("cannot write c1/: {e}"))?;
    write("c1-jwks.json", &issuer.jwks())?;
    write(
        "mesh.yaml",
        &format!(
            "clusters:\n- name: {CLUSTER}\n  source: {{manifests: c1}}\n  serviceAccountIssuer: {{jwks: c1-jwks.json, issuer: \"{TOKEN_ISSUER}\"}}\n"
        ),
    )?;
    let (cp, secure) = start_control_plane(&dir, opts).await?;
    let pid = cp.child.id().to_string();
    let root_path = dir.join(".isthmus/ca/root-cert.pem");
    let root: Arc<str> = std::fs::read_to_string(&root_path)
        .map_err(|e| {
            format!(
                "cannot read the control plane's root {}: {e}",
                root_path.display()
            )
        })?
        .into();
    // The kubelet's part, before the pods start: not timed.
    let tokens: Vec<String> = (0..n)
        .map(|i| {
            issuer.issue(
                "bench",
                &format!("sa-{i}"),
                &format!("agent-{i}"),
                CA_AUDIENCE,
                Duration::from_secs(3600),
            )
        })
        .collect();
    let kx = rustls::crypto::CryptoProvider::get_default()
        .and_then(|p| p.kx_groups.first())
        .map_or("?".to_string(), |g| format!("{:?}", g.name()));
    let _ = writeln!(
        out,
        "  {n} agents at once against `isthmus discovery` (pid {pid}, self-signed root) on {secure}; each: key + CSR, TLS connection (rustls offering {kx} first), CreateCertificate (no retries)"
    );
    let (rss_idle, _) = process_memory(&pid);
    let cpu0 = cpu_seconds(&pid);
    let me0 = cpu_seconds("self");

    let t0 = Instant::now();
    let mut set = JoinSet::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let root = root.clone();
        set.spawn(async move {
            let got = tokio::time::timeout(AGENT_DEADLINE, agent(i, secure, root, token, t0))
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "no certificate within {} s",
                        AGENT_DEADLINE.as_secs()
                    ))
                });
            (i, got)
        });
    }
    let mut held = Vec::new();
    let mut failed: BTreeMap<usize, String> = BTreeMap::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((_, Ok(times))) => held.push(times),
            Ok((i, Err(reason))) => {
                failed.insert(i, reason);
            }
            Err(e) => {
                failed.insert(n + failed.len(), format!("the agent's task failed: {e}"));
            }
        }
    }
    let wall = t0.elapsed();
    let cpu = cpu_seconds(&pid) - cpu0;
    let me = cpu_seconds("self") - me0;
    let (rss_end, hwm) = process_memory(&pid);

    let col = |f: fn(&AgentTimes) -> Duration| held.iter().map(f).collect::<Vec<_>>();
    let dist = |v: &[Duration]| {
        format!(
            "p50 {}  p99 {}  max {}",
            ms(pct(v, 0.5)),
            ms(pct(v, 0.99)),
            ms(v.iter().max().copied().unwrap_or_default())
        )
    };
    let last = held.iter().map(|t| t.held).max().unwrap_or_default();
    if failed.is_empty() {
        let _ = writeln!(
            out,
            "    all {n} hold certificates after   {}  ({:.0} certificates/s)",
            ms(last),
            n as f64 / last.as_secs_f64().max(1e-9)
        );
    } else {
        let _ = writeln!(
            out,
            "    {} of {n} hold certificates after {} (the last success); {} FAILED (all done after {})",
            held.len(),
            ms(last),
            failed.len(),
            ms(wall)
        );
    }
    let _ = writeln!(
        out,
        "    per agent, start → certificate held  {}",
        dist(&col(|t| t.held))
    );
    let _ = writeln!(
        out,
        "      of which: key + CSR {}; TLS connection {}; CreateCertificate {}",
        dist(&col(|t| t.key)),
        dist(&col(|t| t.connect)),
        dist(&col(|t| t.call))
    );
    if !failed.is_empty() {
        let mut by: BTreeMap<&str, usize> = BTreeMap::new();
        for r in failed.values() {
            *by.entry(r.as_str()).or_default() += 1;
        }
        for (reason, count) in by {
            let _ = writeln!(out, "    failed: {count}× {reason}");
        }
    }
    let _ = writeln!(
        out,
        "    control plane CPU {cpu:.2} s ({:.2} ms per certificate, TLS handshake and token check included); resident {} before, {} after, peak {}",
        cpu * 1e3 / held.len().max(1) as f64,
        mb(rss_idle),
        mb(rss_end),
        mb(hwm)
    );
    let (me_rss, me_hwm) = memory();
    let _ = writeln!(
        out,
        "    agents (this process, same cores): CPU {me:.2} s, resident {}, peak {}",
        mb(me_rss),
        mb(me_hwm)
    );
    drop(cp);
    if let Ok(log) = std::fs::read_to_string(dir.join("discovery.log")) {
        // The self-signed root's warning is expected; anything else is reported.
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| (l.contains("ERROR") || l.contains("WARN")) && !l.contains("SELF-SIGNED"))
            .collect();
        if let Some(first) = warnings.first() {
            let _ = writeln!(
                out,
                "    control plane log: {} warnings or errors; the first: {}",
                warnings.len(),
                first.trim()
            );
        }
    }
    if opts.keep {
        let kept = tmp.keep();
        let _ = writeln!(out, "  kept: {} (mesh.yaml, discovery.log)", kept.display());
    }
    Ok(())
}
