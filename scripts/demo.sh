#!/usr/bin/env bash
# The main job: sets up everything on a fresh machine (build, Envoy, iptables), brings
# the lab up — one cluster in network namespaces, a control plane, an ingress gateway,
# Istio's unmodified bookinfo with real Envoy sidecars — sends traffic through the
# ingress gateway and shows what answered, then routes with Istio's samples.
# Needs root (network namespaces, iptables). The lab stays up: `isthmus lab down`.
# Usage: sudo scripts/demo.sh
source "$(dirname "$0")/common.sh"
cd "$ROOT"
[ "$(id -u)" = 0 ] || die "the lab needs root (network namespaces and iptables): run sudo scripts/demo.sh"
ensure_build_tools
ensure_traffic_tools
ensure_envoy
ISTIO="${ISTHMUS_ISTIO_DIR:-$ROOT/../shared/istio}"
[ -d "$ISTIO/samples/bookinfo" ] || die "Istio's samples not found at $ISTIO: put them in ../shared/istio beside the checkout or set ISTHMUS_ISTIO_DIR"
export ISTHMUS_ISTIO_DIR="$ISTIO"
NET="$ISTIO/samples/bookinfo/networking"

say "building isthmus (release)"
cargo build --release --locked -q -p isthmus-cli
BIN="$ROOT/target/release/isthmus"

say "removing any earlier lab"
"$BIN" lab down >/dev/null
say "isthmus lab up -f bookinfo.yaml -f bookinfo-gateway.yaml -f curl.yaml"
"$BIN" lab up -f "$ISTIO/samples/bookinfo/platform/kube/bookinfo.yaml" \
    -f "$NET/bookinfo-gateway.yaml" -f "$ISTIO/samples/curl/curl.yaml"

page() { "$BIN" lab exec cluster1 istio-system/istio-ingressgateway -- curl -s -m 5 "$@" http://127.0.0.1:8080/productpage; }
stars() { grep -o 'Reviews served by: [^ ]*\|font color="[a-z]*"\|Ratings service is currently unavailable' | sort | uniq -c | sed 's/^/    /'; }

say "six requests through the ingress gateway (no routing rules: reviews v1, v2, v3 in turn)"
for i in 1 2 3 4 5 6; do echo "  request $i:"; page | stars; done

say "isthmus lab apply: destination-rule-all.yaml, virtual-service-reviews-jason-v2-v3.yaml"
"$BIN" lab apply cluster1 -f "$NET/destination-rule-all.yaml" -f "$NET/virtual-service-reviews-jason-v2-v3.yaml" | sed 's/^/  /'
sleep 0.5
echo "  anonymous (reviews v3, red stars):"
page | stars
echo "  logged in as jason (reviews v2, black stars):"
"$BIN" lab exec cluster1 istio-system/istio-ingressgateway -- sh -c \
    'curl -s -c /tmp/jar -o /dev/null -d "username=jason&passwd=jason" http://127.0.0.1:8080/login && curl -s -b /tmp/jar http://127.0.0.1:8080/productpage' | stars

say "the lab is up; try (no ISTHMUS_ENVOY needed: the lab remembers its Envoy, and finds $ROOT/.venv):"
cat <<MSG
  $BIN lab status
  $BIN lab apply cluster1 -f $NET/virtual-service-reviews-50-v3.yaml
  $BIN lab exec cluster1 default/curl -- curl -s http://reviews:9080/reviews/0
  $BIN lab load cluster1 default/curl http://reviews:9080/reviews/0 --rate 200 --duration 5s &
  $BIN lab scale cluster1 default/reviews-v2 --replicas 3
  $BIN lab exec cluster1 istio-system/istiod -- curl -s http://127.0.0.1:15014/debug/syncz
  $BIN lab logs cluster1 default/reviews-v2 -c istio-proxy
  $BIN lab down
MSG
