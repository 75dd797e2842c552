//! The registry over manifest directories: derivation, networks, gateways, events.

use std::fs;
use std::path::Path;

use isthmus_model::{ClusterId, Hostname, MeshConfig};
use isthmus_registry::load::load;
use isthmus_registry::{Address, Health, ManifestSource, Registry};

struct Mesh {
    dir: tempfile::TempDir,
}

impl Mesh {
    fn new(mesh_yaml: &str, clusters: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for c in clusters {
            fs::create_dir_all(dir.path().join(c)).unwrap();
        }
        fs::write(dir.path().join("mesh.yaml"), mesh_yaml).unwrap();
        Self { dir }
    }
    fn write(&self, rel: &str, text: &str) {
        let p = self.dir.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
    fn mesh(&self) -> MeshConfig {
        MeshConfig::load(&self.dir.path().join("mesh.yaml")).unwrap()
    }
    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join(rel)
    }
}

const TWO_CLUSTERS: &str = "
clusters:
- name: c1
  source: {manifests: c1}
- name: c2
  source: {manifests: c2}
meshNetworks:
  networks:
    net-a:
      endpoints: [{fromRegistry: c1}]
      gateways:
      - registryServiceName: istio-eastwestgateway.istio-system.svc.cluster.local
        port: 15443
    net-b:
      endpoints: [{fromCidr: 198.19.0.0/16}]
      gateways:
      - address: 203.0.113.99
        port: 15443
";

fn pod(name: &str, ns: &str, labels: &str, ip: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {labels}\nspec:\n  serviceAccountName: sa-{name}\n  nodeName: node-1\n  containers:\n  - name: app\n    image: x\n    ports:\n    - {{containerPort: 9080, name: web}}\nstatus:\n  podIP: {ip}\n{extra}---\n"
    )
}

const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: reviews\n  namespace: bookinfo\nspec:\n  clusterIP: 198.18.100.1\n  selector: {app: reviews}\n  ports:\n  - {name: http, port: 9080, targetPort: web}\n---\n";

const NODE: &str = "apiVersion: v1\nkind: Node\nmetadata:\n  name: node-1\n  labels:\n    topology.kubernetes.io/region: us-east\n    topology.kubernetes.io/zone: us-east-1a\n---\n";

fn reviews(reg: &Registry) -> std::sync::Arc<isthmus_registry::Service> {
    reg.snapshot()
        .service("reviews.bookinfo.svc.cluster.local")
        .cloned()
        .expect("reviews is in the registry")
}

#[test]
fn endpoints_are_derived_from_pods_with_their_cluster_network_locality_and_identity() {
    let m = Mesh::new(TWO_CLUSTERS, &["c1", "c2"]);
    let not_ready = "  conditions:\n  - {type: Ready, status: \"False\"}\n";
    m.write(
        "c1/app.yaml",
        &format!(
            "{SVC}{NODE}{}{}{}",
            pod(
                "reviews-v1-a",
                "bookinfo",
                "{app: reviews, version: v1}",
                "198.18.0.10",
                ""
            ),
            pod(
                "reviews-v2-b",
                "bookinfo",
                "{app: reviews, version: v2}",
                "198.18.0.11",
                not_ready
            ),
            pod(
                "ratings-v1-c",
                "bookinfo",
                "{app: ratings}",
                "198.18.0.12",
                ""
            )
        ),
    );
    m.write(
        "c2/app.yaml",
        &format!(
            "{SVC}{}",
            pod(
                "reviews-v3-d",
                "bookinfo",
                "{app: reviews, version: v3}",
                "198.19.0.20",
                ""
            )
        ),
    );
    let loaded = load(&m.mesh());
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    let svc = reviews(&loaded.registry);
    assert_eq!(svc.clusters.len(), 2);
    let eps: Vec<_> = svc.endpoints().collect();
    assert_eq!(eps.len(), 3);
    let v1 = eps
        .iter()
        .find(|e| e.workload.as_deref() == Some("reviews-v1-a"))
        .unwrap();
    assert_eq!(v1.address.to_string(), "198.18.0.10");
    assert_eq!(
        v1.ports.as_slice(),
        &[(isthmus_model::intern("http"), 9080)],
        "named targetPort resolves to the container port"
    );
    assert_eq!(v1.cluster.as_str(), "c1");
    assert_eq!(v1.network.as_str(), "net-a", "fromRegistry");
    assert_eq!(v1.locality.to_string(), "us-east/us-east-1a/");
    assert_eq!(
        &*v1.identity,
        "spiffe://cluster.local/ns/bookinfo/sa/sa-reviews-v1-a"
    );
    assert_eq!(
        v1.labels
            .get(&isthmus_model::intern("topology.istio.io/cluster"))
            .map(|v| &**v),
        Some("c1")
    );
    assert_eq!(
        v1.labels
            .get(&isthmus_model::intern("topology.istio.io/network"))
            .map(|v| &**v),
        Some("net-a")
    );
    assert_eq!(v1.health, Health::Healthy);
    let v2 = eps
        .iter()
        .find(|e| e.workload.as_deref() == Some("reviews-v2-b"))
        .unwrap();
    assert_eq!(v2.health, Health::Unhealthy);
    let v3 = eps.iter().find(|e| e.cluster.as_str() == "c2").unwrap();
    assert_eq!(v3.network.as_str(), "net-b", "fromCidr");
    assert_eq!(v3.locality.to_string(), "", "no node object: no locality");
}

