"""bench/peer.py's printed report (Markdown, as bench/RESULTS.md records it)."""

from __future__ import annotations

import statistics

import peer_stack as ps

STACKS = ("opsfleet", "prometheus")


def p50max(vals: list[float], unit: str = "s") -> str:
    vals = [v for v in vals if v is not None]
    return f"{statistics.median(vals):.1f} / {max(vals):.1f} {unit}" if vals else "-"


def settings() -> list[str]:
    return [
        f"Both evaluate every {ps.EVAL_S} s (opsfleet: schedule {ps.EVAL_S}s; Prometheus: scrape {ps.EVAL_S} s, "
        f"rule evaluation {ps.EVAL_S} s, the sql_exporter job every {ps.EVAL_S} s), group_wait {ps.GROUP_WAIT}, "
        f"repeat_interval {ps.REPEAT}, resolved notices on; Alertmanager groups by alertname with its default "
        f"group_interval {ps.GROUP_INTERVAL} (opsfleet has none: a resolved notice leaves at the evaluation that "
        "saw it resolve). Rules: idle in a transaction > 60 s (opsfleet `:now - state_change` per session; "
        "Prometheus `pg_stat_activity_max_tx_duration{state=~\"idle in transaction.*\"}` per database); "
        f"connections > {ps.CONN_PCT}% of the database's CONNECTION LIMIT {ps.CONN_LIMIT} for {ps.CONN_FOR} (a "
        "per-database limit: the server is shared); a lock wait > 60 s (opsfleet per waiting session, "
        "Prometheus sql_exporter's longest wait); seed 004's double booking (> 0 in the last 5 minutes, without "
        "the pack's keep_firing_for 24h so that each round resolves)."]


