"""Turn a run's results into the markdown tables of docs/benchmarks.md."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import scale_out
import warehouse_load

TARGET_ORDER = ["nginx", "baseline", "floor", "trackd-1w", "trackd-2w", "trackd-2w-plan",
                "trackd-nats-1w", "trackd-nats-2w"]
LABELS = {
    "nginx": "nginx static 200 (2 workers)",
    "baseline": "naive FastAPI + pydantic + SQLite commit/request (2 workers)",
    "floor": "design floor: raw ASGI + msgspec + group commit, nothing else (2 workers)",
    "trackd-1w": "trackd, fsync before 200, 1 worker",
    "trackd-2w": "trackd, fsync before 200, 2 workers",
    "trackd-2w-plan": "trackd, 2 workers, tracking plan of 50 events on the source",
    "trackd-nats-1w": "trackd on the NATS log (PubAck of every message before 200), 1 worker",
    "trackd-nats-2w": "trackd on the NATS log (PubAck of every message before 200), 2 workers",
}
SCENARIO_TITLES = {
    "single": "one track per request (POST /v1/track)",
    "batch": "analytics-python batches of 100 events (POST /v1/batch)",
    "mixed": "mixed stream of all six types, one per request (/v1/<type>)",
}


def _label(doc: dict[str, Any], target: str) -> str:
    label = LABELS[target]
    if doc["args"].get("gateway_only") == "True":
        label = label.replace("trackd,", "trackd without its pipeline,")
    return label


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _range(values: list[float], fmt: Callable[[float], str]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(_median(values))} ({fmt(min(values))}..{fmt(max(values))})"


def _int(value: float) -> str:
    return f"{value:,.0f}"


def _one(value: float) -> str:
    return f"{value:.1f}"


def _two(value: float) -> str:
    return f"{value:.2f}"


def _ratio(value: float) -> str:
    return f"{value:.2f}x"


def _runs(doc: dict[str, Any], target: str, scenario: str) -> list[dict[str, Any]]:
    return [r for r in doc.get("runs", []) if r["target"] == target and r["scenario"] == scenario]


def round_ratios(doc: dict[str, Any], scenario: str, num: str, den: str) -> list[float]:
    """events/s of `num` over `den`, one ratio per round in which both ran."""
    by_round: dict[int, dict[str, float]] = {}
    for r in doc.get("runs", []):
        if r["scenario"] == scenario:
            by_round.setdefault(r["round"], {})[r["target"]] = r["events_s"]
    return [v[num] / v[den] for v in by_round.values() if num in v and den in v and v[den]]


def _peak(runs: list[dict[str, Any]], roles: tuple[str, ...]) -> float | None:
    values = [mb for r in runs for role, mb in r["peak_rss_mb"].items() if role in roles]
    return max(values) if values else None


def _other(run: dict[str, Any], nproc: int) -> float:
    """Cores used by everything else on the machine during the run: the noise."""
    return max(0.0, run["machine_busy"] * nproc - run["server_cores"] - run["wrk_cores"])


def _stall(runs: list[dict[str, Any]]) -> str:
    values = [r["cpu_stall"] * 100 for r in runs if r.get("cpu_stall") is not None]
    return f"{_median(values):.0f}" if values else "-"


def scenario_table(doc: dict[str, Any], scenario: str) -> list[str]:
    lines = [
        "| server | events/s median (min..max) | req/s | p50 ms | p99 ms | server CPU (cores) "
        "| server CPU µs/event | wrk CPU | other load (cores) | CPU stall % "
        "| peak RSS MB: worker / main | non-2xx, socket errors | rows >= acked |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    nproc = doc["machine"]["nproc"] or 1
    for target in TARGET_ORDER:
        runs = _runs(doc, target, scenario)
        if not runs:
            continue
        worker = _peak(runs, ("worker", "gateway worker"))
        main = _peak(runs, ("master", "main", "supervisor+pipeline"))
        errors = sum(r["errors"]["status"] for r in runs)
        socket_errors = sum(r["errors"][k] for r in runs
                            for k in ("connect", "read", "write", "timeout"))
        checks = [r["rows_cover_acked"] for r in runs if r["rows_cover_acked"] is not None]
        check = "n/a" if not checks else f"{sum(checks)}/{len(checks)} runs"
        lines.append(
            f"| {_label(doc, target)} | {_range([r['events_s'] for r in runs], _int)} "
            f"| {_int(_median([r['req_s'] for r in runs]))} "
            f"| {_one(_median([r['p50_ms'] for r in runs]))} "
            f"| {_one(_median([r['p99_ms'] for r in runs]))} "
            f"| {_two(_median([r['server_cores'] for r in runs]))} "
            f"| {_one(_median([r['server_cores'] / r['events_s'] * 1e6 for r in runs]))} "
            f"| {_two(_median([r['wrk_cores'] for r in runs]))} "
            f"| {_two(_median([_other(r, nproc) for r in runs]))} "
            f"| {_stall(runs)} "
            f"| {'-' if worker is None else _int(worker)} / {'-' if main is None else _int(main)} "
            f"| {errors}, {socket_errors} | {check} |")
    return lines


def cpu_split_table(doc: dict[str, Any]) -> list[str]:
    """Where trackd's CPU went: gateway workers vs the supervisor+pipeline process."""
    lines = ["| scenario | trackd | gateway workers (cores) | supervisor+pipeline (cores) |",
             "|---|---|---:|---:|"]
    for scenario in SCENARIO_TITLES:
        for target in ("trackd-1w", "trackd-2w"):
            runs = [r for r in _runs(doc, target, scenario) if r.get("cores_by_role")]
            if runs:
                gateway = _median([r["cores_by_role"].get("gateway worker", 0.0) for r in runs])
                pipeline = _median([r["cores_by_role"].get("supervisor+pipeline", 0.0)
                                    for r in runs])
                lines.append(f"| {scenario} | {target} | {_two(gateway)} | {_two(pipeline)} |")
    return lines