#[test]
fn network_resolution_follows_istio_order() {
    let yaml = "
clusters:
- name: c1
  network: from-mesh-yaml
  source: {manifests: c1}
- name: c2
  source: {manifests: c2}
meshNetworks:
  networks:
    from-registry:
      endpoints: [{fromRegistry: c1}, {fromRegistry: c2}]
";
    let m = Mesh::new(yaml, &["c1", "c2"]);
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: istio-system\n  labels: {topology.istio.io/network: from-namespace}\n---\n";
    m.write(
        "c1/a.yaml",
        &format!(
            "{SVC}{}{}",
            pod(
                "p1",
                "bookinfo",
                "{app: reviews, topology.istio.io/network: from-pod}",
                "198.18.0.1",
                ""
            ),
            pod("p2", "bookinfo", "{app: reviews}", "198.18.0.2", "")
        ),
    );
    m.write(
        "c2/a.yaml",
        &format!(
            "{SVC}{}",
            pod("p3", "bookinfo", "{app: reviews}", "198.18.0.3", "")
        ),
    );
    let mesh = m.mesh();
    let loaded = load(&mesh);
    let net = |w: &str| {
        reviews(&loaded.registry)
            .endpoints()
            .find(|e| e.workload.as_deref() == Some(w))
            .unwrap()
            .network
            .to_string()
    };
    assert_eq!(net("p1"), "from-pod");
    assert_eq!(net("p2"), "from-mesh-yaml");
    assert_eq!(net("p3"), "from-registry");
    // The system namespace's label comes before mesh.yaml and meshNetworks.
    m.write("c1/ns.yaml", ns);
    let loaded = load(&mesh);
    let net = |w: &str| {
        reviews(&loaded.registry)
            .endpoints()
            .find(|e| e.workload.as_deref() == Some(w))
            .unwrap()
            .network
            .to_string()
    };
    assert_eq!(net("p1"), "from-pod");
    assert_eq!(net("p2"), "from-namespace");
}