def breaches(b: dict) -> list[str]:
    rounds, restarts = b["rounds"], b["restarts"]
    lines = ["", "### Breaches: MTTD (breach -> the Slack fake accepted the firing message) and messages", "",
             "| breach | stack | told | MTTD p50 / max | undo -> resolved p50 / max | firing msgs | resolved msgs | "
             "duplicates | restart KILL: firing msgs | restart TERM: firing msgs |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for k in ps.KINDS:
        mine = [r for r in rounds if r["kind"] == k]
        for s in STACKS:
            rows = b["rows"][s]
            fired = [r[f"{s}_fired"] - r["breach"] for r in mine if r[f"{s}_fired"]]
            res = [r[f"{s}_resolved"] - r["cleared"] for r in mine if r[f"{s}_resolved"]]
            per = [(len({i for at, kk, f, i in rows if kk == k and f and r["start"] <= at <= r["end"]}),
                    len({i for at, kk, f, i in rows if kk == k and not f and r["start"] <= at <= r["end"]})) for r in mine]
            rs = [next(x["per"][f"{s}:{k}"] for x in restarts if x["signal"] == sig) if any(
                x["signal"] == sig for x in restarts) else None for sig in ("kill", "term")]
            rcell = [f"{v['firing_msgs']}" + (f" (**{v['duplicates']} dup**)" if v["duplicates"] else "")
                     + ("" if v["resolved"] else ", no resolved") if v else "-" for v in rs]
            lines.append(f"| {k} | {s} | {len(fired)}/{len(mine)} | {p50max(fired)} | {p50max(res)} | "
                         f"{sum(f for f, _ in per)} | {sum(r for _, r in per)} | {sum(max(0, f - 1) for f, _ in per)} | "
                         f"{rcell[0]} | {rcell[1]} |")
    lines += ["", "Each round (MTTD, or NOT TOLD within 7 minutes):", "", "| breach | round | opsfleet | prometheus |",
              "|---|---:|---:|---:|"]
    for r in rounds:
        cells = [f"{r[f'{s}_fired'] - r['breach']:.1f} s" if r[f"{s}_fired"] else "NOT TOLD" for s in STACKS]
        lines.append(f"| {r['kind']} | {r['round']} | {cells[0]} | {cells[1]} |")
    lines += ["", "Restarts: " + "; ".join(
        f"{x['signal'].upper()} {x['restarted'] - x['start']:.0f} s after the four breaches (once both had told each, "
        "7 minutes at most), then held 150 s" for x in restarts) + ". Alertmanager keeps its notification log in memory "
        "and writes it to --storage.path every 15 minutes (--data.maintenance-interval) and once more at a clean "
        "shutdown: after SIGTERM it knows what it sent; after SIGKILL it starts from the last snapshot, and the alerts "
        "Prometheus sends again (every minute) are told again after group_wait unless that snapshot already held "
        "them as sent (an earlier incident with the same labels). opsfleet's alert states and outbox are rows of "
        "the fleet database."]
    lines += ["", f"Slack messages in all (a message may carry several alerts): opsfleet {b['messages']['opsfleet']}, "
                  f"Alertmanager {b['messages']['prometheus']}. Load average at the end of the breaches: "
                  f"{', '.join(f'{x:.1f}' for x in b['loadavg'])}."]
    return lines


def idle(i: dict) -> list[str]:
    lines = ["", f"### Cost of watching an idle database ({i['hours'] * 60:.1f} minutes after a 60 s warm-up; "
                 f"load average {', '.join(f'{x:.1f}' for x in i['loadavg'][0])} at the start, "
                 f"{', '.join(f'{x:.1f}' for x in i['loadavg'][1])} at the end)", "",
             "| watcher | process | processes | CPU s per hour | RSS MiB (mean / max) | PSS MiB |", "|---|---|---:|---:|---:|---:|"]
    totals = {}
    for w, d in i["watchers"].items():
        for g, p in d["procs"].items():
            lines.append(f"| {w} | {g} | {p['nproc']} | {p['cpu_s_per_h']:.1f} | {p['rss_mib']:.0f} / "
                         f"{p['rss_max_mib']:.0f} | {p['pss_mib']:.0f} |")
        alerting = {g: p for g, p in d["procs"].items() if g != "redis (broker)"}
        totals[w] = {k: sum(p[k] for p in alerting.values()) for k in ("cpu_s_per_h", "rss_mib", "pss_mib")}
        name = "worker + beat" if "redis (broker)" in d["procs"] else "the four processes"
        lines.append(f"| **{w}** | **{name}** | | **{totals[w]['cpu_s_per_h']:.1f}** | **{totals[w]['rss_mib']:.0f}** | "
                     f"**{totals[w]['pss_mib']:.0f}** |")
    lines += ["", "RSS counts a page once per process that maps it: a prefork worker's two children share most of "
                  "their parent's pages, so its RSS sum overstates; PSS divides each shared page among its sharers.",
              "", "The load on the server (pg_stat_database of each watcher's own databases, per minute; backend CPU: "
                  "the server processes of those databases' sessions, sampled every 2 s):", "",
              "| watcher | database | transactions/min | tup_returned/min | tup_fetched/min | rows written/min | "
              "sessions opened/min | backend CPU s per hour |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for w, d in i["watchers"].items():
        for role, s in d["server"].items():
            lines.append(f"| {w} | {role} | {s['xacts']:.1f} | {s['tup_returned']:.0f} | {s['tup_fetched']:.0f} | "
                         f"{s['tup_written']:.1f} | {s['sessions']:.2f} | {s['backend_cpu_s_per_h']:.1f} |")
    i["totals"] = totals
    return lines


def report(o: dict) -> str:
    m = o["machine"]
    v = o["versions"]
    pss = ("preloads pg_stat_statements" if "pg_stat_statements" in (m["preload"] or "")
           else "does not preload pg_stat_statements: the load is read from pg_stat_database")
    lines = ["## opsfleet beside Prometheus + postgres_exporter + sql_exporter + Alertmanager (`bench/peer.py "
             f"--rounds {o['rounds']} --idle-minutes {o['idle_minutes']:g}`)", "",
             f"{m['date']}; {m['cores']} cores, {m['ram_gib']} GiB RAM, Postgres {m['postgres']} (the server {pss}); "
             f"opsfleet {o['commit']}; prometheus {v['prometheus']}, postgres_exporter {v['prometheus-postgres-exporter']}, "
             f"sql_exporter {v['prometheus-sql-exporter']} (justwatchcom's, Debian's), alertmanager "
             f"{v['prometheus-alertmanager']}; load average {', '.join(f'{x:.1f}' for x in m['loadavg_start'])} at the start, "
             f"{', '.join(f'{x:.1f}' for x in m.get('loadavg_end', m['loadavg_start']))} at the end; seed {o['seed']}.",
             "", *settings()]
    if "breaches" in o:
        lines += breaches(o["breaches"])
    if "idle" in o:
        lines += idle(o["idle"])
    r = o["readiness"]
    ready = statistics.median(r["default"])
    lines += ["", "### Start-up", "",
              f"opsfleet worker (-c 2, the four rules), spawn -> `ready.` in its log, 3 starts: p50 {ready:.2f} s (max "
              f"{max(r['default']):.2f} s) with the compose file's flags (mingle and gossip on); "
              f"{statistics.median(r['no_mingle_gossip']):.2f} s with --without-mingle --without-gossip; with the "
              f"default packs too (their tables and queries checked at start) {statistics.median(r['default_packs']):.2f} s. "
              f"`python -c 'import worker.app'`: {statistics.median(r['import']):.2f} s p50. Load average "
              f"{r['loadavg'][0][0]:.1f} before, {r['loadavg'][1][0]:.1f} after."]
    prs = (o.get("idle") or o.get("breaches") or {}).get("prom_ready_s")
    if prs:
        lines[-1] += " The Prometheus stack's processes, spawn -> ready: " + ", ".join(f"{n} {s:.2f} s" for n, s in prs.items()) + "."
    lines += ["", "### Goals (issue 22)", ""]
    if "idle" in o:
        t = o["idle"]["totals"]
        ops, opsdef, prom = t["opsfleet, the four rules"], t["opsfleet + default packs"], t["Prometheus stack"]
        lines += [f"- worker (-c 2) + beat under 250 MiB: PSS {ops['pss_mib']:.0f} MiB, RSS sum {ops['rss_mib']:.0f} MiB "
                  f"(with the default packs {opsdef['pss_mib']:.0f} / {opsdef['rss_mib']:.0f} MiB): "
                  f"{'met' if ops['pss_mib'] < 250 else 'NOT met'} by PSS, {'met' if ops['rss_mib'] < 250 else 'NOT met'} by "
                  f"RSS. The Prometheus stack: PSS {prom['pss_mib']:.0f} MiB, RSS {prom['rss_mib']:.0f} MiB.",
                  f"- CPU at most 2x the stack's for the same watching: {ops['cpu_s_per_h']:.1f} against "
                  f"{prom['cpu_s_per_h']:.1f} CPU s per hour, {ops['cpu_s_per_h'] / max(prom['cpu_s_per_h'], 1e-9):.1f}x "
                  f"({'met' if ops['cpu_s_per_h'] <= 2 * prom['cpu_s_per_h'] else 'NOT met'}; opsfleet's redis-server "
                  f"apart; with the default packs {opsdef['cpu_s_per_h']:.1f} s, "
                  f"{opsdef['cpu_s_per_h'] / max(prom['cpu_s_per_h'], 1e-9):.1f}x)."]
    lines.append(f"- a worker ready in under 2 s: {ready:.2f} s p50 ({'met' if ready < 2 else 'NOT met'}).")
    return "\n".join(lines)
