"""Turns the benchmark's results into docs/performance.md."""

from __future__ import annotations

import statistics
import time
from typing import Any

TARGET_API_LOOPBACK = 20.0
TARGET_API_DELAY = 100.0
TARGET_FLOOR = 5.0
TARGET_CPU_PERCENT = 1.0
TARGET_RSS_MIB = 60.0
TARGET_RENDER_MS = 50.0


def ms(seconds: float | None, digits: int = 1) -> str:
    return "–" if seconds is None else f"{seconds * 1e3:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or a == 0:
        return "–"
    return f"{b / a:,.1f}×"


def _spread(method: dict[str, Any]) -> str:
    rounds = method["round_medians"]
    if len(rounds) < 2:
        return ""
    return f" ({ms(min(rounds))}–{ms(max(rounds))})"


def _api_versions(rows: list[dict[str, Any]]) -> list[str]:
    names = {name for row in rows for name in row["methods"] if name.startswith("api ")}
    return sorted(names)


def one_line(row: dict[str, Any]) -> str:
    m = row["methods"]
    parts = [
        f"ours {ms(m['ours']['wall'])} ms ({m['ours']['round_trips']} RT)",
        f"floor {ms(m['floor']['wall'], 2)} ms",
    ]
    parts += [f"{name} {ms(v['wall'])} ms" for name, v in m.items() if name.startswith("api ")]
    if "before" in m:
        parts.append(f"before {ms(m['before']['wall'])} ms")
    return ", ".join(parts)


