"""Draws the Grafana dashboard's panels from the query results monitoring.test.mjs wrote
(ROOMCAST_MONITORING_OUT): one PNG per dashboard row, docs/images/dashboard-<row>.png.

    python3 scripts/plot-dashboard.py RESULTS.json DASHBOARD.json OUT_DIR

Run through scripts/plot-dashboard.sh, which makes the data and installs matplotlib. These are
the dashboard's queries over data a real Prometheus scraped from a 3-node hub on loopback, not
a Grafana screenshot (Grafana cannot run here), and every figure says so.
"""

import json
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LABEL = "Queries of the Roomcast dashboard over data scraped by Prometheus from a 3-node hub on loopback (not a Grafana screenshot)"
SCALE = {"percentunit": (100, "%"), "s": (1000, "ms"), "ops": (1, "/s"), "pps": (1, "packets/s"), "short": (1, "")}


def legend(fmt, metric):
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt) or json.dumps(metric)


def slug(title):
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def main(results_path, dashboard_path, out_dir):
    results = {p["title"]: p for p in json.load(open(results_path))["panels"]}
    rows, current = [], None
    for panel in json.load(open(dashboard_path))["panels"]:
        if panel["type"] == "row":
            current = (panel["title"], [])
            rows.append(current)
        else:
            current[1].append(panel["title"])
    for row, titles in rows:
        n = len(titles)
        cols = 2
        lines = (n + cols - 1) // cols
        fig, axes = plt.subplots(lines, cols, figsize=(12, 3.2 * lines + 0.8), squeeze=False)
        fig.suptitle(f"{row}\n{LABEL}", fontsize=10)
        for ax in axes.flat[n:]:
            ax.axis("off")
        for ax, title in zip(axes.flat, titles):
            panel = results[title]
            factor, unit = SCALE.get(panel["unit"], (1, panel["unit"]))
            for target in panel["targets"]:
                for series in target["result"]:
                    xs = [float(t) - panel["start"] for t, _ in series["values"]]
                    ys = [float(v) * factor for _, v in series["values"]]
                    ax.plot(xs, ys, label=legend(target["legendFormat"], series["metric"]), linewidth=1.2)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("seconds since the traffic started", fontsize=8)
            ax.set_ylabel(unit, fontsize=8)
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        path = f"{out_dir}/dashboard-{slug(row)}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        print(path)


if __name__ == "__main__":
    main(*sys.argv[1:])
