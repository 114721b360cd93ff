"""Latency against delivered rate, one line per system, as SVG.

Reads the JSON lines bench/run.sh collected and writes a self-contained
SVG (no plotting library needed) for one scenario, `unicast` (events/s)
or `fanout` (deliveries/s), one line per system (Herald's ways in, Nchan,
Pushpin, NATS alone) and, for unicast, per round when the run repeated it
(dashed after the first):

    python3 bench/plot.py bench/results/<stamp>.jsonl unicast > latency.svg

A file without that scenario (a run with SCENARIOS that left it out, or
one where it failed) has nothing to plot: that is said on stderr, nothing
goes to stdout, and the exit code is 1.
"""
import json
import math
import sys

W, H, PAD = 720, 440, 60
COLORS = {"herald ephemeral": "#d62728", "herald persisted": "#ff7f0e", "herald": "#d62728",
          "herald ephemeral batch": "#9467bd", "herald persisted batch": "#8c564b",
          "herald ephemeral http": "#e377c2", "herald persisted http": "#7f7f7f",
          "nchan": "#1f77b4", "pushpin": "#17becf", "nats": "#2ca02c"}


def series(path, scenario):
    lines = {}
    for line in open(path):
        r = json.loads(line)
        if r.get("scenario") != scenario:
            continue
        name = r["peer"]
        if scenario == "unicast" and name == "herald":
            name += " ephemeral" if r["ephemeral"] else " persisted"
            if r.get("via", "grpc") != "grpc":
                name += " " + r["via"]
        if r.get("round", 1) > 1:
            name += f" (run {r['round']})"
        rate = r["deliveries_per_sec"] if scenario == "fanout" else r["achieved_rate"]
        # A step that delivered nothing has no place on a log axis.
        if rate > 0:
            lines.setdefault(name, []).append((rate, r["p99_ms"], r["p50_ms"]))
    return {k: sorted(v) for k, v in lines.items()}


def main(path, scenario):
    lines = series(path, scenario)
    points = [p for v in lines.values() for p in v]
    if not points:
        print(f"plot.py: no {scenario} results in {path}: nothing to plot", file=sys.stderr)
        sys.exit(1)
    xmax = max(p[0] for p in points) * 1.1
    ymax = max(max(p[1] for p in points) * 1.1, 1.0)
    # Log scale on x: rates span orders of magnitude.
    xmin = min(p[0] for p in points) / 1.5
    def x(v):
        return PAD + (math.log10(v) - math.log10(xmin)) / (math.log10(xmax) - math.log10(xmin)) * (W - 2 * PAD)
    def y(v):
        return H - PAD - v / ymax * (H - 2 * PAD)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W/2}" y="20" text-anchor="middle" font-size="14">p99 publish→receive latency against delivered rate ({scenario})</text>',
           f'<line x1="{PAD}" y1="{H-PAD}" x2="{W-PAD}" y2="{H-PAD}" stroke="black"/>',
           f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H-PAD}" stroke="black"/>',
           f'<text x="{W/2}" y="{H-15}" text-anchor="middle">{"deliveries" if scenario == "fanout" else "events"}/s (log scale)</text>',
           f'<text x="15" y="{H/2}" transform="rotate(-90 15 {H/2})" text-anchor="middle">p99 latency, ms</text>']
    decade = 10 ** math.floor(math.log10(xmin))
    while decade < xmax:
        for m in (1, 2, 5):
            v = decade * m
            if xmin <= v <= xmax:
                out.append(f'<line x1="{x(v):.1f}" y1="{H-PAD}" x2="{x(v):.1f}" y2="{H-PAD+5}" stroke="black"/>')
                out.append(f'<text x="{x(v):.1f}" y="{H-PAD+18}" text-anchor="middle">{v:g}</text>')
        decade *= 10
    for i in range(6):
        v = ymax * i / 5
        out.append(f'<text x="{PAD-6}" y="{y(v)+4:.1f}" text-anchor="end">{v:.0f}</text>')
        out.append(f'<line x1="{PAD}" y1="{y(v):.1f}" x2="{W-PAD}" y2="{y(v):.1f}" stroke="#ddd"/>')
    for i, (name, pts) in enumerate(sorted(lines.items())):
        color = COLORS.get(name.split(" (run ")[0], "black")
        dash = ' stroke-dasharray="6 3"' if " (run " in name else ""
        path = " ".join(f"{x(r):.1f},{y(p99):.1f}" for r, p99, _ in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
        for r, p99, _ in pts:
            out.append(f'<circle cx="{x(r):.1f}" cy="{y(p99):.1f}" r="3" fill="{color}"/>')
        out.append(f'<text x="{PAD+10}" y="{PAD+16*i+10}" fill="{color}">{name}</text>')
    out.append("</svg>")
    print("\n".join(out))


if __name__ == "__main__":
    scenario = sys.argv[2] if len(sys.argv) > 2 else "unicast"
    if len(sys.argv) < 2 or scenario not in ("unicast", "fanout"):
        sys.exit("usage: plot.py RESULTS.jsonl [unicast|fanout]")
    main(sys.argv[1], scenario)