def ratio_table(doc: dict[str, Any]) -> list[str]:
    lines = ["| scenario | trackd | vs nginx | vs naive baseline | vs design floor |",
             "|---|---|---:|---:|---:|"]
    for scenario in SCENARIO_TITLES:
        for target in ("trackd-1w", "trackd-2w"):
            vs_nginx = round_ratios(doc, scenario, target, "nginx")
            vs_base = round_ratios(doc, scenario, target, "baseline")
            vs_floor = round_ratios(doc, scenario, target, "floor")
            if not vs_nginx and not vs_base and not vs_floor:
                continue
            lines.append(f"| {scenario} | {target} | {_range(vs_nginx, _ratio)} "
                         f"| {_range(vs_base, _ratio)} | {_range(vs_floor, _ratio)} |")
    return lines


def targets_table(doc: dict[str, Any]) -> list[str]:
    lines = ["| target (2 cores) | measured (trackd-2w unless said) | met? |", "|---|---|---|"]

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("**yes**" if ok else "**no**")

    batch = _runs(doc, "trackd-2w", "batch")
    if batch:
        ev, p99 = _median([r["events_s"] for r in batch]), _median([r["p99_ms"] for r in batch])
        conns = batch[0]["connections"]
        ok = ev >= 150e3 and p99 <= 50
        lines.append(f"| >= 150k events/s batched, p99 <= 50 ms | {_int(ev)} events/s, p99 "
                     f"{_one(p99)} ms ({conns} connections) | {verdict(ok)} |")
    single = _runs(doc, "trackd-2w", "single")
    if single:
        rq, p99 = _median([r["req_s"] for r in single]), _median([r["p99_ms"] for r in single])
        conns = single[0]["connections"]
        lines.append(f"| >= 25k req/s single events, p99 <= 20 ms at 64 connections | {_int(rq)} "
                     f"req/s, p99 {_one(p99)} ms ({conns} connections) "
                     f"| {verdict(rq >= 25e3 and p99 <= 20 and conns == 64)} |")
    vs_base = round_ratios(doc, "single", "trackd-2w", "baseline")
    if vs_base:
        lines.append(f"| >= 3x the naive baseline on single events | {_range(vs_base, _ratio)} "
                     f"(per-round ratios) | {verdict(_median(vs_base) >= 3)} |")
    fresh = doc.get("freshness")
    if fresh is not None:
        if fresh.get("available"):
            p95 = fresh.get("p95_s")
            lines.append(f"| freshness p95 <= 2 s at half of max load | p50 "
                         f"{_fmt_s(fresh['p50_s'], fresh)}, p95 {_fmt_s(p95, fresh)} at "
                         f"{_int(fresh['achieved_events_s'])} events/s (half of the gateway's "
                         f"batch maximum) | {verdict(p95 is not None and p95 <= 2)} |")
        else:
            lines.append(f"| freshness p95 <= 2 s at half of max load | not measured: "
                         f"{fresh.get('reason')} | n/a |")
        e2e = fresh.get("end_to_end")
        if e2e and e2e.get("available"):
            p95 = e2e.get("p95_s")
            lines.append(f"| the same at half of the end-to-end maximum | p50 "
                         f"{_fmt_s(e2e['p50_s'], e2e)}, p95 {_fmt_s(p95, e2e)} at "
                         f"{_int(e2e['achieved_events_s'])} events/s (half of the "
                         f"{_int(fresh['drain_rate_messages_s'])} messages/s the warehouse "
                         f"loads alone) | {verdict(p95 is not None and p95 <= 2)} |")
    for gateways in ("1w", "2w"):
        on_nats = round_ratios(doc, "batch", f"trackd-nats-{gateways}", f"trackd-{gateways}")
        nats_batch = _runs(doc, f"trackd-nats-{gateways}", "batch")
        if on_nats and nats_batch:
            p99 = _median([r["p99_ms"] for r in nats_batch])
            lines.append(f"| batch on the NATS log >= 0.7x the SQLite log, p99 <= 50 ms "
                         f"({gateways[0]} gateway(s)) | {_range(on_nats, _ratio)} (per-round "
                         f"ratios), p99 {p99:.0f} ms "
                         f"| {verdict(_median(on_nats) >= 0.7 and p99 <= 50)} |")
    for scenario, floor in (("batch", 0.8), ("single", 0.85)):
        with_plan = round_ratios(doc, scenario, "trackd-2w-plan", "trackd-2w")
        if with_plan:
            lines.append(f"| {scenario} with a 50-event plan >= {floor}x the same server "
                         f"without | {_range(with_plan, _ratio)} (per-round ratios) "
                         f"| {verdict(_median(with_plan) >= floor)} |")
    lines += live_targets(doc.get("live"), verdict)
    queries = doc.get("queries")
    if queries:
        q = queries["queries"]["count by event"]
        full = queries["rows"] >= 10_000_000
        lines.append(f"| count by event on 10M rows <= 100 ms | {q['median_ms']:.1f} ms on "
                     f"{queries['rows']:,} rows "
                     f"| {verdict(q['median_ms'] <= 100) if full else 'n/a (fewer rows)'} |")
    trackd_runs = [r for r in doc.get("runs", []) if r["target"].startswith("trackd")]
    worker = _peak(trackd_runs, ("gateway worker",))
    main = _peak(trackd_runs, ("supervisor+pipeline",))
    if worker is not None:
        lines.append(f"| RSS <= 300 MB per worker at full load | gateway worker peak "
                     f"{_int(worker)} MB, supervisor+pipeline peak "
                     f"{'-' if main is None else _int(main)} MB (all trackd runs) "
                     f"| {verdict(worker <= 300 and (main is None or main <= 300))} |")
    return lines


