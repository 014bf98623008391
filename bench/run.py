"""`make bench`: the stack and its baselines on the same machine, with one open-loop generator
and one workload, in one run.

Prints per-step lines as it goes, then a table, CPU per message by process, and each system's
headline figures; writes bench/results/<time>.json (keys in docs/benchmarks.md) and a PNG.
Loopback only; every phase is bounded in time. `--quick` (`make bench-quick`) is a short run
that still prints every headline figure."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import volume

import baseline_pg
import generator
import report
import sweep
import systems
import ws_idle_memory

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
RUN_DIR = ROOT / ".run" / "bench"
DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/chat_bench"
)
PORT_BASE = int(os.environ.get("BENCH_PORT_BASE", "28080"))
VHOST = "chat_bench"
PG_CONCURRENCY = 64

# The stack runs with the product's limits raised: the benchmark is one client address and a few
# users sending far faster than a person would.
STACK_ENV = {
    "RUN_DIR": str(RUN_DIR),
    "CHAT_PORT_BASE": str(PORT_BASE),
    "DATABASE_URL": DATABASE_URL,
    "AMQP_VHOST": VHOST,
    "LOG_LEVEL": "WARNING",
    "IP_BURST": "1000000",
    "IP_RATE_PER_SECOND": "1000000",
    "USER_BURST": "1000000",
    "USER_RATE_PER_SECOND": "1000000",
    "WS_CONNECT_BURST": "1000000",
    "WS_CONNECT_RATE_PER_SECOND": "1000000",
    "INIT_BURST": "1000000",
    "INIT_RATE_PER_SECOND": "1000000",
    "SEND_BURST": "1000000",
    "SEND_RATE_PER_SECOND": "1000000",
    "SENDS_BURST": "1000000",
    "SENDS_PER_SECOND": "1000000",
    "DUPLICATE_CONTENT_LIMIT": "1000000",
}
LABELS = {"rest": "REST sends", "stomp": "STOMP sends"}
ROUTE_LABELS = {"gateway": "via the gateway's /ws", "direct": "straight to ws-edge"}


def make(target: str) -> None:
    subprocess.run(["make", target], cwd=ROOT, env={**os.environ, **STACK_ENV}, check=True)


async def fresh_database() -> None:
    """The benchmark starts on an empty database and virtual host (comparable runs)."""
    admin = await asyncpg.connect(DATABASE_URL.rsplit("/", 1)[0] + "/postgres")
    try:
        name = DATABASE_URL.rsplit("/", 1)[1]
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
    ctl = shutil.which("rabbitmqctl")
    if ctl:
        await asyncio.to_thread(
            subprocess.run, [ctl, "-q", "delete_vhost", VHOST], capture_output=True, check=False
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured window per step")
    parser.add_argument("--warmup", type=float, default=1.0, help="before the window, per step")
    parser.add_argument(
        "--drain",
        type=float,
        default=10.0,
        help="after the schedule, at most: what is not delivered by then counts as lost",
    )
    parser.add_argument("--rates", default="100,500", help="always measured; then the search")
    parser.add_argument("--growth", type=float, default=1.5, help="the search's step up")
    parser.add_argument(
        "--reference-rate",
        type=float,
        default=500.0,
        help="the rate whose CPU per message is the headline",
    )
    parser.add_argument("--paths", default="rest,stomp", help="send paths: rest, stomp")
    parser.add_argument("--routes", default="gateway,direct", help="WebSocket routes")
    parser.add_argument("--gen-procs", type=int, default=1, help="generator processes")
    parser.add_argument("--no-web-stomp", action="store_true", help="skip that baseline")
    parser.add_argument(
        "--keep-database", action="store_true", help="do not start from an empty database"
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
    parser.add_argument(
        "--quick", action="store_true", help="under 3 minutes: shorter steps, a coarser search"
    )
    parser.add_argument(
        "--volume",
        type=int,
        default=0,
        help="instead of the sweeps: measure at --volume-rate on the fresh database, push this"
        " many messages through the stack, measure again (decay with volume)",
    )
    parser.add_argument("--volume-rate", type=float, default=100.0)
    args = parser.parse_args()
    if args.quick:
        args.sessions, args.seconds, args.warmup, args.drain = 20, 2.0, 0.5, 4.0
        args.growth = 2.0
        args.idle_connections = min(args.idle_connections, 300)
    return args


async def measure_all(args: argparse.Namespace) -> dict[str, Any]:
    rates = [float(r) for r in args.rates.split(",")]
    timing = sweep.Timing(args.warmup, args.seconds, args.drain)
    precision = 1.5 if args.quick else 1.25
    max_steps = 5 if args.quick else 14
    rows: list[dict[str, Any]] = []
    out: dict[str, Any] = {}

    print(f"== PostgreSQL durability limit (concurrency {PG_CONCURRENCY})", flush=True)
    pg = await baseline_pg.measure(
        DATABASE_URL.rsplit("/", 1)[0] + "/postgres",
        concurrency=PG_CONCURRENCY,
        seconds=min(args.seconds, 3.0),
    )
    out["postgres"] = pg.__dict__
    print(
        f"  single-row insert transactions: {pg.single_row_tps:,.0f}/s;"
        f" batched ({pg.batch_size}): {pg.batched_rows_per_s:,.0f} rows/s",
        flush=True,
    )

    if not args.no_web_stomp:
        print("== RabbitMQ Web-STOMP (no persistence, no auth), same generator", flush=True)
        sessions = systems.web_stomp_sessions(args.sessions)
        rows += await sweep.sweep(
            functools.partial(
                generator.started,
                "webstomp",
                sessions,
                ws_url=systems.WEB_STOMP_URL,
                connect_headers=systems.WEB_STOMP_LOGIN,
                processes=args.gen_procs,
            ),
            systems.web_stomp(),
            rates,
            timing,
            growth=args.growth,
            precision=precision,
            max_steps=max_steps,
        )

    print("== the chat stack", flush=True)
    if not args.keep_database:
        await fresh_database()
    try:
        await asyncio.to_thread(make, "up")
        stack = systems.Stack(PORT_BASE, RUN_DIR, DATABASE_URL)
        specs = await stack.sessions(args.sessions)
        counters = await asyncpg.connect(DATABASE_URL)
        try:
            for path in args.paths.split(","):
                for route in args.routes.split(","):
                    print(f"-- {LABELS[path]}, {ROUTE_LABELS[route]}", flush=True)
                    rows += await sweep.sweep(
                        functools.partial(
                            generator.started,
                            path,
                            specs,
                            ws_url=stack.ws_url(route),
                            http_url=stack.gateway,
                            processes=args.gen_procs,
                        ),
                        stack.system(path, route, counters),
                        rates,
                        timing,
                        growth=args.growth,
                        precision=precision,
                        max_steps=max_steps,
                    )
        finally:
            await counters.close()
    finally:
        await asyncio.to_thread(make, "down")

    if args.idle_connections > 0:
        print(f"== one ws-edge process holding {args.idle_connections:,} idle connections")
        idle = await ws_idle_memory.measure(
            args.idle_connections, args.idle_sources, parallel=100, hold=3.0
        )
        print(
            f"  {idle['connections']:,.0f} held (authenticated, 3 subscriptions each):"
            f" {idle['per_connection_kib']:.1f} KiB per connection,"
            f" RSS {idle['rss_after_kib'] / 1024:.0f} MiB, opened in {idle['open_seconds']:.1f} s",
            flush=True,
        )
        out["idle_connections"] = idle
    else:
        out["idle_connections"] = None
    out["runs"] = rows
    return out


async def measure_volume(args: argparse.Namespace) -> dict[str, Any]:
    """The stack at a light rate, fresh and after ``args.volume`` messages (REST sends,
    clients on the gateway's /ws)."""
    timing = sweep.Timing(args.warmup, max(args.seconds, 10.0), args.drain)
    if not args.keep_database:
        await fresh_database()
    out: dict[str, Any] = {}
    try:
        await asyncio.to_thread(make, "up")
        stack = systems.Stack(PORT_BASE, RUN_DIR, DATABASE_URL)
        specs = await stack.sessions(args.sessions)
        counters = await asyncpg.connect(DATABASE_URL)
        try:
            system = stack.system("rest", "gateway", counters)
            async with generator.started(
                "rest", specs, ws_url=stack.ws_url("gateway"), http_url=stack.gateway
            ) as gen:
                print(f"== fresh database: {args.volume_rate:.0f} msg/s", flush=True)
                await sweep.settle()
                fresh = await sweep.measure(gen, system, args.volume_rate, timing)
                out["fresh"] = {**fresh, "tables": await volume.table_sizes(counters)}
                print(f"== pushing {args.volume:,} messages (bulk sends)", flush=True)
                pushed = await volume.push(stack.gateway, specs, args.volume)
                pushed["drain_seconds"] = await volume.drained(counters)
                out["pushed"] = pushed
                print(f"  {pushed}", flush=True)
                await sweep.settle()
                print(f"== after {args.volume:,} messages: {args.volume_rate:.0f} msg/s")
                after = await sweep.measure(gen, system, args.volume_rate, timing)
                out["after"] = {**after, "tables": await volume.table_sizes(counters)}
            out["ratios"] = volume.compare(fresh, after)
        finally:
            await counters.close()
    finally:
        await asyncio.to_thread(make, "down")
    return out


def report_volume(args: argparse.Namespace, measured: dict[str, Any], stamp: str) -> None:
    fresh, after = measured["fresh"], measured["after"]
    print(f"\n== decay with volume ({args.volume:,} messages between the two measurements)")
    print(f"{'':<28}{'fresh':>12}{'after':>12}")
    figures: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
        ("PostgreSQL CPU ms/msg", lambda r: r["cpu_ms_per_msg"].get("postgres")),
        ("system CPU ms/msg", lambda r: r["stack_cpu_ms_per_msg"]),
        ("p50 ms", lambda r: r["p50_ms"]),
        ("p99 ms", lambda r: r["p99_ms"]),
        ("PG commits/msg", lambda r: r.get("pg_commits_per_msg")),
        ("lost", lambda r: r["lost"]),
    ]
    for label, get in figures:
        print(f"{label:<28}{report.cell(get(fresh)):>12}{report.cell(get(after)):>12}")
    print(f"ratios after/fresh: {measured['ratios']}")
    print(f"\n{'table':<26}{'MiB fresh':>11}{'MiB after':>11}{'dead fresh':>12}{'dead after':>12}")
    for name in sorted(after["tables"]):
        a, f = after["tables"][name], fresh["tables"].get(name, {})
        print(
            f"{name:<26}{f.get('total_bytes', 0) / 2**20:>11.1f}{a['total_bytes'] / 2**20:>11.1f}"
            f"{f.get('dead_rows', 0):>12,}{a['dead_rows']:>12,}"
        )
    document = {
        "schema": report.SCHEMA,
        "started": stamp,
        "machine": {"cores": sweep.CORES},
        "config": {"volume": args.volume, "rate": args.volume_rate, "sessions": args.sessions},
        "volume": measured,
    }
    out = RESULTS / f"{stamp}-volume.json"
    out.write_text(json.dumps(document, indent=2, default=str))
    print(f"\nwrote {out}")


