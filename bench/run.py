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


def metric(url: str, name: str) -> float | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            for line in answer.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.rsplit(" ", 1)[1])
    except OSError:
        return None
    return None


def sweep(
    measure: Any, name: str, sessions: int, rates: list[float], seconds: float
) -> list[dict[str, Any]]:
    """Fixed rates first, then doubling until delivery falls behind (or loses anything)."""
    rows: list[dict[str, Any]] = []
    for rate in rates:
        outcome: workload.Outcome = asyncio.run(measure(sessions, rate, seconds))
        row = {"system": name, **outcome.summary()}
        rows.append(row)
        print(
            f"  {name:>10} {rate:>7.0f}/s -> {row['delivered_msgs_per_s']:>8}/s"
            f"  p50 {row['p50_ms']} ms  p99 {row['p99_ms']} ms  lost {row['lost']}",
            flush=True,
        )
        if outcome.lost or outcome.failed or outcome.delivered_rate < 0.9 * rate:
            break
    return rows


def highest_sustained(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    good = [
        r
        for r in rows
        if r["lost"] == 0
        and r["failed"] == 0
        and r["delivered_msgs_per_s"] >= 0.9 * r["offered_rate"]
    ]
    return max(good, key=lambda r: r["offered_rate"]) if good else None


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
    parser.add_argument("--rates", default="100,1000,2000,4000,8000")
    parser.add_argument("--quick", action="store_true", help="a short run to check the harness")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    if args.quick:
        args.sessions, args.seconds, rates = 10, 2.0, [100, 400]
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    report: dict[str, Any] = {"started": stamp, "sessions": args.sessions, "seconds": args.seconds}

    print("== PostgreSQL durability limit")
    pg = asyncio.run(
        baseline_pg.measure(
            DATABASE_URL.rsplit("/", 1)[0] + "/postgres", concurrency=32, seconds=args.seconds
        )
    )
    report["postgres"] = pg.__dict__
    print(
        f"  single-row insert transactions: {pg.single_row_tps:,.0f}/s;"
        f" batched ({pg.batch_size}): {pg.batched_rows_per_s:,.0f} rows/s"
    )

    print("== RabbitMQ Web-STOMP (no persistence, no auth)")
    web = sweep(baseline_webstomp.measure, "web-stomp", args.sessions, rates, args.seconds)

    print("== the chat stack")
    make("up")
    stack = stack_workload.Stack(
        f"http://127.0.0.1:{PORT_BASE}", f"http://127.0.0.1:{PORT_BASE + 10}"
    )
    try:
        rest = sweep(
            functools.partial(stack_workload.measure_rest, stack),
            "stack-rest",
            args.sessions,
            rates,
            args.seconds,
        )
        stomp = sweep(
            functools.partial(stack_workload.measure_stomp, stack),
            "stack-stomp",
            args.sessions,
            rates,
            args.seconds,
        )
        report["outbox_lag_seconds"] = metric(
            f"http://127.0.0.1:{PORT_BASE + 4}/metrics", "chat_outbox_oldest_pending_seconds"
        )
    finally:
        make("down")
    rows = web + rest + stomp
    report["runs"] = rows
    best = {
        name: highest_sustained([r for r in rows if r["system"] == name])
        for name in ("web-stomp", "stack-rest", "stack-stomp")
    }
    report["highest_sustained"] = best

    print("\n== summary")
    columns = (
        ("system", "<12", "system"),
        ("offered_rate", ">8.0f", "rate/s"),
        ("delivered_msgs_per_s", ">10", "deliv/s"),
        ("p50_ms", ">9", "p50 ms"),
        ("p95_ms", ">9", "p95 ms"),
        ("p99_ms", ">9", "p99 ms"),
        ("lost", ">6", "lost"),
        ("duplicated", ">5", "dup"),
    )
    print("".join(f"{title:{fmt.rstrip('.0f')}}" for _, fmt, title in columns))
    for r in rows:
        print("".join(f"{r[key]:{fmt}}" for key, fmt, _ in columns))
    base, ours = best.get("web-stomp"), best.get("stack-rest")
    if base and ours:
        print(
            f"\nhighest sustained: stack (REST) {ours['offered_rate']:.0f}/s"
            f" vs Web-STOMP {base['offered_rate']:.0f}/s"
            f" = {ours['offered_rate'] / base['offered_rate']:.2f}x;"
            f" p99 at that rate {ours['p99_ms']} ms vs {base['p99_ms']} ms"
        )
    best_rest = ours["offered_rate"] if ours else 0.0
    print(
        f"durability limit: {pg.single_row_tps:,.0f} single-row commits/s"
        f" (stack REST best / that = {best_rest / pg.single_row_tps:.2f})"
    )
    print("reference design targets: 5,000 msg/s with p99 under 100 ms")
    out = RESULTS / f"{stamp}.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    plot(rows, RESULTS / f"{stamp}.png")
    print(f"\nwrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
