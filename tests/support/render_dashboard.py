"""Draws the panels of Ferry's Grafana dashboard (charts/ferry/dashboards/ferry.json) from
/metrics pages recorded during a real run, as a PNG: the README's picture of the dashboard
where no Grafana is at hand. The queries are the dashboard's, computed here from the samples.

Record:  FERRY_METRICS_RECORD=/tmp/ferry-metrics.txt cargo test -p ferry-tests --test e2e metrics::
Draw:    python render_dashboard.py /tmp/ferry-metrics.txt docs/dashboard.png   (needs matplotlib)
"""
import re
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'(\w+)="([^"]*)"')
COLORS = ["#73BF69", "#F2CC0C", "#5794F2", "#FF9830", "#B877D9", "#F2495C"]


def pages(path):
    """[(unix time, {(name, frozenset(labels)): value})] of the recorded scrapes."""
    out = []
    for chunk in open(path).read().split("# scraped ")[1:]:
        head, _, body = chunk.partition("\n")
        samples = {}
        for line in body.splitlines():
            m = SAMPLE.match(line)
            if m:
                labels = frozenset(LABEL.findall(m.group(2) or ""))
                samples[(m.group(1), labels)] = float(m.group(3))
        out.append((float(head), samples))
    return out


def series(recorded, name, want=(), by=None):
    """{legend: [(t, value)]} of the samples of `name` whose labels include `want`, summed by
    the label `by`."""
    out = defaultdict(list)
    for t, samples in recorded:
        sums = defaultdict(float)
        for (n, labels), v in samples.items():
            if n == name and set(want) <= labels:
                key = dict(labels).get(by, name) if by else name
                sums[key] += v
        for key, v in sums.items():
            out[key].append((t, v))
    return out


def rate(points, window=3.0):
    """Per-second increase over `window` seconds (Prometheus's rate(), on recorded points)."""
    out = []
    for i, (t, v) in enumerate(points):
        j = i
        while j > 0 and t - points[j - 1][0] <= window:
            j -= 1
        if j < i:
            t0, v0 = points[j]
            out.append((t, max(v - v0, 0) / (t - t0)))
    return out


def main(src, dst):
    recorded = pages(src)
    t0 = recorded[0][0]
    job = [("kind", "MigrationJob")]
    copied = series(recorded, "ferry_bytes_total", job + [("result", "copied")])["ferry_bytes_total"]
    skipped = dict(series(recorded, "ferry_bytes_total", job + [("result", "skipped")])["ferry_bytes_total"])
    expected = dict(series(recorded, "ferry_expected_bytes", job)["ferry_expected_bytes"])
    progress = [(t, 100 * (v + skipped.get(t, 0)) / expected[t]) for t, v in copied if expected.get(t)]
    panels = [
        ("Progress", "%", {"copy": progress}),
        ("ETA", "s", series(recorded, "ferry_eta_seconds", job)),
        ("Throughput", "KiB/s", {"reported by the shards": [(t, v / 2**10) for t, v in series(
            recorded, "ferry_throughput_bytes_per_second", job)["ferry_throughput_bytes_per_second"]],
            "rate(copied bytes)": [(t, v / 2**10) for t, v in rate(copied)]}),
        ("Objects copied per second", "objects/s", {"copy": rate(series(
            recorded, "ferry_objects_total", job + [("result", "copied")])["ferry_objects_total"])}),
        ("MigrationJobs by phase", "jobs", {k: v for k, v in series(
            recorded, "ferry_jobs", job, by="phase").items() if any(x for _, x in v)}),
        ("Reconciles per second", "reconciles/s", {k: rate(v) for k, v in series(
            recorded, "controller_runtime_reconcile_total", [("controller", "migrationjob")],
            by="result").items()}),
    ]
    plt.rcParams.update({"text.color": "#ccccdc", "axes.labelcolor": "#ccccdc",
                         "xtick.color": "#8e8e9e", "ytick.color": "#8e8e9e", "font.size": 9})
    fig, axes = plt.subplots(2, 3, figsize=(15, 6.5), facecolor="#111217")
    for ax, (title, unit, lines) in zip(axes.flat, panels):
        ax.set_facecolor("#181b1f")
        for spine in ax.spines.values():
            spine.set_color("#2c3235")
        ax.grid(color="#2c3235", linewidth=0.6)
        ax.set_title(title, loc="left", fontsize=11, color="#ccccdc")
        ax.set_ylabel(unit)
        for i, (legend, points) in enumerate(sorted(lines.items())):
            if points:
                ax.plot([t - t0 for t, _ in points], [v for _, v in points],
                        color=COLORS[i % len(COLORS)], linewidth=1.8, label=legend)
        ax.set_xlabel("seconds since the first scrape")
        if len(lines) > 1:
            ax.legend(facecolor="#181b1f", edgecolor="#2c3235", fontsize=8)
    fig.suptitle("Ferry dashboard panels, drawn from /metrics scraped every 0.5 s during a real "
                 "run (tests/e2e/metrics.rs)", color="#ccccdc", fontsize=12)
    fig.tight_layout()
    fig.savefig(dst, dpi=100, facecolor=fig.get_facecolor())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