#[test]
fn endpoint_slices_come_before_pods_and_endpoints() {
    let m = Mesh::new(TWO_CLUSTERS, &["c1", "c2"]);
    let slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: reviews-x1\n  namespace: bookinfo\n  labels: {kubernetes.io/service-name: reviews}\naddressType: IPv4\nports: [{name: http, port: 9080}]\nendpoints:\n- addresses: [198.18.0.10]\n  conditions: {ready: true}\n  targetRef: {kind: Pod, name: reviews-v1-a, namespace: bookinfo}\n- addresses: [198.18.0.50]\n  conditions: {ready: false, serving: true, terminating: true}\n  zone: z9\n---\n";
    let endpoints = "apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: reviews\n  namespace: bookinfo\nsubsets:\n- addresses: [{ip: 198.18.0.77}]\n  ports: [{name: http, port: 9080}]\n";
    m.write(
        "c1/a.yaml",
        &format!(
            "{SVC}{}{slice}{endpoints}",
            pod(
                "reviews-v1-a",
                "bookinfo",
                "{app: reviews, version: v1}",
                "198.18.0.10",
                ""
            )
        ),
    );
    let loaded = load(&m.mesh());
    let svc = reviews(&loaded.registry);
    let eps: Vec<_> = svc.endpoints().collect();
    assert_eq!(eps.len(), 2, "{eps:?}");
    assert_eq!(eps[0].workload.as_deref(), Some("reviews-v1-a"));
    assert_eq!(
        eps[0]
            .labels
            .get(&isthmus_model::intern("version"))
            .map(|v| &**v),
        Some("v1"),
        "joined with its pod"
    );
    assert_eq!(eps[1].health, Health::Draining);
    assert_eq!(eps[1].locality.zone, "z9");
    // Without slices, the Endpoints object is used.
    m.write("c1/a.yaml", &format!("{SVC}{endpoints}"));
    let loaded = load(&m.mesh());
    let eps: Vec<_> = reviews(&loaded.registry)
        .endpoints()
        .map(|e| e.address.to_string())
        .collect();
    assert_eq!(eps, ["198.18.0.77"]);
}

#[test]
fn gateways_come_from_labelled_services_and_mesh_networks() {
    let m = Mesh::new(TWO_CLUSTERS, &["c1", "c2"]);
    let gw = "apiVersion: v1\nkind: Service\nmetadata:\n  name: istio-eastwestgateway\n  namespace: istio-system\n  labels: {topology.istio.io/network: net-a}\nspec:\n  type: LoadBalancer\n  ports: [{name: tls, port: 15443}]\nstatus:\n  loadBalancer:\n    ingress: [{ip: 203.0.113.10}, {hostname: gw.example.test}]\n";
    let gw2 = "apiVersion: v1\nkind: Service\nmetadata:\n  name: eastwest\n  namespace: istio-system\n  labels: {topology.istio.io/network: net-b, networking.istio.io/gatewayPort: '16443'}\nspec:\n  externalIPs: [203.0.113.20]\n  ports: [{name: tls, port: 16443}]\n";
    m.write("c1/gw.yaml", gw);
    m.write("c2/gw.yaml", gw2);
    let loaded = load(&m.mesh());
    let gws: Vec<String> = loaded
        .registry
        .snapshot()
        .gateways
        .iter()
        .map(|g| {
            format!(
                "{} {}:{} {:?} {}",
                g.network,
                g.address,
                g.port,
                g.cluster.as_ref().map(|c| c.as_str()),
                g.source
            )
        })
        .collect();
    assert_eq!(
        gws,
        [
            "net-a 203.0.113.10:15443 Some(\"c1\") Service istio-system/istio-eastwestgateway; meshNetworks registryServiceName istio-eastwestgateway.istio-system.svc.cluster.local",
            "net-a gw.example.test:15443 Some(\"c1\") Service istio-system/istio-eastwestgateway; meshNetworks registryServiceName istio-eastwestgateway.istio-system.svc.cluster.local",
            "net-b 203.0.113.20:16443 Some(\"c2\") Service istio-system/eastwest",
            "net-b 203.0.113.99:15443 None meshNetworks",
        ]
    );
    // A hostname, once resolved, is replaced by its addresses; an unchanged answer is no event.
    let mut reg = loaded.registry;
    assert_eq!(
        reg.gateway_hostnames().into_iter().collect::<Vec<_>>(),
        ["gw.example.test"]
    );
    let ev = reg.set_resolved("gw.example.test", vec!["203.0.113.11".parse().unwrap()]);
    assert!(ev.gateways);
    assert!(
        reg.snapshot()
            .gateways
            .iter()
            .any(|g| g.address == Address::Ip("203.0.113.11".parse().unwrap()))
    );
    assert!(
        !reg.snapshot()
            .gateways
            .iter()
            .any(|g| matches!(g.address, Address::Dns(_)))
    );
    assert!(
        reg.set_resolved("gw.example.test", vec!["203.0.113.11".parse().unwrap()])
            .is_empty()
    );
}

