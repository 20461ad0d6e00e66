#!/usr/bin/python3
"""Draws the plots of docs/benchmarks.md from `colo bench queue|topic --json` output.

  build/tools/colo bench queue --json > queue.json
  tools/bench/plot.py queue.json --label "2026-12-03, 2 vCPU AMD EPYC, --quick" --out docs/benchmarks

For each input it writes two PNGs named after its subject (colo-queue,
colo-topic): <subject>-throughput.png, msg/s of every transport in every
throughput cell (pattern x size), and <subject>-latency.png, one-way p50
(bar) and p99 (whisker) of every latency cell (size x reader). Both axes that
carry figures are logarithmic: the transports differ by orders of magnitude.
Cells that did not run or failed are left empty, never drawn as zero.

Needs matplotlib (Debian: python3-matplotlib; `COLO_PLOTS=1 tools/dev/setup.sh`
installs it). Nothing else of colo's: the JSON is the interface.
"""
import argparse
import json
import os
import sys

try:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit("plot.py needs matplotlib: apt-get install python3-matplotlib (or COLO_PLOTS=1 tools/dev/setup.sh)")


def size_text(size):
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


def transports_of(report):
    """Transport names in the report's order, the subject (colo) first."""
    names = [t["name"] for t in report["transports"]]
    subject = report.get("subject")
    return sorted(names, key=lambda n: n != subject)


def cells_of(rows, key):
    """Distinct cell keys in the order they first appear."""
    seen = []
    for row in rows:
        k = key(row)
        if k not in seen:
            seen.append(k)
    return seen


def grouped_bars(ax, cells, transports, value, subject):
    """One group of bars per cell, one bar per transport (colo's outlined)."""
    width = 0.8 / len(transports)
    for i, name in enumerate(transports):
        xs, ys = [], []
        for c, cell in enumerate(cells):
            v = value(cell, name)
            if v is not None and v > 0:
                xs.append(bar_x(c, i, len(transports)))
                ys.append(v)
        ax.bar(xs, ys, width, label=name, edgecolor="black" if name == subject else None, linewidth=0.8)
    ax.set_xticks(range(len(cells)))
    ax.set_yscale("log")
    ax.grid(axis="y", which="major", alpha=0.4)


def bar_x(cell, index, count):
    """x of bar `index` (of `count`) in the group of cell number `cell`."""
    return cell - 0.4 + 0.8 / count * (index + 0.5)


def save(fig, ax, report, title, path):
    """Title, the legend below the axes, and the PNG at `path`; returns `path`."""
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, ncol=min(len(report["transports"]), 4), loc="upper center", bbox_to_anchor=(0.5, -0.16),
              frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def title_of(report, what, label):
    machine = report.get("machine", {})
    load = report.get("load_average_1min", {})
    lines = [f"colo bench {report.get('subject', '?').removeprefix('colo-')}: {what}"]
    details = [f"{machine.get('nproc', '?')} CPUs, {machine.get('cpu_model', '?')}, Linux {machine.get('kernel', '?')}"]
    if load:
        details.append(f"load {load.get('before', 0):.1f} -> {load.get('after', 0):.1f}")
    if label:
        details.insert(0, label)
    lines.append(", ".join(details))
    return "\n".join(lines)


def plot_throughput(report, label, out):
    rows = report.get("throughput", [])
    if not rows:
        return None
    transports = transports_of(report)
    cells = cells_of(rows, lambda r: (r["pattern_label"], r["size"]))
    figures = {(r["pattern_label"], r["size"], r["transport"]): r.get("msgs_per_s")
               for r in rows if r["status"] == "ok"}
    fig, ax = plt.subplots(figsize=(max(8, 1.3 * len(cells)), 5.5))
    grouped_bars(ax, cells, transports, lambda cell, name: figures.get((*cell, name)), report.get("subject"))
    reader = report.get("options", {}).get("throughput_reader", "")
    ax.set_xticklabels([f"{p}\n{size_text(s)}" for p, s in cells])
    ax.set_ylabel(f"messages per second ({reader} readers; log scale)")
    return save(fig, ax, report, title_of(report, "throughput", label),
                os.path.join(out, f"{report['subject']}-throughput.png"))


def plot_latency(report, label, out):
    rows = [r for r in report.get("latency", []) if r["status"] == "ok"]
    if not rows:
        return None
    transports = transports_of(report)
    cells = cells_of(rows, lambda r: (r["pattern_label"], r["size"], r["reader"]))
    figures = {(r["pattern_label"], r["size"], r["reader"], r["transport"]): r["latency_ns"] for r in rows}

    def percentile(cell, name, p):
        ns = figures.get((*cell, name))
        return ns[p] / 1000.0 if ns else None  # microseconds

    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(cells)), 5.5))
    grouped_bars(ax, cells, transports, lambda cell, name: percentile(cell, name, "p50"), report.get("subject"))
    width = 0.8 / len(transports)
    for i, name in enumerate(transports):  # p99: a whisker up from the bar's top
        for c, cell in enumerate(cells):
            p50, p99 = percentile(cell, name, "p50"), percentile(cell, name, "p99")
            if p50 and p99:
                x = bar_x(c, i, len(transports))
                ax.vlines(x, p50, p99, color="black", linewidth=0.8, zorder=3)
                ax.hlines(p99, x - width / 3, x + width / 3, color="black", linewidth=0.8, zorder=3)
    rate = report.get("options", {}).get("rate", 0)
    ax.set_xticklabels([f"{p} {size_text(s)}\n{reader} reader" for p, s, reader in cells])
    ax.set_ylabel("one-way latency, us (bar: p50, whisker: p99; log scale)")
    return save(fig, ax, report, title_of(report, f"one-way latency at {rate:,.0f} msg/s", label),
                os.path.join(out, f"{report['subject']}-latency.png"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", help="JSON files written by `colo bench queue|topic --json`")
    parser.add_argument("--out", default=".", help="directory for the PNGs (default: here)")
    parser.add_argument("--label", default="", help="what the run was, for the titles: date, machine, options")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for path in args.reports:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
        if report.get("benchmark") != "msg" or "subject" not in report:
            sys.exit(f"{path}: not the output of `colo bench queue|topic --json`")
        for written in (plot_throughput(report, args.label, args.out), plot_latency(report, args.label, args.out)):
            if written:
                print(written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
