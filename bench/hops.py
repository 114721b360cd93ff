#!/usr/bin/env python3
"""Where publish→deliver latency goes: reads a loopback capture taken
during `herald-bench unicast` and times each event at every hop.

Each event's payload is "<seq> <send time, µs since the epoch>", sent in
clear over gRPC (h2c), NATS and SSE, so the same text shows up in one
packet per hop. The capture's timestamps and the send time share the
wall clock, so the first hop (load generator → herald-publish) is
comparable too.

    bench/hops.py CAPTURE.pcap PUBLISH_PORT NATS_PORT EDGE_PORT
"""
import re
import sys

import dpkt

MARK = re.compile(rb"(\d+) (1\d{15})")
HOPS = [
    ("sent", "at publish", "client: from the send time to herald-publish's socket"),
    ("at publish", "to nats", "herald-publish: gRPC in to NATS publish out"),
    ("to nats", "from nats", "nats-server: publish in to message out"),
    ("from nats", "to client", "herald-edge: message in to SSE bytes out"),
]


def stage(sport, dport, ports):
    publish, nats, edge = ports
    if dport == publish:
        return "at publish"
    if dport == nats:
        return "to nats"
    if sport == nats:
        return "from nats"
    if sport == edge:
        return "to client"
    return None


def read(path, ports):
    """{event: {stage: first time seen, µs}}"""
    seen = {}
    with open(path, "rb") as f:
        reader = dpkt.pcap.Reader(f)
        linktype = reader.datalink()
        for ts, buf in reader:
            if linktype == dpkt.pcap.DLT_NULL:
                ip = dpkt.loopback.Loopback(buf).data
            elif linktype == dpkt.pcap.DLT_LINUX_SLL:
                ip = dpkt.sll.SLL(buf).data
            else:
                ip = dpkt.ethernet.Ethernet(buf).data
            tcp = getattr(ip, "data", None)
            if not isinstance(tcp, dpkt.tcp.TCP) or not tcp.data:
                continue
            where = stage(tcp.sport, tcp.dport, ports)
            if where is None:
                continue
            for m in MARK.finditer(tcp.data):
                event = seen.setdefault(m.group(0), {"sent": int(m.group(2))})
                event.setdefault(where, ts * 1e6)
    return seen


def quantile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main():
    path, *ports = sys.argv[1:]
    seen = read(path, tuple(int(p) for p in ports))
    whole = [e for e in seen.values() if all(s in e for h in HOPS for s in h[:2])]
    if not whole:
        sys.exit(f"no event was seen at every hop in {path}")
    print(f"{len(whole)} events seen at every hop (of {len(seen)} seen)")
    print(f"{'hop':<56}{'p50 µs':>9}{'p90 µs':>9}{'p99 µs':>9}")
    for start, end, label in HOPS:
        d = [e[end] - e[start] for e in whole]
        print(f"{label:<56}{quantile(d, .5):>9.0f}{quantile(d, .9):>9.0f}{quantile(d, .99):>9.0f}")
    d = [e["to client"] - e["sent"] for e in whole]
    print(f"{'all: from the send time to SSE bytes out':<56}{quantile(d, .5):>9.0f}{quantile(d, .9):>9.0f}{quantile(d, .99):>9.0f}")


if __name__ == "__main__":
    main()