#[test]
fn visibility_export_to_and_cluster_local() {
    let yaml = "
clusters:
- name: c1
  source: {manifests: c1}
serviceSettings:
- settings: {clusterLocal: true}
  hosts: ['*.kube-system.svc.cluster.local']
";
    let m = Mesh::new(yaml, &["c1"]);
    m.write("c1/a.yaml", "apiVersion: v1\nkind: Service\nmetadata:\n  name: private\n  namespace: team\n  annotations: {networking.istio.io/exportTo: '.'}\nspec:\n  ports: [{port: 80, name: http}]\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: kube-dns\n  namespace: kube-system\nspec:\n  ports: [{port: 53, name: dns}]\n");
    let snap = load(&m.mesh()).registry.snapshot();
    let private = &snap
        .service("private.team.svc.cluster.local")
        .unwrap()
        .clusters[&ClusterId::new("c1")];
    assert!(private.visible_to_namespace("team"));
    assert!(!private.visible_to_namespace("other"));
    assert!(
        snap.service("kube-dns.kube-system.svc.cluster.local")
            .unwrap()
            .clusters[&ClusterId::new("c1")]
            .cluster_local
    );
}

#[test]
fn service_entries_from_config_clusters_become_services() {
    let m = Mesh::new(TWO_CLUSTERS, &["c1", "c2"]);
    let se = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: vms\n  namespace: bookinfo\nspec:\n  hosts: [ratings.vm.internal]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 9080, name: http, protocol: HTTP}]\n  workloadSelector:\n    labels: {app: ratings-vm}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: vm-1\n  namespace: bookinfo\nspec:\n  address: 198.18.9.9\n  labels: {app: ratings-vm}\n  serviceAccount: ratings\n  network: vm-net\n";
    m.write("c1/se.yaml", se);
    m.write("c2/se.yaml", se); // c2 is not a config cluster: ignored
    let snap = load(&m.mesh()).registry.snapshot();
    let svc = snap
        .service("ratings.vm.internal")
        .expect("the ServiceEntry host is a service");
    assert_eq!(svc.clusters.len(), 1);
    let eps: Vec<_> = svc.endpoints().collect();
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].network.as_str(), "vm-net");
    assert_eq!(
        &*eps[0].identity,
        "spiffe://cluster.local/ns/bookinfo/sa/ratings"
    );
    assert!(
        snap.config
            .keys()
            .any(|k| k.kind == isthmus_model::Kind::ServiceEntry)
    );
}

#[test]
fn events_name_exactly_what_a_proxy_could_see_change() {
    let m = Mesh::new(TWO_CLUSTERS, &["c1", "c2"]);
    let p =
        |labels: &str, extra: &str| pod("reviews-v1-a", "bookinfo", labels, "198.18.0.10", extra);
    m.write("c1/svc.yaml", SVC);
    m.write("c1/pod.yaml", &p("{app: reviews, version: v1}", ""));
    let mesh = m.mesh();
    let c1 = ClusterId::new("c1");
    let mut source = ManifestSource::new(c1.clone(), m.path("c1"), "cluster.local");
    let mut reg = Registry::new(&mesh);
    let ev = reg.apply(&c1, source.rescan(&[]).unwrap());
    assert_eq!(
        ev.services.keys().map(Hostname::as_str).collect::<Vec<_>>(),
        ["reviews.bookinfo.svc.cluster.local"]
    );

    // An annotation is nothing a proxy sees.
    let annotated = p("{app: reviews, version: v1}", "").replace(
        "  namespace: bookinfo\n",
        "  namespace: bookinfo\n  annotations: {note: x}\n",
    );
    m.write("c1/pod.yaml", &annotated);
    let ev = reg.apply(&c1, source.rescan(&[m.path("c1/pod.yaml")]).unwrap());
    assert!(ev.is_empty(), "{ev:?}");

    // Readiness is.
    m.write(
        "c1/pod.yaml",
        &p(
            "{app: reviews, version: v1}",
            "  conditions: [{type: Ready, status: 'False'}]\n",
        ),
    );
    let ev = reg.apply(&c1, source.rescan(&[m.path("c1/pod.yaml")]).unwrap());
    assert_eq!(ev.services.len(), 1);
    assert_eq!(
        ev.services
            .values()
            .next()
            .unwrap()
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>(),
        ["c1"]
    );

    // A label change that moves the pod out of the selector removes the endpoint.
    m.write("c1/pod.yaml", &p("{app: other}", ""));
    let ev = reg.apply(&c1, source.rescan(&[m.path("c1/pod.yaml")]).unwrap());
    assert_eq!(ev.services.len(), 1);
    assert_eq!(reviews(&reg).endpoints().count(), 0);
}

