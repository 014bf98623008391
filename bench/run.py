"""`make bench`: the stack and its baselines on the same machine, the same workload, one run.

Prints a table with ratios, writes bench/results/<time>.json and a PNG plot of latency against
offered rate. Loopback only; every phase is bounded in time. See docs/benchmarks.md."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import baseline_pg
import baseline_webstomp
import stack_workload
import workload
import ws_idle_memory

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/chat_bench"
)
PORT_BASE = int(os.environ.get("BENCH_PORT_BASE", "28080"))

# The stack runs with the product's limits raised: the benchmark is one client address and a few
# users sending far faster than a person would.
STACK_ENV = {
    "RUN_DIR": str(ROOT / ".run" / "bench"),
    "CHAT_PORT_BASE": str(PORT_BASE),
    "DATABASE_URL": DATABASE_URL,
    "AMQP_VHOST": "chat_bench",
    "LOG_LEVEL": "WARNING",
    "IP_BURST": "100000",
    "IP_RATE_PER_SECOND": "100000",
    "USER_BURST": "100000",
    "USER_RATE_PER_SECOND": "100000",
    "WS_CONNECT_BURST": "100000",
    "WS_CONNECT_RATE_PER_SECOND": "100000",
    "SEND_BURST": "100000",
    "SEND_RATE_PER_SECOND": "100000",
    "SENDS_BURST": "100000",
    "SENDS_PER_SECOND": "100000",
}


def make(target: str) -> None:
    subprocess.run(["make", target], cwd=ROOT, env={**os.environ, **STACK_ENV}, check=True)


LATENCY_METRIC = "chat_outbox_publish_latency_seconds"


def histogram(url: str, name: str) -> dict[float, float]:
    """The cumulative bucket counts of a Prometheus histogram, by upper bound (seconds)."""
    buckets: dict[float, float] = {}
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            for line in answer.read().decode().splitlines():
                if line.startswith(f'{name}_bucket{{le="'):
                    bound = line.split('le="', 1)[1].split('"', 1)[0]
                    buckets[float(bound)] = float(line.rsplit(" ", 1)[1])
    except OSError:
        return {}
    return buckets


def quantile_ms(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """The upper bound (ms) of the bucket holding quantile ``q`` of what was observed between
    two readings of a histogram; None if nothing was."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    for bound, count in zip(bounds, counts, strict=True):
        if count >= q * counts[-1]:
            return bound * 1000
    return None


async def with_relay_latency(
    measure: Any, metrics_url: str, sessions: int, rate: float, seconds: float
) -> tuple[workload.Outcome, dict[str, float | None]]:
    """Run ``measure`` and read the outbox relay's commit-to-confirm histogram around it."""
    before = await asyncio.to_thread(histogram, metrics_url, LATENCY_METRIC)
    outcome: workload.Outcome = await measure(sessions, rate, seconds)
    after = await asyncio.to_thread(histogram, metrics_url, LATENCY_METRIC)
    return outcome, {
        "outbox_p50_ms": quantile_ms(before, after, 0.50),
        "outbox_p99_ms": quantile_ms(before, after, 0.99),
    }


def keeps_up(row: dict[str, Any]) -> bool:
    """Nothing lost or failed, and at least 90 % of the offered rate delivered."""
    return (
        row["lost"] == 0
        and row["failed"] == 0
        and row["delivered_msgs_per_s"] >= 0.9 * row["offered_rate"]
    )


def sweep(
    measure: Any,
    name: str,
    sessions: int,
    rates: list[float],
    seconds: float,
    *,
    growth: float = 1.5,
    ceiling: float = 20_000,
    relay_metrics: str | None = None,
) -> list[dict[str, Any]]:
    """Every rate of ``rates``, then a search for the highest sustained rate: from the lowest
    of them, up by ``growth`` each step while delivery keeps up (nothing lost, >= 90 %)."""
    rows: dict[float, dict[str, Any]] = {}

    def run(rate: float) -> dict[str, Any]:
        relay: dict[str, float | None] = {}
        if relay_metrics is None:
            outcome: workload.Outcome = asyncio.run(measure(sessions, rate, seconds))
        else:
            outcome, relay = asyncio.run(
                with_relay_latency(measure, relay_metrics, sessions, rate, seconds)
            )
        row = {"system": name, **outcome.summary(), **relay}
        rows[rate] = row
        print(
            f"  {name:>10} {rate:>7.0f}/s -> {row['delivered_msgs_per_s']:>8}/s"
            f"  p50 {row['p50_ms']} ms  p99 {row['p99_ms']} ms  lost {row['lost']}",
            flush=True,
        )
        return row

    for rate in rates:
        run(rate)
    rate = min(rates)
    while rate <= ceiling:
        row = rows.get(rate) or run(rate)
        if not keeps_up(row):
            break
        rate = float(round(rate * growth, -1))
    return [rows[r] for r in sorted(rows)]


