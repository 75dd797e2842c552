//! `isthmus app run`: the stand-in for a container image.
//!
//! `isthmus lab` runs each pod of a manifest as `isthmus app run --image IMAGE --pod POD
//! --port P… --env K=V… [-- COMMAND ARGS…]`, and the image picks what answers
//! ([`StandIn::from_image`], registry and tag ignored):
//!
//! | image | stand-in | default port |
//! | --- | --- | --- |
//! | `examples-bookinfo-productpage-v1` | [`crate::bookinfo::productpage`] | 9080 |
//! | `examples-bookinfo-details-v1`, `-v2` | [`crate::bookinfo::details`] | 9080 |
//! | `examples-bookinfo-reviews-v1`, `-v2`, `-v3` | [`crate::bookinfo::reviews`] of that version | 9080 |
//! | `examples-bookinfo-ratings-v1`, `-v2` | [`crate::bookinfo::ratings`] | 9080 |
//! | `examples-helloworld-v1`, `-v2` | [`crate::helloworld`] of that version | 5000 |
//! | `curlimages/curl`, `curl`, `sleep`, `governmentpaas/curl-ssl`, `busybox`, … | idle until SIGTERM/SIGINT (one `exec`s `curl` in the pod) | none |
//! | anything else | [`crate::echo`] on every `--port` | 8080 |
//!
//! The environment an app reads is what the real image sets (e.g. reviews-v3:
//! `SERVICE_VERSION=v3 ENABLE_RATINGS=true STAR_COLOR=red`), `HOSTNAME` (the pod),
//! `CLUSTER_NAME` (`--cluster`, when given), then every `--env` (which wins). The
//! container's own command after `--` is not run; `--command 'SHELL LINE'` runs that
//! instead of any stand-in (`/bin/sh -c LINE sh COMMAND ARGS…`, so `"$@"` is the
//! container's command), and `isthmus app run` exits with its code.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::bookinfo::{self, productpage, reviews};
use crate::{Env, Error, Identity, Server, echo, helloworld};

/// What answers for an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StandIn {
    ProductPage,
    Details {
        version: String,
    },
    Reviews {
        version: String,
    },
    Ratings {
        version: String,
    },
    HelloWorld {
        version: String,
    },
    /// Sleeps until told to stop: a client pod one `exec`s into.
    Idle,
    /// [`crate::echo`] on every port.
    Echo,
}

/// Images whose pods only wait for someone to `exec` a client in them.
const IDLE_IMAGES: &[&str] = &[
    "curl", "curl-ssl", "sleep", "busybox", "alpine", "netshoot", "ubuntu", "debian",
];

/// An image's repository path without registry, tag or digest:
/// `registry.istio.io/release/examples-bookinfo-details-v1:1.20.3` →
/// `release/examples-bookinfo-details-v1`, `docker.io/curlimages/curl:8.16.0` →
/// `curlimages/curl`, `busybox` → `busybox`.
pub fn image_name(image: &str) -> &str {
    let image = image.trim();
    let no_digest = image.split('@').next().unwrap_or(image);
    let last_slash = no_digest.rfind('/').map_or(0, |i| i + 1);
    let no_tag = match no_digest[last_slash..].find(':') {
        Some(i) => &no_digest[..last_slash + i],
        None => no_digest,
    };
    let path = match no_tag.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => rest,
        _ => no_tag,
    };
    path.strip_prefix("library/").unwrap_or(path)
}

/// `v2` of `v2`, `v2-mysql`; `None` unless it starts with `v` and a digit.
fn version_of(suffix: &str) -> Option<String> {
    let v = suffix.split('-').next().unwrap_or("");
    (v.len() > 1 && v.starts_with('v') && v[1..].chars().all(|c| c.is_ascii_digit()))
        .then(|| v.to_string())
}

impl StandIn {
    /// The stand-in for `image` (see the module's table).
    pub fn from_image(image: &str) -> Self {
        let name = image_name(image);
        let last = name.rsplit('/').next().unwrap_or(name);
        let versioned = |prefix: &str| last.strip_prefix(prefix).and_then(version_of);
        if last.starts_with("examples-bookinfo-productpage") {
            StandIn::ProductPage
        } else if let Some(version) = versioned("examples-bookinfo-details-") {
            StandIn::Details { version }
        } else if let Some(version) = versioned("examples-bookinfo-reviews-") {
            StandIn::Reviews { version }
        } else if let Some(version) = versioned("examples-bookinfo-ratings-") {
            StandIn::Ratings { version }
        } else if let Some(version) = versioned("examples-helloworld-") {
            StandIn::HelloWorld { version }
        } else if IDLE_IMAGES.contains(&last) {
            StandIn::Idle
        } else {
            StandIn::Echo
        }
    }

