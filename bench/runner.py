"""bench/run: trackd side by side with nginx, a naive baseline and the design floor, in one run.

Rounds run every target in turn (nginx, baseline, floor, trackd with 1 and 2 workers), the order
rotated each round; each target is started fresh, takes the three scenarios (single, batch,
mixed; each a short warm-up and a measured wrk run), and is stopped. Ratios are computed
inside each round, then their median is taken. After each run the rows in trackd's log shards
(and the baseline's and the floor's tables) are counted and must cover every event
acknowledged with a 200.
Then freshness (when the warehouse exists), the console's live stream (bench/live.py) and the
warehouse queries on generated rows. With --scale-out, last, bench/scale_out.py: rows/s into
PostgreSQL by 1 and 2 pipeline processes on the NATS log, and freshness end to end.

Results: bench/results/<time>/results.json and summary.md (the tables for docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bodies
import freshness
import live
import loadgen
import machine
import procstat
import report
import scale_out
import targets
import warehouse_load
import warehouse_queries

BENCH = Path(__file__).resolve().parent
TARGETS = [
    targets.Target("nginx", "nginx", 2),
    targets.Target("baseline", "baseline", 2),
    targets.Target("floor", "floor", 2),
    targets.Target("trackd-1w", "trackd", 1),
    targets.Target("trackd-2w", "trackd", 2),
    targets.Target("trackd-2w-plan", "trackd", 2, plan=True),
    targets.Target("trackd-nats-1w", "trackd", 1, nats=True),
    targets.Target("trackd-nats-2w", "trackd", 2, nats=True),
]
SCENARIOS = ["single", "batch", "mixed"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="short run: 1 round of 3 s runs, 1M warehouse rows, 5 s freshness")
    parser.add_argument("--rounds", type=int, help="rounds (default 3; --quick 1)")
    parser.add_argument("--duration", type=float, help="seconds per measured run (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per run")
    parser.add_argument("--connections", type=int, default=64,
                        help="wrk connections for single and mixed (default 64)")
    parser.add_argument("--batch-connections", type=int, default=16,
                        help="wrk connections for batches of 100 (default 16)")
    parser.add_argument("--only", nargs="+", choices=[t.name for t in TARGETS],
                        help="run only these targets")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=SCENARIOS)
    parser.add_argument("--rows", type=int, help="warehouse rows (default 10,000,000)")
    parser.add_argument("--freshness-seconds", type=float, help="probe time (default 10)")
    parser.add_argument("--freshness-rate", type=float,
                        help="background events/s during freshness (default: half of "
                             "trackd-2w's median batch events/s in this run)")
    parser.add_argument("--skip-load", action="store_true", help="skip the load scenarios")
    parser.add_argument("--skip-freshness", action="store_true")
    parser.add_argument("--skip-queries", action="store_true")
    parser.add_argument("--skip-warehouse-load", action="store_true",
                        help="skip messages/s loaded into DuckDB vs 1 and 2 PostgreSQL loaders")
    parser.add_argument("--load-messages", type=int,
                        help="messages per warehouse-load run (default 100,000; --quick 20,000)")
    parser.add_argument("--sustained-messages", type=int,
                        help="messages per warehouse-load run of the sustained backlog, where "
                             "the last batch's commit weighs little (default 500,000; --quick "
                             "100,000; 0 skips it)")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432",
                        help="PostgreSQL server for the warehouse-load scenario (trust auth)")
    parser.add_argument("--scale-out", action="store_true",
                        help="also run bench/scale_out.py: rows/s into PostgreSQL by 1 and 2 "
                             "pipeline processes on the NATS log, freshness end to end")
    parser.add_argument("--scale-out-messages", type=int,
                        help="scale-out: messages per load (default 50,000; --quick 10,000)")
    parser.add_argument("--skip-live", action="store_true",
                        help="skip the console's live stream (bench/live.py)")
    parser.add_argument("--live-seconds", type=float,
                        help="live stream: seconds of paced messages and of each throughput "
                             "run (default 8; --quick 4)")
    parser.add_argument("--gateway-only", action="store_true",
                        help="run trackd without its pipeline (warehouse, archive) to measure "
                             "the tracking API alone; implies --skip-freshness and --skip-live")
    parser.add_argument("--keep-data", action="store_true",
                        help="keep each server's stored data under servers/ (several GB)")
    parser.add_argument("--port-base", type=int, default=18600)
    parser.add_argument("--out", type=Path, help="results directory")
    parser.add_argument("--report", type=Path, metavar="RESULTS_JSON",
                        help="only print the tables of an earlier run's results.json")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.duration = args.duration or (3.0 if args.quick else 5.0)
    args.rows = args.rows or (1_000_000 if args.quick else 10_000_000)
    args.freshness_seconds = args.freshness_seconds or (5.0 if args.quick else 10.0)
    args.load_messages = args.load_messages or (20_000 if args.quick else 100_000)
    if args.sustained_messages is None:
        args.sustained_messages = 100_000 if args.quick else 500_000
    args.scale_out_messages = args.scale_out_messages or (10_000 if args.quick else 50_000)
    args.live_seconds = args.live_seconds or (4.0 if args.quick else 8.0)
    if args.gateway_only:
        args.skip_freshness = True
        args.skip_live = True
    return args


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def measure_target(target: targets.Target, round_no: int, args: argparse.Namespace,
                   out: Path, templates: dict[str, dict[str, Any]], port: int,
                   scenarios: list[str]) -> list[dict[str, Any]]:
    """Start one target, run each scenario against it, stop it."""
    workdir = out / "servers" / f"r{round_no}-{target.name}"
    server = targets.start(target, workdir, port, baseline_venv=BENCH / ".venv-baseline",
                           gateway_only=args.gateway_only)
    results: list[dict[str, Any]] = []
    acked_events = 1  # the start-up probe
    try:
        for scenario in scenarios:
            spec = templates[scenario]
            per_request = spec["events_per_request"]
            connections = args.batch_connections if scenario == "batch" else args.connections
            tag = f"r{round_no}-{target.name}-{scenario}"
            warm = loadgen.run_wrk(server.url, templates=spec["file"], auth=targets.AUTH,
                                   run_id=f"{tag}-warm", connections=connections,
                                   duration=args.warmup, result=out / "wrk" / f"{tag}-warm.json")
            acked_events += loadgen.acked_requests(warm) * per_request
            monitor = procstat.GroupMonitor(server.pgid)
            monitor.start()
            summary = loadgen.run_wrk(server.url, templates=spec["file"], auth=targets.AUTH,
                                      run_id=tag, connections=connections,
                                      duration=args.duration, result=out / "wrk" / f"{tag}.json")
            usage = monitor.stop()
            acked = loadgen.acked_requests(summary)
            acked_events += acked * per_request
            time.sleep(0.3)
            rows = server.count_rows()
            seconds = summary["duration_us"] / 1e6
            peak_by_role: dict[str, int] = {}
            for pid, rss in monitor.peak_rss.items():
                role = server.role(pid, monitor.roles.get(pid, ""))
                peak_by_role[role] = max(peak_by_role.get(role, 0), rss)
            cores_by_role: dict[str, float] = {}
            for pid, cpu in monitor.cpu_by_pid.items():
                role = server.role(pid, monitor.roles.get(pid, ""))
                cores_by_role[role] = cores_by_role.get(role, 0.0) + cpu / usage["wall_s"]
            result = {
                "round": round_no, "target": target.name, "scenario": scenario,
                "connections": connections, "events_per_request": per_request,
                "requests": summary["requests"], "acked_requests": acked,
                "errors": summary["errors"], "seconds": seconds,
                "req_s": acked / seconds, "events_s": acked * per_request / seconds,
                "p50_ms": summary["latency_us"]["p50"] / 1000,
                "p99_ms": summary["latency_us"]["p99"] / 1000,
                "max_ms": summary["latency_us"]["max"] / 1000,
                "server_cores": usage["server_cores"], "machine_busy": usage["machine_busy"],
                "cores_by_role": cores_by_role, "cpu_stall": usage["cpu_stall"],
                "wrk_cores": summary["wrk_cores"],
                "peak_rss_mb": {role: rss / 1e6 for role, rss in peak_by_role.items()},
                "rows_total": rows, "acked_events_total": acked_events,
                "rows_cover_acked": None if rows is None else rows >= acked_events,
            }
            results.append(result)
            check = "" if rows is None else (
                f", rows {rows} >= acked {acked_events}: {result['rows_cover_acked']}")
            log(f"  {target.name:9} {scenario:6} {result['events_s']:>10,.0f} events/s "
                f"{result['req_s']:>8,.0f} req/s p50 {result['p50_ms']:.1f} ms "
                f"p99 {result['p99_ms']:.1f} ms cpu {usage['server_cores']:.2f} "
                f"(wrk {summary['wrk_cores']:.2f}){check}")
    finally:
        _finish(server, args)
    return results


def run_load(args: argparse.Namespace, out: Path,
             templates: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    chosen = [t for t in TARGETS if not args.only or t.name in args.only]
    ports = {t.name: args.port_base + i for i, t in enumerate(TARGETS)}
    runs: list[dict[str, Any]] = []
    for round_no in range(1, args.rounds + 1):
        shift = (round_no - 1) % len(chosen)
        order = chosen[shift:] + chosen[:shift]
        sshift = (round_no - 1) % len(args.scenarios)
        scenarios = args.scenarios[sshift:] + args.scenarios[:sshift]
        log(f"round {round_no}/{args.rounds}: {', '.join(t.name for t in order)}")
        for target in order:
            runs.extend(measure_target(target, round_no, args, out, templates,
                                       ports[target.name], scenarios))
    return runs


def run_freshness(args: argparse.Namespace, out: Path, templates: dict[str, dict[str, Any]],
                  runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Freshness at half of trackd-2w's batch maximum (the gateway's), then, when the
    warehouse fell behind there, again at half of the rate the warehouse loads with the
    machine to itself (`end_to_end`): the maximum trackd sustains end to end is at most that."""
    best = [r["events_s"] for r in runs if r["target"] == "trackd-2w" and r["scenario"] == "batch"]
    max_events = statistics.median(best) if best else None
    if args.freshness_rate:
        rate_events = args.freshness_rate
    elif max_events:
        rate_events = max_events / 2
    else:
        return {"available": False,
                "reason": "no trackd-2w batch run to take half of: give --freshness-rate"}
    result = _freshness_run(args, out, templates, "freshness", rate_events)
    result.update(max_events_s=max_events)
    drain = result.get("drain_rate_messages_s")
    if args.freshness_rate or not drain:
        return result
    log(f"  the warehouse caught up at {drain:,.0f} messages/s once the load stopped; "
        f"freshness again at half of that, {drain / 2:,.0f} events/s")
    result["end_to_end"] = _freshness_run(args, out, templates, "freshness-e2e", drain / 2)
    return result


