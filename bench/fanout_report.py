"""bench/fanout.py's results: medians, the markdown table, the readings
against the issue 23 goals (Redis, two workers, Nchan), the chart, the
JSON file and the docs section between ``<!-- bench:begin -->`` and
``<!-- bench:end -->`` (``--docs-section`` names other markers)."""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import statistics
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from fanout_servers import HERE, NCHAN, label, parse_contender

Key = tuple[str, int]
PHASE_KEYS = (
    "delivered_mps", "publish_rps", "latency_p50_ms", "latency_p99_ms", "latency_max_ms",
    "server_cpu_s", "server_cpu_busy", "server_us_per_delivery", "redis_cpu_s",
    "total_us_per_delivery", "bench_cpu_busy", "wall_s", "gc_total_s", "gc_share",
    "gc_max_ms", "gc_full", "gc_over_10ms", "rate", "messages",
)  # fmt: skip
RUN_KEYS = ("connect_s", "rss_idle_mib", "rss_connected_mib", "rss_per_conn_kib", "reconnects")


def _median(values: list[Any]) -> float:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(values) if values else float("nan")


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each metric over the rounds of one contender and count."""
    summary: dict[str, Any] = {"runs": len(runs), "ok": all(r["ok"] for r in runs)}
    for key in RUN_KEYS:
        summary[key] = _median([r.get(key) for r in runs])
    for name in ("max", "half"):
        got = [r["phases"][name] for r in runs if name in r["phases"]]
        if got:
            summary[name] = {k: _median([p[k] for p in got]) for k in PHASE_KEYS}
    summary["failures"] = [f for r in runs for f in r["failures"]]
    reasons: Counter[str] = Counter()
    for r in runs:
        reasons.update(r["reconnect_reasons"])
    summary["reconnect_reasons"] = dict(reasons)
    return summary


def _fmt(value: float, spec: str) -> str:
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    return "—" if missing else spec.format(value)


def _mps(summary: dict[Key, dict[str, Any]], name: str, count: int) -> float:
    """Deliveries/s at saturation of a row (NaN: no such row, or it failed)."""
    s = summary.get((name, count), {})
    value = s.get("max", {}).get("delivered_mps") if s.get("ok") else None
    return float(value) if value else float("nan")


def _nchan_row(name: str, names: list[str]) -> str | None:
    """The Nchan row ``name``'s ratio to Nchan is taken to: Nchan over the
    same transport, when it ran."""
    row = NCHAN.get(parse_contender(name)[1])
    return row if row in names else None


def markdown(args: argparse.Namespace, summary: dict[Key, dict[str, Any]]) -> str:
    """One table per subscriber count, a row per contender, then the
    readings against the goals."""
    out = []
    with_nchan = any(_nchan_row(n, args.names) for n in args.names)
    for count in args.counts:
        ref = summary.get((args.reference, count), {}).get("max", {})
        out.append(f"**{count:,} subscribers**\n")
        nchan_head = "| ratio to Nchan, same transport " if with_nchan else ""
        out.append(
            f"| contender | deliveries/s | ratio to {label(args.reference)} {nchan_head}"
            "| CPU µs/delivery | RSS/idle conn | p50 / p99 at half load | GC share of CPU "
            "| longest GC pause | full GCs | load gen. busy | every delivery checked |"
        )
        nchan_align = "--:|" if with_nchan else ""
        out.append(f"|---|--:|--:|{nchan_align}--:|--:|--:|--:|--:|--:|--:|---|")
        for name in args.names:
            s = summary.get((name, count))
            if s is None:
                continue
            # A failed row's rates and costs cover a broken run: not shown.
            sat, half = (s.get("max", {}), s.get("half", {})) if s["ok"] else ({}, {})
            mps = sat.get("delivered_mps", float("nan"))
            ratio = mps / ref["delivered_mps"] if ref.get("delivered_mps") else float("nan")
            nchan_cell = ""
            if with_nchan:
                row = _nchan_row(name, args.names)
                to_nchan = mps / _mps(summary, row, count) if row else float("nan")
                nchan_cell = f"| {_fmt(to_nchan, '{:.2f}')} "
            latency = (
                f"{_fmt(half.get('latency_p50_ms', float('nan')), '{:.1f}')} / "
                f"{_fmt(half.get('latency_p99_ms', float('nan')), '{:.1f}')} ms"
            )
            gc_max = max(sat.get("gc_max_ms", float("nan")), half.get("gc_max_ms", float("nan")))
            check = "ok" if s["ok"] else "**FAILED**"
            if s["reconnects"]:
                check += f" ({s['reconnects']:.0f} resumes)"
            out.append(
                f"| {label(name)} | {_fmt(mps, '{:,.0f}')} | {_fmt(ratio, '{:.2f}')} {nchan_cell}"
                f"| {_fmt(sat.get('server_us_per_delivery', float('nan')), '{:.1f}')} "
                f"| {_fmt(s['rss_per_conn_kib'], '{:.1f} KiB')} | {latency} "
                f"| {_fmt(sat.get('gc_share', float('nan')), '{:.0%}')} "
                f"| {_fmt(gc_max, '{:.0f} ms')} "
                f"| {_fmt(sat.get('gc_full', float('nan')), '{:.0f}')} "
                f"| {_fmt(sat.get('bench_cpu_busy', float('nan')), '{:.0%}')} | {check} |"
            )
        out.append("")
    out += readings(args, summary)
    for (name, count), s in summary.items():
        for failure in s["failures"][:5]:
            out.append(f"- FAILED {name} at {count}: {failure}")
    return "\n".join(out).rstrip() + "\n"


def _row(summary: dict[Key, dict[str, Any]], name: str, count: int) -> dict[str, float]:
    """The saturation figures of a row that ran and passed ({} otherwise)."""
    s = summary.get((name, count), {})
    if not s.get("ok") or "max" not in s:
        return {}
    return {**s["max"], "rss_per_conn_kib": s["rss_per_conn_kib"]}


def _met(met: bool) -> str:
    return "met" if met else "**not met**"


def readings(args: argparse.Namespace, summary: dict[Key, dict[str, Any]]) -> list[str]:
    """The issue 23 goals read from the rows that ran, one bullet each:
    Redis against memory (deliveries/s, goal >= 0.8x), two workers on Redis
    against one memory process (CPU us/delivery summed over the hub's
    processes, goal <= 1.2x), and torchannels against Nchan per transport
    (deliveries/s, CPU us/delivery and RSS per idle connection)."""
    out: list[str] = []
    names = {"sse": "SSE", "stream": "NDJSON stream", "websocket": "WebSocket"}
    for count in args.counts:
        lines = []
        for transport, tname in names.items():
            memory = _row(summary, f"torchannels:{transport}", count)
            redis = _row(summary, f"redis:{transport}", count)
            two = _row(summary, f"redis-2w:{transport}", count)
            if memory and redis:
                ratio = redis["delivered_mps"] / memory["delivered_mps"]
                lines.append(
                    f"- Redis / memory, {tname}: deliveries/s "
                    f"{ratio:.2f}x (goal ≥ 0.8: {_met(ratio >= 0.8)}); "
                    f"CPU µs/delivery {redis['server_us_per_delivery']:.1f} against "
                    f"{memory['server_us_per_delivery']:.1f} "
                    f"({redis['total_us_per_delivery']:.1f} with redis-server's)"
                )
            if memory and two:
                ratio = two["server_us_per_delivery"] / memory["server_us_per_delivery"]
                lines.append(
                    f"- two workers on Redis / one memory process, {tname}: CPU µs/delivery "
                    f"summed over the hub's processes {two['server_us_per_delivery']:.1f} against "
                    f"{memory['server_us_per_delivery']:.1f}: {ratio:.2f}x "
                    f"(goal ≤ 1.2: {_met(ratio <= 1.2)}; "
                    f"{two['total_us_per_delivery']:.1f} µs with redis-server's)"
                )
            nchan = _row(summary, NCHAN.get(transport, ""), count)
            if memory and nchan:
                lines.append(
                    f"- torchannels / Nchan, {tname}: deliveries/s "
                    f"{memory['delivered_mps'] / nchan['delivered_mps']:.2f}x; CPU µs/delivery "
                    f"{memory['server_us_per_delivery']:.1f} against "
                    f"{nchan['server_us_per_delivery']:.1f} "
                    f"({memory['server_us_per_delivery'] / nchan['server_us_per_delivery']:.2f}x); "
                    f"RSS per idle connection {memory['rss_per_conn_kib']:.1f} against "
                    f"{nchan['rss_per_conn_kib']:.1f} KiB "
                    f"({memory['rss_per_conn_kib'] / nchan['rss_per_conn_kib']:.2f}x)"
                )
        if lines:
            out += [f"Read at {count:,} subscribers:", "", *lines, ""]
    return out


def text_table(args: argparse.Namespace, summary: dict[Key, dict[str, Any]]) -> str:
    return markdown(args, summary)


def chart(args: argparse.Namespace, summary: dict[Key, dict[str, Any]], path: Path) -> None:
    """Grouped bars per contender, one bar per subscriber count: deliveries/s
    above, server CPU µs per delivery (the figure to compare) below."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in args.names if any((n, c) in summary for c in args.counts)]
    width = 0.8 / len(args.counts)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(max(11, 1.15 * len(names)), 9), dpi=100, sharex=True
    )
    panels = (
        (top, "delivered_mps", 1 / 1000, "%.0fk", "deliveries/s (thousands)"),
        (bottom, "server_us_per_delivery", 1, "%.1f", "server CPU µs per delivery"),
    )
    for ax, key, scale, fmt, ylabel in panels:
        for i, count in enumerate(args.counts):
            values = []
            for n in names:
                s = summary.get((n, count), {})
                value = s.get("max", {}).get(key) if s.get("ok") else None
                values.append(value * scale if value else 0)
            xs = [j + (i - (len(args.counts) - 1) / 2) * width for j in range(len(names))]
            bars = ax.bar(xs, values, width, label=f"{count:,} subscribers")
            ax.bar_label(bars, fmt=fmt, fontsize=7)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    ref = args.reference
    for count in args.counts:
        value = summary.get((ref, count), {}).get("max", {}).get("delivered_mps")
        if value:
            top.axhline(value / 1000, linestyle=":", linewidth=0.8, color="grey")
    bottom.set_xticks(range(len(names)))
    bottom.set_xticklabels([textwrap.fill(label(n), 14) for n in names], fontsize=8)
    top.set_title(
        f"Fan-out of ~{args.size} B messages, one channel, server on one core "
        f"(dotted: {label(ref)}); a failed row has no bar"
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def machine() -> dict[str, Any]:
    import tornado

    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def git(*argv: str) -> str:
        try:
            out = subprocess.run(["git", *argv], cwd=HERE, capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return out.stdout.decode().strip()

    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git_head": git("rev-parse", "--short", "HEAD"),
        "src_modified": bool(git("status", "--porcelain", "--", "../src")),
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "tornado": tornado.version,
        "loadavg_at_start": os.getloadavg(),
    }


def write_outputs(
    args: argparse.Namespace,
    host: dict[str, Any],
    summary: dict[Key, dict[str, Any]],
    runs: dict[Key, list[dict[str, Any]]],
) -> None:
    table = markdown(args, summary)
    if args.markdown is not None:
        args.markdown.write_text(table)
    if args.chart is not None:
        chart(args, summary, args.chart)
    if args.docs is not None:
        _update_docs(args, host, table)
    if args.json is not None:
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        document = {
            "config": config,
            "machine": host,
            "summary": {f"{n}@{c}": s for (n, c), s in summary.items()},
            "runs": {f"{n}@{c}": r for (n, c), r in runs.items()},
        }
        args.json.write_text(json.dumps(document, indent=2, default=str) + "\n")


def _update_docs(args: argparse.Namespace, host: dict[str, Any], table: str) -> None:
    what = f"{args.rounds} round(s), medians"
    update_docs(args.docs, args.docs_section, "bench/fanout.py", args.command, host, what, table)


def update_docs(
    path: Path,
    section: str,
    script: str,
    command: str,
    host: dict[str, Any],
    what: str,
    table: str,
) -> None:
    """Put ``table`` under a line naming the run (command, date, commit,
    machine, load averages, ``what``) between the ``section`` markers of
    ``path``."""
    text = path.read_text()
    load = ", ".join(f"{x:.2f}" for x in host["loadavg_at_start"])
    end = ", ".join(f"{x:.2f}" for x in host.get("loadavg_at_end", ()))
    dirty = " + uncommitted changes in src/" if host["src_modified"] else ""
    body = (
        f"<!-- {section}:begin (written by {script} --docs) -->\n"
        f"`{command or script}`, {host['date']}, commit `{host['git_head']}`"
        f"{dirty}; {host['nproc']} CPUs ({host['cpu']}), Python {host['python']}, "
        f"Tornado {host['tornado']}; load average at start {load}"
        f"{f', at end {end}' if end else ''}; "
        f"{what}; {host['duration_s'] / 60:.1f} minutes.\n\n"
        f"{table}"
        f"<!-- {section}:end -->"
    )
    name = re.escape(section)
    pattern = re.compile(rf"<!-- {name}:begin.*?<!-- {name}:end -->", re.S)
    if not pattern.search(text):
        raise SystemExit(
            f"{path} has no <!-- {section}:begin --> ... <!-- {section}:end --> markers"
        )
    path.write_text(pattern.sub(lambda _: body, text))