    /// The ports it listens on when no `--port` is given.
    pub fn default_ports(&self) -> &'static [u16] {
        match self {
            StandIn::ProductPage
            | StandIn::Details { .. }
            | StandIn::Reviews { .. }
            | StandIn::Ratings { .. } => &[bookinfo::PORT],
            StandIn::HelloWorld { .. } => &[helloworld::PORT],
            StandIn::Echo => &[8080],
            StandIn::Idle => &[],
        }
    }

    /// The environment the real image sets.
    pub fn image_env(&self) -> Vec<(&'static str, String)> {
        match self {
            StandIn::Reviews { version } => vec![
                ("SERVICE_VERSION", version.clone()),
                ("ENABLE_RATINGS", (version != "v1").to_string()),
                (
                    "STAR_COLOR",
                    if version == "v3" { "red" } else { "black" }.to_string(),
                ),
            ],
            StandIn::Ratings { version } | StandIn::HelloWorld { version } => {
                vec![("SERVICE_VERSION", version.clone())]
            }
            _ => Vec::new(),
        }
    }

    /// For logs: `reviews v2`, `idle`, `echo`.
    pub fn describe(&self) -> String {
        match self {
            StandIn::ProductPage => "productpage".into(),
            StandIn::Details { version } => format!("details {version}"),
            StandIn::Reviews { version } => format!("reviews {version}"),
            StandIn::Ratings { version } => format!("ratings {version}"),
            StandIn::HelloWorld { version } => format!("helloworld {version}"),
            StandIn::Idle => "idle".into(),
            StandIn::Echo => "echo".into(),
        }
    }
}

/// What `isthmus app run` is told.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub image: String,
    pub pod: String,
    pub namespace: String,
    pub cluster: String,
    /// The address every port is bound on (`0.0.0.0` in a pod).
    pub address: IpAddr,
    /// The container's ports; none: the stand-in's default.
    pub ports: Vec<u16>,
    /// The container's environment, in order (later wins).
    pub env: Vec<(String, String)>,
    /// The pod's labels (`app` and `version` name the echo's service and version).
    pub labels: Vec<(String, String)>,
    /// A shell command line run instead of any stand-in.
    pub command: Option<String>,
    /// The container's command and args (only given to `command`, as `"$@"`).
    pub args: Vec<String>,
}

impl RunOptions {
    /// `image` in `pod`, namespace `default`, on 0.0.0.0 and the stand-in's default ports.
    pub fn new(image: impl Into<String>, pod: impl Into<String>) -> Self {
        Self {
            image: image.into(),
            pod: pod.into(),
            namespace: "default".into(),
            cluster: String::new(),
            address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ports: Vec::new(),
            env: Vec::new(),
            labels: Vec::new(),
            command: None,
            args: Vec::new(),
        }
    }