#[test]
fn a_broken_document_keeps_its_last_good_version_and_the_rest_keeps_working() {
    let m = Mesh::new(TWO_CLUSTERS, &["c1", "c2"]);
    let vs = |weight: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\n  namespace: bookinfo\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {{host: reviews}}\n      weight: {weight}\n"
        )
    };
    m.write("c1/a.yaml", &format!("{SVC}{}", vs("100")));
    let mesh = m.mesh();
    let c1 = ClusterId::new("c1");
    let mut source = ManifestSource::new(c1.clone(), m.path("c1"), "cluster.local");
    let mut reg = Registry::new(&mesh);
    reg.apply(&c1, source.rescan(&[]).unwrap());
    let before = reg.snapshot().config.clone();
    assert_eq!(before.len(), 1);

    m.write("c1/a.yaml", &format!("{SVC}{}", vs("[not, a, number]")));
    let ev = reg.apply(&c1, source.rescan(&[m.path("c1/a.yaml")]).unwrap());
    assert!(ev.is_empty(), "the last good VirtualService stays: {ev:?}");
    assert_eq!(reg.snapshot().config, before);
    let diags = source.diagnostics();
    assert!(
        diags
            .iter()
            .any(|d| d.field.as_deref() == Some("spec.http[0].route[0].weight")),
        "{diags:?}"
    );
    assert!(diags.iter().any(|d| d.code == "ISM0005"), "{diags:?}");
    assert!(
        reg.snapshot()
            .service("reviews.bookinfo.svc.cluster.local")
            .is_some()
    );

    // A syntax error in the same document also keeps it.
    m.write(
        "c1/a.yaml",
        &format!(
            "{SVC}{}",
            vs("100").replace("hosts: [reviews]", "hosts: [reviews")
        ),
    );
    let ev = reg.apply(&c1, source.rescan(&[m.path("c1/a.yaml")]).unwrap());
    assert!(ev.is_empty(), "{ev:?}");

    // A missing directory keeps everything and says so.
    fs::remove_dir_all(m.path("c1")).unwrap();
    let err = source.rescan(&[]).unwrap_err().to_string();
    assert!(
        err.contains("cluster c1") && err.contains("keeping its last known state"),
        "{err}"
    );
    assert!(
        reg.snapshot()
            .service("reviews.bookinfo.svc.cluster.local")
            .is_some()
    );
}

#[test]
fn duplicate_objects_across_files_are_reported_and_the_first_file_wins() {
    let m = Mesh::new(TWO_CLUSTERS, &["c1", "c2"]);
    m.write("c1/a.yaml", SVC);
    m.write("c1/b.yaml", &SVC.replace("198.18.100.1", "198.18.100.2"));
    let loaded = load(&m.mesh());
    assert!(
        loaded.diagnostics.iter().any(|(_, d)| d.code == "ISM0004"
            && d.file.as_deref() == Some(Path::new(&m.path("c1/b.yaml")))),
        "{:?}",
        loaded.diagnostics
    );
    let svc = reviews(&loaded.registry);
    assert_eq!(svc.clusters[&ClusterId::new("c1")].vips, ["198.18.100.1"]);
}

#[test]
fn service_entry_origin_names_the_resolution_as_istio_spells_it() {
    let m = Mesh::new(TWO_CLUSTERS, &["c1", "c2"]);
    m.write("c1/se.yaml", "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: ext\n  namespace: default\nspec:\n  hosts: [api.example.test]\n  resolution: DNS_ROUND_ROBIN\n  ports: [{number: 443, name: tls, protocol: TLS}]\n");
    let snap = load(&m.mesh()).registry.snapshot();
    let cs = &snap.service("api.example.test").unwrap().clusters[&ClusterId::new("c1")];
    match &cs.origin {
        isthmus_registry::Origin::ServiceEntry { resolution, .. } => {
            assert_eq!(resolution, "DNS_ROUND_ROBIN")
        }
        o => panic!("{o:?}"),
    }
}
