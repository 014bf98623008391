"""The benchmark's report: the headline figures of each system, the table printed at the end of
``make bench``, and the plot. The JSON keys are documented in docs/benchmarks.md; later work is
compared on them, so they only grow."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import accounting
import sweep

SCHEMA = 2
LATENCY_RATES = (100.0, 500.0)  # p50/p99 reported at these offered rates


def _at(rows: Sequence[Mapping[str, Any]], rate: float) -> Mapping[str, Any] | None:
    return next((r for r in rows if r["offered_rate"] == rate), None)


def headline(
    rows: Sequence[Mapping[str, Any]],
    *,
    reference_rate: float,
    web_stomp_rate: float | None,
    pg_single_row_tps: float | None,
) -> dict[str, Any]:
    """One system's headline: its highest sustained rate, latency at 100 and 500 msg/s, CPU
    per message at ``reference_rate``, projected capacity, and ratios to the baselines."""
    best = sweep.highest_sustained(rows)
    reference = _at(rows, reference_rate)
    sustained = best["offered_rate"] if best else None
    figures: dict[str, Any] = {
        "highest_sustained_rate": sustained,
        "highest_sustained_p99_ms": best["p99_ms"] if best else None,
        "reference_rate": reference_rate,
        "stack_cpu_ms_per_msg": reference["stack_cpu_ms_per_msg"] if reference else None,
        "gen_cpu_ms_per_msg": reference["gen_cpu_ms_per_msg"] if reference else None,
        "projected_capacity": reference["projected_capacity"] if reference else None,
        "vs_web_stomp": _ratio(sustained, web_stomp_rate),
        "vs_pg_single_row": _ratio(sustained, pg_single_row_tps),
    }
    for rate in LATENCY_RATES:
        row = _at(rows, rate)
        figures[f"p50_ms_at_{rate:.0f}"] = row["p50_ms"] if row else None
        figures[f"p99_ms_at_{rate:.0f}"] = row["p99_ms"] if row else None
    return figures


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    return round(ours / theirs, 3) if ours and theirs else None


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


COLUMNS = (  # key, width, title
    ("system", 21, "system"),
    ("offered_rate", 8, "rate/s"),
    ("delivered_msgs_per_s", 9, "deliv/s"),
    ("p50_ms", 8, "p50 ms"),
    ("p99_ms", 9, "p99 ms"),
    ("lost", 8, "lost"),
    ("duplicated", 5, "dup"),
    ("out_of_order", 5, "ooo"),
    ("stack_cpu_ms_per_msg", 10, "cpu/msg"),
    ("gen_cpu_ms_per_msg", 8, "gen/msg"),
    ("projected_capacity", 10, "projected"),
    ("pg_commits_per_msg", 9, "pg c/msg"),
)


def table(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    lines = [
        "".join(
            f"{title:>{w}}" if i else f"{title:<{w}}" for i, (_, w, title) in enumerate(COLUMNS)
        )
    ]
    for row in rows:
        cells = []
        for i, (key, width, _) in enumerate(COLUMNS):
            text = cell(row.get(key))
            cells.append(f"{text:>{width}}" if i else f"{text:<{width}}")
        if not accounting.keeps_up(row):
            cells.append("  behind")
        lines.append("".join(cells))
    return lines


def process_table(rows: Sequence[Mapping[str, Any]], rate: float) -> list[str]:
    """CPU ms per delivered message by process, one column per system, at ``rate``."""
    chosen = [r for r in rows if r["offered_rate"] == rate]
    if not chosen:
        return []
    roles = sorted({role for r in chosen for role in r["cpu_ms_per_msg"]})
    width = max(len(r["system"]) for r in chosen) + 2
    lines = [f"{'process':<16}" + "".join(f"{r['system']:>{width}}" for r in chosen)]
    for role in roles:
        cells = "".join(f"{cell(r['cpu_ms_per_msg'].get(role)):>{width}}" for r in chosen)
        lines.append(f"{role:<16}{cells}")
    for key, label in (
        ("stack_cpu_ms_per_msg", "= system"),
        ("machine_cpu_ms_per_msg", "machine busy"),
        ("steal_ms_per_msg", "steal"),
    ):
        lines.append(f"{label:<16}" + "".join(f"{cell(r.get(key)):>{width}}" for r in chosen))
    return lines


def headline_lines(name: str, figures: Mapping[str, Any], label: str) -> list[str]:
    rate = figures["highest_sustained_rate"]
    reference = figures["reference_rate"]
    lines = [
        f"{label}: highest sustained {cell(rate)}/s"
        + (f" (p99 {cell(figures['highest_sustained_p99_ms'])} ms)" if rate else "")
    ]
    latency = "; ".join(
        f"at {r:.0f}/s p50 {cell(figures[f'p50_ms_at_{r:.0f}'])}"
        f" / p99 {cell(figures[f'p99_ms_at_{r:.0f}'])} ms"
        for r in LATENCY_RATES
    )
    lines.append(f"  {latency}")
    lines.append(
        f"  at {reference:.0f}/s: system {cell(figures['stack_cpu_ms_per_msg'])} ms of CPU per"
        f" delivered message (generator {cell(figures['gen_cpu_ms_per_msg'])} ms);"
        f" projected capacity {cell(figures['projected_capacity'])}/s"
    )
    if name != "web-stomp":
        lines.append(
            f"  sustained rate = {cell(figures['vs_web_stomp'])}x Web-STOMP's,"
            f" {cell(figures['vs_pg_single_row'])}x PostgreSQL's single-row commits/s"
        )
    return lines


def plot(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (latency, cost) = plt.subplots(1, 2, figsize=(13, 5))
    for index, system in enumerate(sorted({r["system"] for r in rows})):
        color = f"C{index}"
        mine = sorted((r for r in rows if r["system"] == system), key=lambda r: r["offered_rate"])
        rates = [r["offered_rate"] for r in mine]
        for key, style in (("p50_ms", "-o"), ("p99_ms", "--x")):
            latency.plot(
                rates, [r[key] for r in mine], style, color=color, label=f"{system} {key[:3]}"
            )
        cost.plot(rates, [r["stack_cpu_ms_per_msg"] for r in mine], "-o", color=color, label=system)
    latency.set_xscale("log")
    latency.set_yscale("log")
    latency.set_xlabel("offered messages per second")
    latency.set_ylabel("scheduled send -> delivery (ms)")
    latency.set_title("Latency against offered rate (open loop)")
    cost.set_xscale("log")
    cost.set_xlabel("offered messages per second")
    cost.set_ylabel("system CPU ms per delivered message")
    cost.set_title("CPU per message (everything but the generator)")
    for axis in (latency, cost):
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