    /// The environment `stand_in` reads (see the module's doc).
    pub fn env_for(&self, stand_in: &StandIn) -> Env {
        let mut env = Env::from_pairs(stand_in.image_env());
        env.set("HOSTNAME", self.pod.clone());
        if !self.cluster.is_empty() {
            env.set("CLUSTER_NAME", self.cluster.clone());
        }
        for (k, v) in &self.env {
            env.set(k.clone(), v.clone());
        }
        env
    }

    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Who the echo says it is: service from the `app` label (else the image's name),
    /// version from the `version` label (else `SERVICE_VERSION`).
    pub fn identity(&self, env: &Env) -> Identity {
        let image = image_name(&self.image);
        Identity {
            service: self
                .label("app")
                .or_else(|| self.label("app.kubernetes.io/name"))
                .unwrap_or_else(|| image.rsplit('/').next().unwrap_or(image))
                .to_string(),
            version: self
                .label("version")
                .or_else(|| env.get("SERVICE_VERSION"))
                .unwrap_or("")
                .to_string(),
            pod: self.pod.clone(),
            cluster: self.cluster.clone(),
        }
    }

    fn addrs(&self, stand_in: &StandIn) -> Vec<SocketAddr> {
        let ports = if self.ports.is_empty() {
            stand_in.default_ports()
        } else {
            &self.ports
        };
        ports
            .iter()
            .map(|&p| SocketAddr::new(self.address, p))
            .collect()
    }
}

/// `K=V` (for `--env` and `--label`).
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// The router of a serving stand-in.
fn router(stand_in: &StandIn, opts: &RunOptions, env: &Env) -> axum::Router {
    match stand_in {
        StandIn::ProductPage => productpage::router(productpage::ProductPageConfig::from_env(env)),
        StandIn::Details { .. } => bookinfo::details::router(),
        StandIn::Reviews { .. } => reviews::router(reviews::ReviewsConfig::from_env(env)),
        StandIn::Ratings { .. } => {
            bookinfo::ratings::router(env.get("SERVICE_VERSION").unwrap_or("v1"))
        }
        StandIn::HelloWorld { .. } => helloworld::router(helloworld::HelloConfig::from_env(env)),
        StandIn::Echo | StandIn::Idle => {
            echo::router(opts.identity(env), axum::http::StatusCode::OK)
        }
    }
}

/// A stand-in that has started: bound to its ports, idle, or a command running.
pub enum Started {
    Serving {
        stand_in: StandIn,
        server: Server,
    },
    Idle,
    Command {
        command: String,
        child: tokio::process::Child,
    },
}

/// Starts what `opts` says: binds the stand-in's ports or spawns `--command`.
pub async fn start(opts: &RunOptions) -> Result<Started, Error> {
    if let Some(command) = &opts.command {
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c").arg(command).arg("sh").args(&opts.args);
        cmd.env("HOSTNAME", &opts.pod);
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
        tracing::info!(%command, pod = %opts.pod, "running the given command instead of a stand-in");
        return Ok(Started::Command {
            command: command.clone(),
            child,
        });
    }
    let stand_in = StandIn::from_image(&opts.image);
    if stand_in == StandIn::Idle {
        tracing::info!(image = %opts.image, pod = %opts.pod, "idle until stopped");
        return Ok(Started::Idle);
    }
    let env = opts.env_for(&stand_in);
    let server = Server::bind(&opts.addrs(&stand_in), router(&stand_in, opts, &env)).await?;
    tracing::info!(
        stand_in = %stand_in.describe(),
        image = %opts.image,
        pod = %opts.pod,
        namespace = %opts.namespace,
        cluster = %opts.cluster,
        addresses = ?server.local_addrs(),
        "serving"
    );
    Ok(Started::Serving { stand_in, server })
}

impl Started {
    /// Where it listens (none unless serving).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        match self {
            Started::Serving { server, .. } => server.local_addrs(),
            _ => Vec::new(),
        }
    }

    /// Serves or idles until `shutdown`, or waits for the command: the exit code.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<i32, Error> {
        match self {
            Started::Serving { server, .. } => server.serve(shutdown).await.map(|()| 0),
            Started::Idle => {
                shutdown.await;
                Ok(0)
            }
            Started::Command { command, mut child } => {
                let status = child.wait().await.map_err(|source| Error::Wait {
                    command: command.clone(),
                    source,
                })?;
                use std::os::unix::process::ExitStatusExt as _;
                let code = status
                    .code()
                    .or_else(|| status.signal().map(|s| 128 + s))
                    .unwrap_or(1);
                tracing::info!(%command, code, "command exited");
                Ok(code)
            }
        }
    }
}

