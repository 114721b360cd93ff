# Sourced by bench/run.sh and bench/scale.sh: three routed nats-servers
# with JetStream, on loopback.
#
#   start_nats_cluster NAME CLIENT_PORT ROUTE_PORT HTTP_PORT DIR [JETSTREAM]
#
# Node n (0-2) listens for clients on CLIENT_PORT+n, for routes on
# ROUTE_PORT+n and for monitoring on HTTP_PORT+n, keeps its files and log
# in DIR; JETSTREAM adds settings to its jetstream block. Needs
# $nats_server; sets cluster_pids and cluster_urls, and returns once every
# node answers /healthz (JetStream ready) and the JetStream meta group
# holds all three (else it starts the cluster again, at most three times).
start_nats_cluster() {
  local attempt
  for attempt in 1 2 3; do
    launch_nats_cluster "$@"
    meta_group_whole "$4" && return 0
    echo "warning: the JetStream meta group formed without every node (nats-server 2.10 at a simultaneous start); starting the cluster again" >&2
    kill "${cluster_pids[@]}" 2>/dev/null || true
    wait "${cluster_pids[@]}" 2>/dev/null || true
    rm -rf "$5"/nats-[012]
  done
  echo "error: the NATS cluster's JetStream meta group did not take in every node in three starts (logs: $5/nats-*.log)" >&2
  exit 1
}

# Whether, within 30 s, the meta leader counts both other nodes as peers:
# one left out is never added, and no replicated stream can be placed.
meta_group_whole() {
  local http=$1 n tries
  for tries in $(seq 1 300); do
    for n in 0 1 2; do
      curl -fsS "http://127.0.0.1:$((http + n))/jsz" 2>/dev/null | python3 -c '
import json, sys
meta = json.load(sys.stdin).get("meta_cluster", {})
ok = meta.get("leader") and len(meta.get("replicas") or []) == 2
sys.exit(0 if ok else 1)' && return 0
    done
    sleep 0.1
  done
  return 1
}

launch_nats_cluster() {
  local name=$1 client=$2 route=$3 http=$4 dir=$5 jetstream=${6:-}
  local n m routes
  cluster_pids=()
  cluster_urls=()
  for n in 0 1 2; do
    routes=""
    for m in 0 1 2; do
      [[ $m == "$n" ]] || routes+="nats://127.0.0.1:$((route + m)), "
    done
    cat >"$dir/nats-$n.conf" <<CONF
server_name: $name-n$n
host: 127.0.0.1
port: $((client + n))
http_port: $((http + n))
jetstream { store_dir: "$dir/nats-$n"${jetstream:+, $jetstream} }
cluster { name: $name, listen: 127.0.0.1:$((route + n)), routes: [${routes%, }] }
CONF
    "$nats_server" -c "$dir/nats-$n.conf" >"$dir/nats-$n.log" 2>&1 &
    cluster_pids+=($!)
    cluster_urls+=("nats://127.0.0.1:$((client + n))")
  done
  for n in 0 1 2; do
    local url="http://127.0.0.1:$((http + n))/healthz" tries=0
    until curl -fsS -o /dev/null "$url" 2>/dev/null; do
      tries=$((tries + 1))
      if [[ $tries -ge 600 ]]; then
        echo "error: $url is not ready (log: $dir/nats-$n.log)" >&2
        exit 1
      fi
      sleep 0.1
    done
  done
}