def _freshness_run(args: argparse.Namespace, out: Path, templates: dict[str, dict[str, Any]],
                   name: str, rate_events: float) -> dict[str, Any]:
    """One freshness measurement on a fresh trackd-2w with paced batches at `rate_events`."""
    target = targets.Target("trackd-2w", "trackd", 2)
    server = targets.start(target, out / "servers" / name, args.port_base + 10,
                           baseline_venv=BENCH / ".venv-baseline")
    try:
        ready, why = freshness.warehouse_ready(server)
        if not ready:
            return {"available": False, "reason": why}
        spec = templates["batch"]
        # Background load: paced batches, started first, running past the probes' end.
        background: dict[str, Any] = {}

        def load() -> None:
            background.update(loadgen.run_wrk(
                server.url, templates=spec["file"], auth=targets.AUTH, run_id=f"{name}-load",
                connections=args.batch_connections, duration=args.freshness_seconds + 4,
                result=out / "wrk" / f"{name}-load.json",
                rate=rate_events / spec["events_per_request"]))

        thread = threading.Thread(target=load, daemon=True)
        thread.start()
        time.sleep(2)
        # wrk stops `freshness_seconds + 2` s after the probes start (+ its own start-up)
        result = freshness.measure(server, seconds=args.freshness_seconds, run_id=name,
                                   load_stops_at=args.freshness_seconds + 2.5)
        thread.join()
        seconds = background["duration_us"] / 1e6
        achieved = loadgen.acked_requests(background) * spec["events_per_request"] / seconds
        result.update(available=True, target_events_s=rate_events, achieved_events_s=achieved,
                      background_p99_ms=background["latency_us"]["p99"] / 1000)
        return result
    finally:
        _finish(server, args)