def _poll_table(rows: list[dict[str, Any]], *, before: bool) -> list[str]:
    apis = _api_versions(rows)
    head = [
        "fixture (queues / processes / classes)",
        "round trips",
        "commands",
        "ours wall ms (rounds)",
        "ours CPU ms",
        "floor ms",
    ]
    head += [f"Sidekiq {name[4:]} API ms (round trips)" for name in apis]
    head += [f"ours vs {name[4:]} API" for name in apis] + ["ours / floor"]
    if before:
        head.append("before ms (ratio)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        m = row["methods"]
        ours, low = m["ours"], m["floor"]
        cells = [
            row["fixture"]["label"],
            str(ours["round_trips"]),
            f"{ours['commands']:,}",
            ms(ours["wall"], 2) + _spread(ours),
            ms(ours["cpu"], 2),
            ms(low["wall"], 2),
        ]
        for name in apis:
            api = m.get(name)
            if api is None:
                cells.append("–")
                continue
            trips = api.get("round_trips")
            cells.append(f"{ms(api['wall'])} ({trips:,})" if trips else ms(api["wall"]))
        for name in apis:
            api = m.get(name)
            cells.append(_ratio(ours["wall"], api["wall"]) if api else "–")
        cells.append(f"{ours['wall'] / low['wall']:.1f}×")
        if before:
            old = m.get("before")
            cells.append(f"{ms(old['wall'])} ({old['wall'] / ours['wall']:.1f}×)" if old else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _round_trip_sentence(rows: list[dict[str, Any]]) -> str:
    trips = sorted({row["methods"]["ours"]["round_trips"] for row in rows})
    api = [
        row["methods"][name]["round_trips"]
        for row in rows
        for name in row["methods"]
        if name.startswith("api ") and row["methods"][name].get("round_trips")
    ]
    text = (
        f"Round trips per poll: {' or '.join(str(t) for t in trips)} at every size here "
        "(the number the daemon exports as `sidekiq_exporter_redis_round_trips`); queues "
        "holding 100,000 jobs cost what queues holding one cost."
    )
    if api:
        text += f" Sidekiq's API needed {min(api):,} to {max(api):,} round trips per scrape."
    return text


def _find(
    rows: list[dict[str, Any]], queues: int, processes: int, classes: int
) -> dict[str, Any] | None:
    for row in rows:
        f = row["fixture"]
        if (f["queues"], f["processes"], f["classes"], f["deep_queues"]) == (
            queues,
            processes,
            classes,
            0,
        ):
            return row
    return None


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _targets(results: dict[str, Any]) -> list[str]:
    lines = ["| target | measured | |", "|---|---|---|"]
    loop = results.get("loopback", [])
    delay = results.get("delay", {}).get("rows", [])
    for rows, target, where in (
        (loop, TARGET_API_LOOPBACK, "loopback"),
        (delay, TARGET_API_DELAY, "0.5 ms delay each way"),
    ):
        for q, p, c in ((1_000, 10, 10), (1_000, 100, 200)):
            row = _find(rows, q, p, c)
            if row is None:
                continue
            ours = row["methods"]["ours"]["wall"]
            for name in _api_versions([row]):
                ratio = row["methods"][name]["wall"] / ours
                lines.append(
                    f"| ≥ {target:.0f}× faster than the Sidekiq {name[4:]} API, {where}, "
                    f"{row['fixture']['label']} | {ratio:,.1f}× | {_verdict(ratio >= target)} |"
                )
    for q, p, c in ((1_000, 10, 10), (1_000, 100, 200)):
        row = _find(loop, q, p, c)
        if row is not None:
            ratio = row["methods"]["ours"]["wall"] / row["methods"]["floor"]["wall"]
            lines.append(
                f"| within {TARGET_FLOOR:.0f}× of the floor, {row['fixture']['label']} | "
                f"{ratio:.1f}× | {_verdict(ratio <= TARGET_FLOOR)} |"
            )
    steady = results.get("steady")
    if steady:
        cpu = steady["cpu_percent"]
        rss = steady["rss_kib_max"] / 1024
        lines.append(
            f"| < {TARGET_CPU_PERCENT:g} % of one core, steady state | {cpu:.2f} % | "
            f"{_verdict(cpu < TARGET_CPU_PERCENT)} |"
        )
        lines.append(
            f"| < {TARGET_RSS_MIB:g} MB RSS, steady state | {rss:.1f} MiB (max) | "
            f"{_verdict(rss * 1.048576 < TARGET_RSS_MIB)} |"
        )
        lines.append(
            f"| 0 Redis commands caused by scrapes | {steady['scrape_commands']} | "
            f"{_verdict(steady['scrape_commands'] == 0)} |"
        )
    for entry in results.get("render_inprocess", []):
        render = statistics.median(entry["render"])
        lines.append(
            f"| `/metrics` render < {TARGET_RENDER_MS:g} ms, {entry['series']:,} series "
            f"(in-process) | {ms(render)} ms | {_verdict(render * 1e3 < TARGET_RENDER_MS)} |"
        )
    render = results.get("render")
    if render:
        single = statistics.median(render["single"])
        lines.append(
            f"| `/metrics` render < {TARGET_RENDER_MS:g} ms, {render['series']:,} series "
            f"(HTTP, one scraper) | {ms(single)} ms | {_verdict(single * 1e3 < TARGET_RENDER_MS)} |"
        )
        per = render["concurrent"]["wall"] / len(render["concurrent"]["latencies"])
        lines.append(
            f"| same, 10 concurrent scrapers (server time per scrape) | {ms(per)} ms | "
            f"{_verdict(per * 1e3 < TARGET_RENDER_MS)} |"
        )
    return lines


def markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(results["started"]))
    minutes = (results["finished"] - results["started"]) / 60
    out: list[str] = [
        "# Performance",
        "",
        "<!-- Generated by `python -m bench` (bench/__main__.py): edit the generator, not this "
        "file. -->",
        "",
        f"Generated by `{results['command']}` on {started} ({results['mode']} run, "
        f"{minutes:.0f} min). Regenerate with `.venv/bin/python -m bench` (full, ~13 min) or "
        "`--quick` (~3 min). The benchmark is not part of CI.",
        "",
        "The exporter polls Sidekiq's Redis on its own clock in a constant number of pipelined "
        "round trips and serves the latest snapshot, so a scrape costs Redis nothing. This page "
        "measures how cheap a poll is next to Sidekiq's own Ruby API (what a Ruby exporter "
        "does per scrape) and next to the floor (the same commands on a raw socket).",
        "",
        "## Targets",
        "",
        *_targets(results),
        "",
    ]
    loop = results.get("loopback")
    if loop:
        out += [
            "## Poll cost on loopback",
            "",
            "Medians over all samples; for ours, in parentheses, the lowest and highest median "
            "of the rounds (the noise). *ours* is `Reader.read` + `Deriver` on the daemon's own "
            "client; *floor* is the same command bytes on a plain socket, parsed by "
            "`hiredis.Reader`; *API* is Sidekiq's Ruby API timed inside Ruby (round trips "
            "counted by a redis-client middleware, 7.x only); *ratios* are API ÷ ours and "
            "ours ÷ floor. *before* is our poll at commit "
            f"`{results.get('baseline_ref') or '–'}`, before the work of issue 7.",
            "",
            *_poll_table(loop, before=any("before" in r["methods"] for r in loop)),
            "",
            _round_trip_sentence(loop),
            "",
            "Where the API comes close, or is faster, it does less: Sidekiq 6.4 keeps no "
            "execution metrics, so its API reads none; 7.x's `top_jobs` reads the 3 minute "
            "hashes but no histograms. We also read every class's histogram for each of the 3 "
            "minutes (`BITFIELD_RO` with 26 `GET u16` each: 6,000 of them at 2,000 classes, "
            "most of Redis's time in our poll, see the floor column), decode every running "
            "job's payload and the lowest scores of `schedule` and `retry`.",
            "",
        ]
    delay = results.get("delay")
    if delay and delay.get("rows"):
        out += [
            "## Poll cost with network latency",
            "",
            f"Redis behind a delay of {delay['delay_each_way'] * 1e3:g} ms each way. `tc qdisc "
            "netem` is not available in this machine's kernel (no `sch_netem` module), so the "
            "delay comes from `bench/delay_proxy.py`, a loopback TCP delay line in its own "
            "process; it adds its own forwarding cost: a `PING` takes "
            f"{ms(delay['ping_rtt_via_proxy'], 2)} ms through it "
            f"({ms(delay['ping_rtt_direct'], 3)} ms direct). The API was timed in one round "
            "(at 10,000 queues once, on the newest version only: ~20,000 sequential round "
            "trips).",
            "",
            *_poll_table(delay["rows"], before=False),
            "",
        ]
    steady = results.get("steady")
    if steady:
        burst = steady["burst"]
        out += [
            "## Steady state",
            "",
            f"The daemon (`python -m exporter`, defaults, `--poll.interval {steady['interval']}`) "
            f"on the 1,000-queue / 100-process / 200-class fixture for {steady['seconds']:.0f} s, "
            "while a simulated Sidekiq re-beats all processes every 10 s and one scraper fetches "
            "`/metrics` (gzip, as Prometheus asks) every 15 s. From `/proc/<pid>`:",
            "",
            "| measure | value |",
            "|---|---|",
            f"| CPU, % of one core | {steady['cpu_percent']:.2f} % |",
            f"| RSS max / at the end / high-water mark | {steady['rss_kib_max'] / 1024:.1f} / "
            f"{steady['rss_kib_end'] / 1024:.1f} / {steady['hwm_kib'] / 1024:.1f} MiB |",
            f"| RSS of a Python that only imported the daemon's modules | "
            f"{steady.get('import_rss_kib', 0) / 1024:.1f} MiB |",
            f"| polls, round trips per poll, last poll duration | {steady['polls']:.0f}, "
            f"{steady['round_trips']:.0f}, {ms(steady['poll_duration'])} ms |",
            f"| series, `/metrics` size | {steady['series']:,}, "
            f"{steady['body_bytes'] / 1e6:.2f} MB |",
            f"| scrape latency, one scraper (median of {len(steady['scrape_latencies'])}) | "
            f"{ms(statistics.median(steady['scrape_latencies']))} ms |",
            f"| 10 concurrent scrapers × {len(burst['latencies']) // 10}: latency median / "
            f"max, server time per scrape | {ms(statistics.median(burst['latencies']))} / "
            f"{ms(max(burst['latencies']))} ms, {ms(burst['wall'] / len(burst['latencies']))} ms |",
            f"| Redis commands caused by those {len(burst['latencies']) + 2} scrapes "
            f"(`INFO commandstats`, between two polls) | {steady['scrape_commands']} |",
            "",
        ]
    render = results.get("render")
    inproc = results.get("render_inprocess", [])
    if render or inproc:
        out += ["## `/metrics` render", ""]
        if inproc:
            out += [
                "In-process: `SidekiqCollector.collect` alone and `generate_latest` (collect + "
                "text format, what the handler runs), on one real snapshot, medians of 10. "
                "The difference between the two columns is prometheus_client's text "
                "exposition (per sample: label-name validation and escaping, float "
                "formatting), most of the render time.",
                "",
                "| fixture | series | bytes | collect ms | render ms |",
                "|---|---|---|---|---|",
            ]
            for entry in inproc:
                out.append(
                    f"| {entry['label']} | {entry['series']:,} | {entry['body_bytes']:,} | "
                    f"{ms(statistics.median(entry['collect']))} | "
                    f"{ms(statistics.median(entry['render']))} |"
                )
            out.append("")
        if render:
            c, cg = render["concurrent"], render["concurrent_gzip"]
            out += [
                f"Over HTTP, the daemon on the {render['label']} fixture ({render['series']:,} "
                "series), client-side latency:",
                "",
                "| scrapers | identity: median / max ms | gzip: median / max ms "
                "| server time per scrape (identity / gzip) |",
                "|---|---|---|---|",
                f"| 1, sequential | {ms(statistics.median(render['single']))} / "
                f"{ms(max(render['single']))} | {ms(statistics.median(render['single_gzip']))} / "
                f"{ms(max(render['single_gzip']))} | – |",
                f"| 10, concurrent | {ms(statistics.median(c['latencies']))} / "
                f"{ms(max(c['latencies']))} | "
                f"{ms(statistics.median(cg['latencies']))} / {ms(max(cg['latencies']))} | "
                f"{ms(c['wall'] / len(c['latencies']))} / "
                f"{ms(cg['wall'] / len(cg['latencies']))} |",
                "",
                "The daemon renders the Sidekiq families once per store state "
                "(`exporter/render_cache.py`) in a worker thread and reuses the bytes until "
                "the next poll publishes, so these scrapes, all between two polls, mostly pay "
                "for HTTP and gzip; the in-process table above is the cost of the one render "
                "per poll.",
                "",
            ]
    out += [
        "## Method",
        "",
        "- **Fixtures** (`bench/fixtures.py`): `SidekiqWriter` from `exporter/demo/layout.py` "
        "writes Sidekiq 7.3's layout into a private `redis-server` (loopback, no persistence): "
        "Q queues with one job each (plus, in one fixture, queues with 100,000 jobs), "
        "P processes with heartbeat hashes and 5 running jobs each, C job classes with "
        "per-minute counts and histograms in the 3 minutes our reader reads (and a few ahead, "
        "so a phase that crosses a minute reads the same amount). Processes are re-beaten "
        "before each phase.",
        "- **Ours** (`bench/ours.py`): the client `exporter.connection` builds for the daemon "
        "(RESP2, hiredis), one connection reused, `Reader.read` + `Deriver` per poll, after 3 "
        "warm-up polls; wall = `perf_counter`, CPU = `process_time` of the benchmark process.",
        "- **API** (`bench/sidekiq_api.rb`): `Stats.new` with `enqueued` and the other stats, "
        "`Queue.all` with `size` and `latency` of each, `ProcessSet.new(false).each` (no "
        "cleanup writes), `Workers#each` and, on 7.x, `Metrics::Query#top_jobs(minutes: 3)`, "
        "timed with `CLOCK_MONOTONIC` / `CLOCK_PROCESS_CPUTIME_ID` inside Ruby after one "
        "warm-up scrape (Ruby's start-up is not counted). The API does less than we do: "
        "`top_jobs` reads no histograms and nothing reads the schedule/retry sets' lowest scores.",
        "- **Floor** (`bench/floor.py`): the exact command batches of one of our polls, packed "
        "once, written with one `sendall` per round trip on a blocking socket and parsed by "
        "`hiredis.Reader` (no decoding, no model, no asyncio).",
        "- **Rounds**: each fixture is measured in rounds (ours, floor, API, …, again) so load "
        "from elsewhere hits all columns alike.",
        "- **Steady state** (`bench/steady.py`): CPU from `utime + stime` in `/proc/<pid>/stat` "
        "over the window after a 15 s warm-up, RSS sampled every 5 s from `/proc/<pid>/status`.",
        "",
        "## Machine and noise",
        "",
        f"- {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, Linux "
        f"{machine['kernel']}; Python {machine['python']}, redis-py {machine['redis_py']}, "
        f"hiredis {machine['hiredis']}, prometheus_client {machine['prometheus_client']}; "
        f"redis-server {machine['redis_server']}; {machine['ruby']}; Sidekiq "
        f"{', '.join(machine['sidekiq_versions']) or 'not installed'}.",
        f"- Load average {results['load_start'][0]:.2f} at the start and "
        f"{results['load_end'][0]:.2f} at the end; the whole machine was "
        f"{results['machine_busy_percent']:.0f} % busy over the run (this benchmark included).",
        "- **Noise caveat**: the machine's 2 cores are shared with other work (other engineers' "
        "test runs during this one), so single numbers move by ±20 % or more from run to run; "
        "medians over rounds, the round spread shown in the tables and the ratios (measured "
        "side by side) are more stable than absolute times. The redis-server, the Ruby API "
        "and the benchmark share the same 2 cores, which favours neither side. Loopback "
        "round trips are cheaper on a busy machine than on an idle one (idle cores sleep "
        "between round trips and take time to wake up), so the API's loopback times, made "
        "of ~2,000 sequential round trips at 1,000 queues, swing the most: from ~65 ms with "
        "other work running to ~160 ms on a quiet machine in our runs.",
        "",
    ]
    return "\n".join(out)