/// [`start`], then [`Started::run`].
pub async fn run(
    opts: &RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<i32, Error> {
    start(opts).await?.run(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bookinfo::ratings;
    use crate::testing::{get_json, get_text, serve};

    const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/istio/samples");

    /// One container of a Deployment in a sample manifest.
    struct Container {
        deployment: String,
        image: String,
        ports: Vec<u16>,
        env: Vec<(String, String)>,
        labels: Vec<(String, String)>,
    }

    fn containers(file: &str) -> Vec<Container> {
        let path = format!("{SAMPLES}/{file}");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut out = Vec::new();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let doc = <serde_yaml_ng::Value as serde::Deserialize>::deserialize(doc).unwrap();
            if doc["kind"].as_str() != Some("Deployment") {
                continue;
            }
            let template = &doc["spec"]["template"];
            let labels: Vec<(String, String)> = template["metadata"]["labels"]
                .as_mapping()
                .into_iter()
                .flatten()
                .map(|(k, v)| {
                    (
                        k.as_str().unwrap().to_string(),
                        v.as_str().unwrap().to_string(),
                    )
                })
                .collect();
            for c in template["spec"]["containers"].as_sequence().unwrap() {
                out.push(Container {
                    deployment: doc["metadata"]["name"].as_str().unwrap().to_string(),
                    image: c["image"].as_str().unwrap().to_string(),
                    ports: c["ports"]
                        .as_sequence()
                        .into_iter()
                        .flatten()
                        .map(|p| p["containerPort"].as_u64().unwrap() as u16)
                        .collect(),
                    env: c["env"]
                        .as_sequence()
                        .into_iter()
                        .flatten()
                        .map(|e| {
                            (
                                e["name"].as_str().unwrap().to_string(),
                                e["value"].as_str().unwrap_or_default().to_string(),
                            )
                        })
                        .collect(),
                    labels: labels.clone(),
                });
            }
        }
        out
    }

    fn sample_containers() -> Vec<Container> {
        [
            "bookinfo/platform/kube/bookinfo.yaml",
            "helloworld/helloworld.yaml",
            "curl/curl.yaml",
            "sleep/sleep.yaml",
        ]
        .into_iter()
        .flat_map(containers)
        .collect()
    }

    fn v(s: &str) -> String {
        s.to_string()
    }

    #[test]
    fn dispatch_of_istios_sample_manifests() {
        let mut seen = Vec::new();
        for c in sample_containers() {
            let expected = match c.deployment.as_str() {
                "productpage-v1" => StandIn::ProductPage,
                "details-v1" => StandIn::Details { version: v("v1") },
                "ratings-v1" => StandIn::Ratings { version: v("v1") },
                "reviews-v1" => StandIn::Reviews { version: v("v1") },
                "reviews-v2" => StandIn::Reviews { version: v("v2") },
                "reviews-v3" => StandIn::Reviews { version: v("v3") },
                "helloworld-v1" => StandIn::HelloWorld { version: v("v1") },
                "helloworld-v2" => StandIn::HelloWorld { version: v("v2") },
                "curl" | "sleep" => StandIn::Idle,
                other => panic!("unexpected deployment {other} ({})", c.image),
            };
            let stand_in = StandIn::from_image(&c.image);
            assert_eq!(stand_in, expected, "{}", c.image);
            // The stand-in listens where the manifest says the container does.
            assert_eq!(stand_in.default_ports(), &c.ports[..], "{}", c.deployment);
            seen.push(c.deployment);
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                "curl",
                "details-v1",
                "helloworld-v1",
                "helloworld-v2",
                "productpage-v1",
                "ratings-v1",
                "reviews-v1",
                "reviews-v2",
                "reviews-v3",
                "sleep"
            ]
        );
    }

    #[test]
    fn dispatch_of_other_images() {
        for (image, expected) in [
            (
                "docker.io/istio/examples-bookinfo-details-v2:1.20.3",
                StandIn::Details { version: v("v2") },
            ),
            (
                "examples-bookinfo-ratings-v2-mysql@sha256:0123",
                StandIn::Ratings { version: v("v2") },
            ),
            (
                "localhost:5000/examples-helloworld-v2",
                StandIn::HelloWorld { version: v("v2") },
            ),
            ("curlimages/curl", StandIn::Idle),
            ("curl", StandIn::Idle),
            ("governmentpaas/curl-ssl:latest", StandIn::Idle),
            ("docker.io/library/busybox:1.36", StandIn::Idle),
            ("sleep", StandIn::Idle),
            ("docker.io/mccutchen/go-httpbin:v2.15.0", StandIn::Echo),
            ("examples-bookinfo-reviews-latest", StandIn::Echo),
            ("registry:5000/team/app", StandIn::Echo),
        ] {
            assert_eq!(StandIn::from_image(image), expected, "{image}");
        }
        assert_eq!(
            image_name("registry.istio.io/release/examples-bookinfo-details-v1:1.20.3"),
            "release/examples-bookinfo-details-v1"
        );
        assert_eq!(
            image_name("docker.io/curlimages/curl:8.16.0"),
            "curlimages/curl"
        );
        assert_eq!(image_name("registry:5000/team/app"), "team/app");
    }

    #[test]
    fn environment_image_then_pod_then_env_flags() {
        let mut opts = RunOptions::new("examples-bookinfo-reviews-v3:1", "reviews-v3-abc");
        opts.cluster = "cluster2".into();
        opts.env = vec![(v("LOG_DIR"), v("/tmp/logs")), (v("STAR_COLOR"), v("blue"))];
        let env = opts.env_for(&StandIn::from_image(&opts.image));
        assert_eq!(env.get("SERVICE_VERSION"), Some("v3"));
        assert_eq!(env.get("ENABLE_RATINGS"), Some("true"));
        assert_eq!(env.get("STAR_COLOR"), Some("blue"));
        assert_eq!(env.get("HOSTNAME"), Some("reviews-v3-abc"));
        assert_eq!(env.get("CLUSTER_NAME"), Some("cluster2"));
        assert_eq!(env.get("LOG_DIR"), Some("/tmp/logs"));
        assert_eq!(parse_key_value("A=b=c"), Ok((v("A"), v("b=c"))));
        assert_eq!(parse_key_value("A="), Ok((v("A"), v(""))));
        assert!(parse_key_value("=x").is_err());
        assert!(parse_key_value("A").is_err());
    }

    fn loopback(mut opts: RunOptions, ports: usize) -> RunOptions {
        opts.address = IpAddr::V4(Ipv4Addr::LOCALHOST);
        opts.ports = vec![0; ports];
        opts
    }

    /// Serves `opts` until the returned sender is dropped; its addresses.
    async fn serve_opts(opts: RunOptions) -> (Vec<SocketAddr>, tokio::sync::oneshot::Sender<()>) {
        let started = start(&opts).await.unwrap();
        let addrs = started.local_addrs();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(started.run(async move {
            let _ = rx.await;
        }));
        (addrs, tx)
    }

    #[tokio::test]
    async fn helloworld_from_the_sample_manifest() {
        let c = sample_containers()
            .into_iter()
            .find(|c| c.deployment == "helloworld-v2")
            .unwrap();
        let mut opts = RunOptions::new(c.image, "helloworld-v2-6746879bdd-xk2tq");
        opts.env = c.env;
        opts.labels = c.labels;
        let (addrs, _stop) = serve_opts(loopback(opts, 1)).await;
        let (status, body) = get_text(&format!("http://{}/hello", addrs[0])).await;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            "Hello version: v2, instance: helloworld-v2-6746879bdd-xk2tq\n"
        );
    }

    #[tokio::test]
    async fn reviews_v3_from_its_image_reads_ratings_address_from_env() {
        let (ratings_url, _s1) = serve(ratings::router("v1")).await;
        let port = ratings_url.rsplit(':').next().unwrap().to_string();
        let mut opts = RunOptions::new(
            "registry.istio.io/release/examples-bookinfo-reviews-v3:1.20.3",
            "reviews-v3-1",
        );
        opts.env = vec![
            (v("RATINGS_HOSTNAME"), v("127.0.0.1")),
            (v("RATINGS_SERVICE_PORT"), port),
        ];
        let (addrs, _s2) = serve_opts(loopback(opts, 1)).await;
        let (status, body) = get_json(&format!("http://{}/reviews/0", addrs[0]), &[]).await;
        assert_eq!(status, 200);
        assert_eq!(body["reviews"][0]["rating"]["color"], "red");
        assert_eq!(body["reviews"][1]["rating"]["stars"], 4);
        assert_eq!(body["podname"], "reviews-v3-1");
        assert_eq!(body["clustername"], "null");
    }

    #[tokio::test]
    async fn other_images_echo_on_every_port() {
        let mut opts = RunOptions::new("docker.io/mccutchen/go-httpbin:v2.15.0", "httpbin-1");
        opts.cluster = "c1".into();
        opts.labels = vec![(v("app"), v("httpbin")), (v("version"), v("v1"))];
        let (addrs, _stop) = serve_opts(loopback(opts, 2)).await;
        assert_eq!(addrs.len(), 2);
        for addr in addrs {
            let (status, body) = get_text(&format!("http://{addr}/get")).await;
            assert_eq!(status, 200);
            assert_eq!(
                body.lines().next(),
                Some("service=httpbin version=v1 pod=httpbin-1 cluster=c1")
            );
        }
    }

    #[tokio::test]
    async fn clients_idle_until_stopped() {
        let opts = RunOptions::new("docker.io/curlimages/curl:8.16.0", "curl-1");
        let started = start(&opts).await.unwrap();
        assert!(matches!(started, Started::Idle));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(started.run(async move {
            let _ = rx.await;
        }));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!task.is_finished());
        drop(tx);
        assert_eq!(task.await.unwrap().unwrap(), 0);
    }

    #[tokio::test]
    async fn command_runs_instead_with_env_and_args_and_its_exit_code() {
        let mut opts = RunOptions::new("examples-bookinfo-details-v1", "details-v1-1");
        opts.env = vec![(v("FOO"), v("bar"))];
        opts.command = Some(
            r#"test "$HOSTNAME" = details-v1-1 && test "$FOO" = bar && test "$*" = "/bin/sleep infinity" && exit 3; exit 1"#
                .into(),
        );
        opts.args = vec![v("/bin/sleep"), v("infinity")];
        assert_eq!(run(&opts, std::future::pending()).await.unwrap(), 3);
        opts.command = Some("kill -TERM $$".into());
        assert_eq!(run(&opts, std::future::pending()).await.unwrap(), 128 + 15);
    }
}