def _finish(server: targets.Running, args: argparse.Namespace) -> None:
    """Stop a server, delete what it stored, and flush the page cache, so that the next server
    never starts while the kernel is still writing this one's data out behind its fsyncs."""
    server.stop()
    if not args.keep_data:
        server.discard_data()
    os.sync()


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.report:
        print(report.render(json.loads(args.report.read_text())))
        return 0
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or BENCH / "results" / stamp
    (out / "wrk").mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"started": stamp, "args": {k: str(v) for k, v in vars(args).items()},
                           "machine": machine.facts(BENCH / ".venv-baseline" / "bin" / "python")}
    log(f"results in {out}")
    log(f"machine: {doc['machine']['nproc']} cores, {doc['machine']['cpu_model']}, "
        f"{doc['machine']['memory_gib']} GiB")
    templates = bodies.write_templates(out / "bodies", targets.WRITE_KEY)
    doc["bodies"] = templates
    started = time.monotonic()

    def save() -> None:  # after each stage, so a later failure loses nothing measured
        (out / "results.json").write_text(json.dumps(doc, indent=2))

    if not args.skip_load:
        doc["runs"] = run_load(args, out, templates)
        save()
    if not args.skip_freshness:
        log("freshness at half of trackd-2w's batch maximum")
        try:
            doc["freshness"] = run_freshness(args, out, templates, doc.get("runs", []))
        except Exception as exc:  # report it, keep the rest of the results
            traceback.print_exc()
            doc["freshness"] = {"available": False, "reason": f"failed: {exc}"}
        for line in report.freshness_lines(doc["freshness"]):
            log(f"  {line}")
        save()
    if not args.skip_live:
        log("the console's live stream: latency at 50 msgs/s, throughput with 5 stalled "
            "subscribers")
        try:
            doc["live"] = live.measure(args.live_seconds, 2, 50.0, args.batch_connections,
                                       lambda line: log(f"  {line}"))
        except Exception as exc:  # report it, keep the rest of the results
            traceback.print_exc()
            doc["live"] = {"available": False, "reason": f"failed: {exc}"}
        save()
    if not args.skip_queries:
        log(f"warehouse queries on {args.rows:,} generated rows")
        try:
            path, generated = warehouse_queries.ensure_database(BENCH / "results" / "cache",
                                                                args.rows)
            doc["queries"] = warehouse_queries.run_queries(path)
            doc["queries"]["generate_s"] = generated
            for name, q in doc["queries"]["queries"].items():
                log(f"  {name}: median {q['median_ms']:.1f} ms")
        except Exception:
            traceback.print_exc()
        save()
    sizes = [("warehouse_load", args.load_messages),
             ("warehouse_load_sustained", args.sustained_messages)]
    for key, messages in sizes if not args.skip_warehouse_load else []:
        if not messages:
            continue
        log(f"warehouse load: {messages:,} messages into DuckDB, 1 and 2 PostgreSQL loaders")
        try:
            doc[key] = warehouse_load.run(messages, args.rounds, args.postgres, log)
        except (Exception, SystemExit):
            traceback.print_exc()
        save()
    if args.scale_out:
        log(f"scale-out on the NATS log: {args.scale_out_messages:,} messages loaded by 1 and 2 "
            "pipeline processes, freshness")
        try:
            doc["scale_out"] = scale_out.run(args.scale_out_messages, args.freshness_seconds * 2,
                                             500.0, args.postgres, log)
        except Exception as exc:  # report it, keep the rest of the results
            traceback.print_exc()
            doc["scale_out"] = {"available": False, "reason": f"failed: {exc}"}
        save()
    doc["elapsed_s"] = time.monotonic() - started
    save()
    summary = report.render(doc)
    (out / "summary.md").write_text(summary)
    print(summary)
    log(f"done in {doc['elapsed_s']:.0f} s; {out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