def main() -> int:
    args = parse_args()
    if args.volume:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        report_volume(args, asyncio.run(measure_volume(args)), stamp)
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    measured = asyncio.run(measure_all(args))
    rows = measured["runs"]
    pg = measured["postgres"]
    systems_seen = list(dict.fromkeys(r["system"] for r in rows))
    by_system = {name: [r for r in rows if r["system"] == name] for name in systems_seen}
    web = sweep.highest_sustained(by_system.get("web-stomp", []))
    headlines = {
        name: report.headline(
            mine,
            reference_rate=args.reference_rate,
            web_stomp_rate=web["offered_rate"] if web else None,
            pg_single_row_tps=pg["single_row_tps"],
        )
        for name, mine in by_system.items()
    }
    document = {
        "schema": report.SCHEMA,
        "started": stamp,
        "machine": {"cores": sweep.CORES, "headroom": sweep.HEADROOM},
        "config": {
            "sessions": args.sessions,
            "warmup_seconds": args.warmup,
            "window_seconds": args.seconds,
            "drain_seconds": args.drain,
            "rates": args.rates,
            "growth": args.growth,
            "reference_rate": args.reference_rate,
            "generator_processes": args.gen_procs,
            "quick": args.quick,
        },
        "postgres": pg,
        "runs": rows,
        "headline": headlines,
        "idle_connections": measured["idle_connections"],
    }

    print("\n== summary (open loop; latency from each message's scheduled send time)")
    for line in report.table(rows):
        print(line)
    print(f"\n== CPU ms per delivered message by process, at {args.reference_rate:.0f}/s offered")
    for line in report.process_table(rows, args.reference_rate):
        print(line)
    print()
    for name, figures in headlines.items():
        if name == "web-stomp":
            label = "Web-STOMP (broker only)"
        else:
            send_path, route = name.removeprefix("stack-").split("-", 1)
            label = f"stack, {LABELS[send_path]}, {ROUTE_LABELS[route]}"
        for line in report.headline_lines(name, figures, label):
            print(line)
    print(
        f"PostgreSQL: {pg['single_row_tps']:,.0f} single-row commits/s at concurrency"
        f" {pg['concurrency']}, {pg['batched_rows_per_s']:,.0f} rows/s in batches"
    )
    idle = measured["idle_connections"]
    if idle:
        print(
            f"idle connections: {idle['per_connection_kib']:.1f} KiB each at"
            f" {idle['connections']:,.0f} held by one ws-edge process"
        )
    out = RESULTS / f"{stamp}.json"
    out.write_text(json.dumps(document, indent=2, default=str))
    report.plot(rows, RESULTS / f"{stamp}.png")
    print(f"\nwrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
