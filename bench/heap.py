#!/usr/bin/env python3
"""Where an idle stream's heap goes, from two heaptrack files of the edge
killed while holding its streams: one with STREAMS streams, one with none.

Usage: heap.py BASE.zst RUN.zst STREAMS

Reads heaptrack's own (interpreted, zstd) format: what is allocated and not
freed when the process died, by call stack, grouped by RULES. Needs the edge built with line tables
(CARGO_PROFILE_RELEASE_DEBUG=line-tables-only) so inlined frames have names.
"""

import re
import subprocess
import sys
from collections import defaultdict

# (row, where, stack): a live allocation goes to the first row whose
# `where` matches the innermost frame in Herald's own code, and whose
# `stack` (if any) matches its whole stack, innermost first
# ("function @path:line < caller < ...").
RULES = [
    ("stream task: tokio cell around plain::Streaming", r"herald-edge/src/http1/plain\.rs", r"bind_new_task"),
    ("socket: tokio I/O registration (ScheduledIo)", r"herald-core/src/(listener|backoff)\.rs", r"ScheduledIo"),
    ("stream's cursor (its start on the topic)", r"herald-domain/src/cursor\.rs", None),
    ("close: Signal Arc (one waker)", r"herald-edge/src/fanout/signal\.rs", None),
    ("event queue (empty: allocated lazily)", r"herald-edge/src/fanout/queue\.rs", None),
    ("heartbeat: Arc<Line>", r"herald-edge/src/http1/plain\.rs", r"herald_edge::http1::line::Line"),
    ("heartbeat: slot in the node's list", r"herald-edge/src/http1/beats\.rs", None),
    ("user subject: Followed Arc and name", r"new @crates/herald-edge/src/fanout/followed\.rs", None),
    ("user subject: member map", r"join @crates/herald-edge/src/fanout/followed\.rs", None),
    ("user subject: herald-subscriptions registry", r"herald-subscriptions/", None),
    ("user subject: edge registry maps and key", r"subscribe @crates/herald-edge/src/fanout\.rs", None),
    ("stream's subject list (Guard)", r"herald-edge/src/events\.rs", None),
    ("admission: per-user counts", r"herald-edge/src/admission\.rs", None),
    ("connect-rate limit map", r"herald-edge/src/ratelimit\.rs", None),
]
# A topic's member map is one big table shared by its streams.
TOPIC_MAP = ("user subject: member map", 4096, "topic: member map (shared)")


def glibc_chunk(size):
    """Bytes glibc malloc takes for `size`: an 8-byte header, 16-byte steps,
    32 at least (aligned allocations take more; not counted)."""
    return max(32, (size + 8 + 15) & ~15)


def live(path):
    """(bytes, count, glibc chunk bytes, size, stack) of each allocation
    site and size live when the process ended."""
    text = subprocess.run(["zstd", "-dc", path], capture_output=True, check=True).stdout
    strings, ips, traces, infos = [""], [""], [(0, 0)], []
    count = defaultdict(int)
    for line in text.decode("utf-8", "replace").splitlines():
        tag, _, rest = line.partition(" ")
        if tag == "+":
            count[int(rest, 16)] += 1
        elif tag == "-":
            count[int(rest, 16)] -= 1
        elif tag == "s":
            strings.append(rest.partition(" ")[2])
        elif tag == "i":
            ips.append(frames(rest.split()[2:], strings))
        elif tag == "t":
            ip, parent = rest.split()
            traces.append((int(ip, 16), int(parent, 16)))
        elif tag == "a":
            size, trace = rest.split()
            infos.append((int(size, 16), int(trace, 16)))
    for info, n in count.items():
        if n > 0:
            size, trace = infos[info]
            yield size * n, n, glibc_chunk(size) * n, size, stack(trace, ips, traces)


def frames(fields, strings):
    """One instruction pointer's frames, innermost first. heaptrack writes
    the outermost (the symbol's own function) first, then the calls
    inlined into it from the innermost out."""
    out = []
    for i in range(0, len(fields), 3):
        function, *where = (int(f, 16) for f in fields[i : i + 3])
        at = f" @{strings[where[0]]}:{where[1]}" if len(where) == 2 else ""
        out.append(strings[function] + at)
    return " < ".join(out[1:] + out[:1])


def stack(trace, ips, traces):
    out = []
    while trace:
        ip, trace = traces[trace]
        out.append(ips[ip])
    return " < ".join(f for f in out if f)


def row_of(size, text):
    own = next((f for f in text.split(" < ") if "@crates/herald-" in f), "")
    for row, where, whole in RULES:
        if re.search(where, own) and (whole is None or re.search(whole, text)):
            if row == TOPIC_MAP[0] and size > TOPIC_MAP[1]:
                return TOPIC_MAP[2]
            return row
    return "other"


def rows(path):
    by = defaultdict(lambda: [0, 0, 0])
    for size_bytes, n, chunk, size, text in live(path):
        row = row_of(size, text)
        for i, v in enumerate((size_bytes, n, chunk)):
            by[row][i] += v
    return by


def main():
    base, run, streams = rows(sys.argv[1]), rows(sys.argv[2]), int(sys.argv[3])
    table = []
    for row in set(base) | set(run):
        per = [(run[row][i] - base[row][i]) / streams for i in range(3)]
        table.append((per, row))
    table.sort(reverse=True)
    print(f"{'B/stream':>9} {'allocs':>7}  what")
    for (b, n, _), row in table:
        print(f"{b:9.1f} {n:7.2f}  {row}")
    b, n, chunk = (sum(p[i] for p, _ in table) for i in range(3))
    print(f"{b:9.1f} {n:7.2f}  heap in all ({b / 1024:.2f} KiB)")
    print(f"{chunk:9.1f} {'':7}  with glibc's chunk headers and rounding ({chunk / 1024:.2f} KiB)")


if __name__ == "__main__":
    main()