def render(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    out = [f"# bench/run results ({doc['started']})", "",
           f"Machine: {m['nproc']} cores, {m['cpu_model']}, {m['memory_gib']} GiB, "
           f"kernel {m['kernel']}, {m['os']}; Python {m['python']}, SQLite {m['sqlite']}, "
           f"nginx {m['nginx']}, {m['wrk']}.",
           f"trackd venv: {m['trackd_venv']}. Baseline venv: {m['baseline_venv']}.",
           f"Arguments: {doc['args']}.", ""]
    stalls = [r["cpu_stall"] for r in doc.get("runs", []) if r.get("cpu_stall") is not None]
    others = [_other(r, m["nproc"] or 1) for r in doc.get("runs", [])]
    if stalls and _median(stalls) > 0.25:
        out += [f"**Noisy machine**: during the median run some task waited for a CPU "
                f"{_median(stalls) * 100:.0f} % of the time (Linux PSI) and other processes "
                f"used {_median(others):.2f} cores. Absolute numbers are low; the per-round "
                f"ratios are the comparable figures.", ""]
    if doc.get("runs"):
        out += ["## Targets", "", *targets_table(doc), ""]
        for scenario, title in SCENARIO_TITLES.items():
            if any(r["scenario"] == scenario for r in doc["runs"]):
                size = doc["bodies"][scenario]["mean_bytes"]
                out += [f"## {title}", "", f"Mean body {size:,.0f} B.", "",
                        *scenario_table(doc, scenario), ""]
        out += ["## trackd's ratios, computed inside each round (events/s)", "",
                *ratio_table(doc), ""]
        split = cpu_split_table(doc)
        if len(split) > 2:
            out += ["## trackd's CPU by process (medians)", "", *split, ""]
    fresh = doc.get("freshness")
    if fresh is not None:
        out += ["## Freshness", "", *freshness_lines(fresh), ""]
    if doc.get("live") is not None:
        out += ["## The console's live stream (bench/live.py)", "", *live_lines(doc["live"]), ""]
    queries = doc.get("queries")
    if queries:
        generated = queries.get("generate_s")
        out += ["## Warehouse queries", "",
                f"{queries['rows']:,} rows in `bench.tracks`, DuckDB {queries['duckdb']}, "
                f"{queries['threads']} threads, file {queries['file_mb']:,.0f} MB"
                + (f", generated in {generated:.1f} s" if generated else " (cached)") + ".", "",
                "| query | median ms | min..max ms | result rows |", "|---|---:|---:|---:|"]
        for name, q in queries["queries"].items():
            out.append(f"| {name} | {q['median_ms']:.1f} | {q['min_ms']:.1f}..{q['max_ms']:.1f} "
                       f"| {q['result_rows']} |")
        out.append("")
    for key, title in (("warehouse_load", "Warehouse load: DuckDB vs PostgreSQL"),
                       ("warehouse_load_sustained", "Warehouse load, a sustained backlog")):
        loading = doc.get(key)
        if loading:
            out += [f"## {title}", "", *warehouse_load.lines(loading), ""]
    scaled = doc.get("scale_out")
    if scaled:
        out += ["## Scale-out on the NATS log", "",
                *(scale_out.lines(scaled) if scaled.get("available", True)
                  else [f"Not measured: {scaled.get('reason')}"]), ""]
    return "\n".join(out)


def freshness_lines(fresh: dict[str, Any]) -> list[str]:
    """The freshness results as sentences: the run at half of the gateway's maximum, the
    warehouse's drain rate after it, and the run at half of that (when there was one)."""
    if not fresh.get("available"):
        return [f"Not measured: {fresh.get('reason')}"]
    half = (f", half of the gateway's {fresh['max_events_s']:,.0f}"
            if fresh.get("max_events_s") else "")
    out = [f"At half of the gateway's maximum: {_freshness_run(fresh, half)}"]
    drain = fresh.get("drain_rate_messages_s")
    if drain:
        out.append(f"Once that load stopped, the warehouse caught up at {drain:,.0f} messages/s "
                   f"(the loader with the machine to itself: the most trackd sustains end to "
                   f"end).")
    elif "drain_rate_messages_s" in fresh:
        out.append("The warehouse had kept up with that load (no backlog once it stopped).")
    e2e = fresh.get("end_to_end")
    if e2e:
        out.append("At half of that end-to-end maximum: "
                   + (_freshness_run(e2e, "") if e2e.get("available")
                      else f"not measured: {e2e.get('reason')}"))
    return out


def _freshness_run(fresh: dict[str, Any], half: str) -> str:
    rate, unit = fresh.get("load_rate_messages_s"), "messages/s"
    if "load_rate_messages_s" not in fresh:  # results.json of an earlier bench/run
        rate, unit = fresh.get("load_rate_rows_s"), "track rows/s"
    return (f"background load {fresh['achieved_events_s']:,.0f} events/s (asked "
            f"{fresh['target_events_s']:,.0f}{half}), p99 "
            f"{fresh['background_p99_ms']:.0f} ms; {fresh['probes_seen']}/"
            f"{fresh['probes_acked']} probes seen within {fresh['wait_after_s']:.0f} s "
            f"after the last; p50 {_fmt_s(fresh['p50_s'], fresh)}, p95 "
            f"{_fmt_s(fresh['p95_s'], fresh)}, max {_fmt_s(fresh['max_s'], fresh)}; "
            f"warehouse loaded {'-' if rate is None else _int(rate)} {unit} under that "
            f"load; errors {fresh['error_count']}.")


def _fmt_s(value: float | None, fresh: dict[str, Any]) -> str:
    if value is None:
        return f"> {fresh.get('wait_after_s', 30):.0f} s (probes never seen)"
    return f"{value:.2f} s"


def live_targets(result: dict[str, Any] | None,
                 verdict: Callable[[bool | None], str]) -> list[str]:
    """The live stream's rows of the targets table."""
    if result is None:
        return []
    if result.get("available") is False:
        return [f"| live view: p95 <= 1 s from the 200 | not measured: {result.get('reason')} "
                "| n/a |"]
    lat = result["latency"]
    p95 = lat.get("p95_ms")
    out = [f"| live view: p95 <= 1 s from the 200 (at {result['rate']:g} msgs/s) | "
           + (f"p50 {lat['p50_ms']:.0f} ms, p95 {p95:.0f} ms, max {lat['max_ms']:.0f} ms "
              f"({lat['seen']} of {lat['sent']} seen)" if p95 is not None else
              f"none of {lat['sent']} seen")
           + f" | {verdict(p95 is not None and p95 <= 1000 and lat['seen'] == lat['sent'])} |"]
    out.append(f"| batched with 5 stalled live subscribers >= 0.9x of none | "
               f"{_ratio(result['ratio'])} (medians of {len(result['events_per_s_none'])} "
               f"runs each) | {verdict(result['ratio'] >= 0.9)} |")
    return out


def live_lines(result: dict[str, Any]) -> list[str]:
    if result.get("available") is False:
        return [f"Not measured: {result.get('reason')}."]
    lines = ["| what | result |", "|---|---|"]
    lat = result["latency"]
    if lat.get("p95_ms") is not None:
        lines.append(f"| latency, 200 to event on the stream, at {result['rate']:g} msgs/s | "
                     f"p50 {lat['p50_ms']:.0f} ms, p95 {lat['p95_ms']:.0f} ms, max "
                     f"{lat['max_ms']:.0f} ms ({lat['seen']} of {lat['sent']} seen) |")
    else:
        lines.append(f"| latency | none of {lat['sent']} seen |")
    lines.append("| batched events/s, no subscriber | "
                 + ", ".join(_int(v) for v in result["events_per_s_none"]) + " |")
    lines.append("| batched events/s, 5 stalled subscribers | "
                 + ", ".join(_int(v) for v in result["events_per_s_5_stalled"]) + " |")
    lines.append(f"| ratio of the medians | {_ratio(result['ratio'])} |")
    return lines