def highest_sustained(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    good = [r for r in rows if keeps_up(r)]
    return max(good, key=lambda r: r["offered_rate"]) if good else None


def _cell(value: Any) -> Any:
    """A table cell: numbers as they are, a missing figure as a dash."""
    return "-" if value is None else value


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 5))
    for system in sorted({r["system"] for r in rows}):
        mine = sorted((r for r in rows if r["system"] == system), key=lambda r: r["offered_rate"])
        rates = [r["offered_rate"] for r in mine]
        for key, style in (("p50_ms", "-o"), ("p99_ms", "--x")):
            axis.plot(rates, [r[key] for r in mine], style, label=f"{system} {key[:3]}")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("offered messages per second")
    axis.set_ylabel("send -> deliver latency (ms)")
    axis.set_title("Latency against offered rate (same machine, same workload)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--rates", default="100,1000", help="rates always measured; the search starts at the lowest"
    )
    parser.add_argument(
        "--growth", type=float, default=1.5, help="the search's step from one rate to the next"
    )
    parser.add_argument(
        "--idle-connections",
        type=int,
        default=5000,
        help="idle STOMP connections one ws-edge process is asked to hold (0: skip)",
    )
    parser.add_argument(
        "--idle-sources", type=int, default=4, help="client source addresses 127.0.0.1..k"
    )
    parser.add_argument("--quick", action="store_true", help="a short run to check the harness")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    if args.quick:
        args.sessions, args.seconds, rates, args.growth = 10, 2.0, [100.0], 4.0
        args.idle_connections = min(args.idle_connections, 200)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    report: dict[str, Any] = {"started": stamp, "sessions": args.sessions, "seconds": args.seconds}

    print("== PostgreSQL durability limit")
    pg = asyncio.run(
        baseline_pg.measure(
            DATABASE_URL.rsplit("/", 1)[0] + "/postgres",
            concurrency=workload.IN_FLIGHT,
            seconds=args.seconds,
        )
    )
    report["postgres"] = pg.__dict__
    print(
        f"  single-row insert transactions at concurrency {pg.concurrency}:"
        f" {pg.single_row_tps:,.0f}/s;"
        f" batched ({pg.batch_size}): {pg.batched_rows_per_s:,.0f} rows/s"
    )

    print("== RabbitMQ Web-STOMP (no persistence, no auth)")
    web = sweep(
        baseline_webstomp.measure,
        "web-stomp",
        args.sessions,
        rates,
        args.seconds,
        growth=args.growth,
    )

    print("== the chat stack")
    try:
        make("up")
    except subprocess.CalledProcessError:
        make("down")
        raise
    stack = stack_workload.Stack(
        f"http://127.0.0.1:{PORT_BASE}", f"http://127.0.0.1:{PORT_BASE + 10}"
    )
    relay_metrics = f"http://127.0.0.1:{PORT_BASE + 4}/metrics"
    try:
        rest = sweep(
            functools.partial(stack_workload.measure_rest, stack),
            "stack-rest",
            args.sessions,
            rates,
            args.seconds,
            growth=args.growth,
            relay_metrics=relay_metrics,
        )
        stomp = sweep(
            functools.partial(stack_workload.measure_stomp, stack),
            "stack-stomp",
            args.sessions,
            rates,
            args.seconds,
            growth=args.growth,
            relay_metrics=relay_metrics,
        )
    finally:
        make("down")

    idle: dict[str, float] | None = None
    if args.idle_connections > 0:
        print(f"== one ws-edge process holding {args.idle_connections:,} idle connections")
        idle = asyncio.run(
            ws_idle_memory.measure(args.idle_connections, args.idle_sources, parallel=100, hold=3.0)
        )
        print(
            f"  {idle['connections']:,.0f} held (authenticated, 3 subscriptions each):"
            f" {idle['per_connection_kib']:.1f} KiB per connection,"
            f" RSS {idle['rss_after_kib'] / 1024:.0f} MiB, opened in {idle['open_seconds']:.1f} s"
        )
    report["idle_connections"] = idle
    rows = web + rest + stomp
    report["runs"] = rows
    best = {
        name: highest_sustained([r for r in rows if r["system"] == name])
        for name in ("web-stomp", "stack-rest", "stack-stomp")
    }
    report["highest_sustained"] = best

    print("\n== summary")
    columns = (  # key, alignment and width, title
        ("system", "<12", "system"),
        ("offered_rate", ">9", "rate/s"),
        ("delivered_msgs_per_s", ">10", "deliv/s"),
        ("p50_ms", ">10", "p50 ms"),
        ("p95_ms", ">10", "p95 ms"),
        ("p99_ms", ">10", "p99 ms"),
        ("lost", ">6", "lost"),
        ("duplicated", ">5", "dup"),
        ("out_of_order", ">5", "ooo"),
        ("outbox_p50_ms", ">11", "outbox p50"),
        ("outbox_p99_ms", ">11", "outbox p99"),
    )
    print("".join(f"{title:{fmt}}" for _, fmt, title in columns))
    for r in rows:
        print("".join(f"{_cell(r.get(key)):{fmt}}" for key, fmt, _ in columns))
    base = best.get("web-stomp")
    print()
    for name, label in (("stack-rest", "REST sends"), ("stack-stomp", "STOMP sends")):
        ours = best.get(name)
        if ours is None:
            print(f"highest sustained, stack ({label}): none of the offered rates")
            continue
        versus = (
            f" = {ours['offered_rate'] / base['offered_rate']:.2f}x Web-STOMP's"
            f" {base['offered_rate']:.0f}/s (p99 {base['p99_ms']} ms)"
            if base
            else ""
        )
        print(
            f"highest sustained, stack ({label}): {ours['offered_rate']:.0f}/s,"
            f" p99 {ours['p99_ms']} ms{versus};"
            f" {ours['offered_rate'] / pg.single_row_tps:.2f}x the durability limit"
        )
    print(f"durability limit: {pg.single_row_tps:,.0f} single-row commits/s")
    if idle:
        print(
            f"idle connections: {idle['per_connection_kib']:.1f} KiB each at"
            f" {idle['connections']:,.0f} held by one ws-edge process (target under 30 KB)"
        )
    print("reference design targets: 5,000 msg/s with p99 under 100 ms")
    out = RESULTS / f"{stamp}.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    plot(rows, RESULTS / f"{stamp}.png")
    print(f"\nwrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
