#!/usr/bin/env bash
# Idle streams over TLS, which Herald's edge serves with hyper (not its
# plain HTTP/1.1 path), against Nchan behind nginx's own TLS: STREAMS
# (default 15,000) streams following their user and one topic, over
# HTTP/1.1 and then HTTP/2 (one stream per connection, chosen by ALPN),
# each on a fresh edge and a fresh nginx. Prints one line per system and
# protocol: memory (PSS) per stream and idle CPU, and the ratio. The
# certificate is made for the run with openssl. Bounded: every process is
# stopped on exit.
#
#   bench/tls.sh
#   STREAMS=2000 IDLE_SECS=2 SKIP_BUILD=1 bench/tls.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/meta.sh
bench_command=$(command_line bench/tls.sh STREAMS IDLE_SECS SOURCES)
root="$(pwd)"
STREAMS="${STREAMS:-15000}"
IDLE_SECS="${IDLE_SECS:-20}"
SOURCES="${SOURCES:-8}"
PORT_BASE="${PORT_BASE:-27000}" # below the ephemeral range
if [[ ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ]]; then
  echo "error: Nchan is missing; run: sudo apt-get install nginx-light libnginx-mod-nchan (or bench/run.sh, which installs it)" >&2
  exit 1
fi
nats_server="$(scripts/nats-server.sh)"
source bench/processes.sh
release_binaries herald-edge herald-publish herald-bench
start_work

# A CA for the run and a certificate for localhost it signs (rustls does
# not take a self-signed certificate as a server's).
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${ec[@]}" -days 2 -subj /CN=bench-ca -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null
openssl req "${ec[@]}" -subj /CN=localhost -keyout "$work/tls.key" -out "$work/tls.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n' >"$work/leaf.ext"
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial \
  -days 2 -extfile "$work/leaf.ext" -out "$work/tls.crt" 2>/dev/null
nats_port=$((PORT_BASE + 222)) edge_port=$((PORT_BASE + 443)) nginx_port=$((PORT_BASE + 444))
start_nats "$nats_port"
export HERALD_NATS_URL="$nats"
export HERALD_JWT_SECRET="tls-bench-secret-0123456789-0123456789" HERALD_API_TOKEN="tls-bench-api-token-0123456789"
sleep 0.5
"$bin/herald-publish" --node-id tls-publish --history-storage memory \
  --listen "127.0.0.1:$((PORT_BASE + 51))" --admin-listen "127.0.0.1:$((PORT_BASE + 91))" \
  >"$work/publish.log" 2>&1 &
pids+=($!)
wait_ok "http://127.0.0.1:$((PORT_BASE + 91))/readyz"

# Nchan's configuration as bench/run.sh uses it, on a TLS (and HTTP/2) port.
mkdir -p "$work/nginx"
sed -e "s|listen 127.0.0.1:28080 backlog=4096;|listen 127.0.0.1:$nginx_port ssl http2 backlog=4096; ssl_certificate $work/tls.crt; ssl_certificate_key $work/tls.key;|" \
  bench/nchan.conf >"$work/nginx/nchan-tls.conf"
grep -q "$nginx_port ssl" "$work/nginx/nchan-tls.conf" || { echo "error: bench/nchan.conf's listen line changed" >&2; exit 1; }

mkdir -p bench/results
out="bench/results/tls-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
write_meta "$out" "$bench_command"
for protocol in http1 h2; do
  # A fresh edge and nginx for each protocol: nothing left from the last.
  "$bin/herald-edge" --node-id tls-edge --history-storage memory --max-connections 19000 \
    --listen "127.0.0.1:$edge_port" --admin-listen "127.0.0.1:$((PORT_BASE + 90))" \
    --tls-cert "$work/tls.crt" --tls-key "$work/tls.key" >>"$work/edge.log" 2>&1 &
  edge=$!
  pids+=($edge)
  nginx -p "$work/nginx" -c "$work/nginx/nchan-tls.conf" >>"$work/nginx.log" 2>&1 &
  nginx_master=$!
  pids+=($nginx_master)
  wait_ok "http://127.0.0.1:$((PORT_BASE + 90))/readyz"
  sleep 1
  nginx_pids=$( (echo "$nginx_master"; pgrep -P "$nginx_master") | sed 's/^/--pid /' | tr '\n' ' ')
  common=(secure-idle --connections "$STREAMS" --sources "$SOURCES" --idle-secs "$IDLE_SECS"
    --protocol "$protocol" --ca "$work/ca.crt")
  echo "== herald, TLS $protocol" >&2
  timeout 300 "$bin/herald-bench" --peer herald --edge "127.0.0.1:$edge_port" "${common[@]}" --pid "$edge" |
    sed -n 's/^RESULT //p' >>"$out"
  echo "== nchan, TLS $protocol" >&2
  # shellcheck disable=SC2086
  timeout 300 "$bin/herald-bench" --peer nchan --edge "127.0.0.1:$nginx_port" "${common[@]}" $nginx_pids |
    sed -n 's/^RESULT //p' >>"$out"
  kill "$edge" "$nginx_master"
  wait "$edge" "$nginx_master" 2>/dev/null || true
done
python3 - "$out" <<'PY'
import json, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
print(f"{'idle stream over TLS':<24}{'Herald KiB':>12}{'Nchan KiB':>12}{'Herald/Nchan':>14}{'Herald CPU %':>14}{'Nchan CPU %':>13}")
for protocol in ("http1", "h2"):
    h = next(r for r in runs if r["peer"] == "herald" and r["protocol"] == protocol)
    n = next(r for r in runs if r["peer"] == "nchan" and r["protocol"] == protocol)
    print(f"{protocol:<24}{h['kib_per_idle_stream']:>12.1f}{n['kib_per_idle_stream']:>12.1f}"
          f"{h['kib_per_idle_stream'] / n['kib_per_idle_stream']:>14.2f}"
          f"{h['idle_cpu_percent']:>14.2f}{n['idle_cpu_percent']:>13.2f}")
print(f"raw results: {sys.argv[1]}")
PY
report_reminder "$out"
