"""The effopt dashboard as one server-rendered HTML page (no build step, no script; charts as inline SVG).

It is shown inside the Airflow UI (navigation "effopt", an iframe), so it fits
1,280 px and its links open Airflow's own pages in the whole window.
"""

from __future__ import annotations

import html
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from effopt.units import format_bytes, format_duration
from effopt.www.svg import bar, sparkline


class Raw(str):
    """Markup that is already safe (a link, an SVG): put in a cell as is."""


def esc(value: Any) -> str:
    return value if isinstance(value, Raw) else html.escape("" if value is None else str(value))


def link(text: str, href: str, *, title: str = "") -> Raw:
    tip = f' title="{html.escape(title)}"' if title else ""
    return Raw(f'<a href="{html.escape(href)}" target="_top"{tip}>{html.escape(text)}</a>')


def dag_link(dag_id: str) -> Raw:
    return link(dag_id, f"/dags/{urllib.parse.quote(dag_id, safe='')}")


def task_link(dag_id: str, task_id: str) -> Raw:
    return link(task_id, f"/dags/{urllib.parse.quote(dag_id, safe='')}/tasks/{urllib.parse.quote(task_id, safe='')}")


def usd(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+,.2f} USD" if signed else f"{value:,.2f} USD"


def when(epoch: float | None) -> str:
    return "n/a" if epoch is None else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch))


def ago(epoch: float | None, now: float) -> str:
    return "n/a" if epoch is None else f"{format_duration(max(now - epoch, 0.0))} ago"



def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, numeric: Sequence[int] = (),
          ids: Sequence[int] = (), nowrap: Sequence[int] = ()) -> str:
    """Rows of cells (escaped unless :class:`Raw`); ``numeric`` columns right-aligned, ``ids`` columns break
    anywhere (hashes, long names), ``nowrap`` columns never break."""
    def attr(i: int) -> str:
        kind = "n" if i in numeric else "id" if i in ids else "nw" if i in nowrap else ""
        return f" class={kind}" if kind else ""

    head = "".join(f'<th{" class=n" if i in numeric else ""}>{html.escape(h)}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f"<td{attr(i)}>{esc(c)}</td>" for i, c in enumerate(row)) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"



def card(label: str, value: str, note: str = "", tone: str = "") -> str:
    return (f'<div class="card {tone}"><div class="label">{html.escape(label)}</div>'
            f'<div class="value">{html.escape(value)}</div><div class="note">{html.escape(note)}</div></div>')


def muted(text: str) -> str:
    return f'<p class="muted">{html.escape(text)}</p>'


STYLE = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;padding:16px 20px;color:#1f2937;
     font-size:14px;max-width:1240px}
h1{font-size:1.35rem;margin:0 0 4px}h2{font-size:1.08rem;margin:22px 0 6px;padding-top:4px;border-top:1px solid #e5e7eb}
.sub{color:#6b7280;margin:0 0 12px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:8px 0 4px}
.card{flex:1 1 200px;border:1px solid #e5e7eb;border-radius:6px;padding:8px 12px;background:#f9fafb;min-width:0}
.card.bad{background:#fdf2f2;border-color:#f5c2c0}.card.good{background:#f0faf4;border-color:#bfe5cc}
.card .label{font-size:12px;color:#6b7280}.card .value{font-size:1.25rem;font-weight:600;margin-top:2px}
.card .note{font-size:12px;color:#6b7280;overflow-wrap:anywhere}
table{border-collapse:collapse;width:100%;margin:6px 0 4px}
th,td{border-bottom:1px solid #e5e7eb;padding:4px 8px;text-align:left;vertical-align:top;overflow-wrap:break-word}
td.id{overflow-wrap:anywhere}td.nw{white-space:nowrap}
th{background:#f3f4f6;font-weight:600;font-size:13px;white-space:nowrap}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.muted{color:#6b7280}.warn{color:#9a3412}.ok{color:#166534}.fail{color:#b91c1c;font-weight:600}
a{color:#1d4ed8;text-decoration:none}a:hover{text-decoration:underline}
svg{vertical-align:middle}.pill{display:inline-block;padding:0 6px;border-radius:8px;font-size:12px;background:#eef2ff}
"""


# -- sections ------------------------------------------------------------------------------------------------
def summary_cards(tasks: list[dict[str, Any]], cache: dict[str, Any] | None, plan: dict[str, Any] | None,
                  waste: dict[str, Any] | None) -> str:
    cards = []
    tries = sum(t["tries"] for t in tasks)
    cards.append(card("Tasks measured", f"{len(tasks)}",
                      f"{tries} {'try' if tries == 1 else 'tries'} in the last 30 days"))
    if waste is not None:
        t = waste["totals"]
        cards.append(card("Monthly waste", usd(t.get("waste")),
                          f"of {usd(t.get('cost'))}; {waste.get('window') or ''}", "bad" if t.get("waste") else ""))
    if plan is not None and plan["monthly_cost_delta"] is not None:
        cards.append(card("Right-sizing", usd(plan["monthly_cost_delta"], signed=True) + " / month",
                          f"{sum(1 for i in plan['items'] if i['action'] == 'apply')} change(s) planned",
                          "good" if plan["monthly_cost_delta"] < 0 else ""))
    if cache is not None:
        tot = cache["totals"]
        rate = "n/a" if tot["hit_rate"] is None else f"{tot['hit_rate']:.0%}"
        cards.append(card("Cache", f"{format_duration(tot['saved_s'])} saved",
                          f"hit rate {rate}, {_plural(tot['calls'], 'call')}"))
    return '<div class="cards">' + "".join(cards) + "</div>"


def waste_section(waste: dict[str, Any] | None) -> str:
    if waste is None:
        return muted("No waste report yet: trigger effopt_waste_report (it runs every Monday at 07:00 UTC).")
    t = waste["totals"]
    d = waste.get("delivery") or {}
    status = d.get("status")
    delivery = {"sent": Raw(f'<span class="ok">emailed {html.escape(d.get("detail", ""))}</span>'),
                "not_sent": Raw(f'<span class="warn">not emailed: {html.escape(d.get("detail", ""))}</span>'),
                "failed": Raw(f'<span class="fail">email failed: {html.escape(d.get("detail", ""))}</span>'),
                }.get(status, Raw('<span class="muted">email step has not run</span>'))
    by_kind = {k: v for k, v in (t.get("by_kind") or {}).items() if v}
    biggest = max(by_kind.values(), default=0.0)
    kinds = table(["kind", "monthly waste", ""],
                  [(k, usd(v), Raw(bar(v / biggest if biggest else 0, title=f"{k}: {usd(v)}")))
                   for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])], numeric=(1,)) if by_kind else ""
    findings = table(["severity", "kind", "workload / container", "monthly waste", "recommendation"],
                     [(f["severity"], f["kind"], _where(f["workload"], f["container"]),
                       "price missing" if f.get("monthly_waste") is None else usd(f["monthly_waste"]),
                       (f.get("recommendation") or {}).get("action", "")) for f in waste["findings"]],
                     numeric=(3,), ids=(2,), nowrap=(0, 1)) if waste["findings"] else muted(
        "No finding: nothing to act on.")
    head = (f'<p>Report of {html.escape(when(waste["created_at"]))} from source '
            f'<b>{html.escape(str(waste.get("source") or "n/a"))}</b>: {_plural(t.get("workloads", 0), "container")}, '
            f'{_plural(t.get("findings", 0), "finding")}, monthly cost {html.escape(usd(t.get("cost")))}, waste '
            f'{html.escape(usd(t.get("waste")))} ({html.escape(str(waste.get("window") or ""))}). '
            f'{link("Full report", waste["page"])} &middot; {delivery}</p>')
    return head + kinds + "<p class=muted>Top findings</p>" + findings


def _where(workload: str, container: str) -> str:
    return workload if container in ("", workload) else f"{workload} / {container}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _resources_text(res: Mapping[str, Any] | None) -> str:
    """``cpu 2, memory 2Gi / limit 2Gi`` from a Kubernetes resources dict."""
    res = res or {}
    req, lim = res.get("requests") or {}, res.get("limits") or {}
    parts = [f"{k} {v}" for k, v in sorted(req.items())]
    parts += [f"limit {k} {v}" for k, v in sorted(lim.items())]
    return ", ".join(parts) or "not set"


def _workload_cell(w: Mapping[str, str]) -> Raw | str:
    from effopt.rightsizing.apply.model import AIRFLOW_TASK_KIND

    if w["kind"] == AIRFLOW_TASK_KIND:
        return Raw(f"{dag_link(w['namespace'])} / {task_link(w['namespace'], w['name'])}")
    return f"{w['kind']} {w['namespace']}/{w['name']}"


def plan_section(plan: dict[str, Any] | None, now: float) -> str:
    if plan is None:
        return muted("No right-sizing plan yet: effopt_rightsizing runs hourly once unpaused.")
    head = (f'<p>Plan of {html.escape(ago(plan["created_at"], now))} ({html.escape(plan["recommender"])} '
            f'recommender, source <b>{html.escape(plan["source"])}</b>, {link("run", _run_href(plan))}): '
            f'{html.escape(plan["summary"] or "")}.</p>')
    items = sorted(plan["items"], key=lambda i: (i["action"] != "apply", i["monthly_cost_delta"] or 0.0))
    if not items:
        return head
    rows = [(_workload_cell(i["workload"]), i["container"], _resources_text(i["current"]),
             _resources_text(i["planned"] if i["action"] == "apply" else i["recommended"]),
             usd(i["monthly_cost_delta"], signed=True) if i["action"] == "apply" else "",
             i["action"] + ("" if i["action"] == "apply" else ": " + "; ".join(i["guardrails"][-1:])))
            for i in items[:25]]
    more = muted(f"{len(items) - 25} more in the run's XCom.") if len(items) > 25 else ""
    return head + table(["workload", "container", "now", "recommended", "monthly", "action"], rows,
                        numeric=(4,), ids=(0, 1)) + more


def _run_href(plan: Mapping[str, Any]) -> str:
    dag, run = (urllib.parse.quote(plan[k], safe="") for k in ("dag_id", "run_id"))
    return f"/dags/{dag}/runs/{run}"


def tasks_section(tasks: list[dict[str, Any]]) -> str:
    if not tasks:
        return muted("No task usage recorded yet: run a DAG (e.g. effopt_selftest).")
    rows = []
    for t in tasks:
        hist = t["history"]
        failed = [h["state"] != "success" for h in hist]
        rss = sparkline([h["peak_rss_bytes"] for h in hist], marks=failed, color="#7d3c98",
                        title=f"peak RSS of the last {len(hist)} tries, "
                              f"{format_bytes(min(h['peak_rss_bytes'] for h in hist))}"
                              f" to {format_bytes(max(h['peak_rss_bytes'] for h in hist))} (red: not successful)")
        cpu = sparkline([h["cpu_s"] for h in hist], marks=failed,
                        title=f"CPU seconds of the last {len(hist)} tries (red: not successful)")
        state = Raw(f'<span class="{"ok" if t["last_state"] == "success" else "fail"}">'
                    f'{html.escape(t["last_state"])}</span>')
        rows.append((dag_link(t["dag_id"]), task_link(t["dag_id"], t["task_id"]), f"{t['successes']} / {t['tries']}",
                     "n/a" if t["median_wall_s"] is None else f"{t['median_wall_s']:.2f}",
                     "n/a" if t["median_cpu_s"] is None else f"{t['median_cpu_s']:.2f}",
                     "n/a" if t["cpu_utilisation"] is None else f"{t['cpu_utilisation']:.0%}",
                     format_bytes(t["max_peak_rss_bytes"]), Raw(rss), Raw(cpu), state))
    return table(["DAG", "task", "ok / tries", "median wall s", "median CPU s", "CPU / wall", "max peak RSS",
                  "peak RSS", "CPU s", "last"], rows, numeric=(2, 3, 4, 5, 6), ids=(0, 1), nowrap=(9,)) + muted(
        "Medians and CPU / wall over successful tries; the lines show each try, oldest first.")


def cache_section(cache: dict[str, Any] | None, error: str | None) -> str:
    if cache is None:
        return muted(f"Computation cache unavailable: {error}")
    tot = cache["totals"]
    rate = "n/a" if tot["hit_rate"] is None else f"{tot['hit_rate']:.1%}"
    head = (f"<p>{html.escape(cache['backend'])}: {tot['calls']} calls, hit rate {rate}, "
            f"{html.escape(format_duration(tot['saved_s']))} of computation saved, {tot['rejected']} rejected "
            f"entries, {tot['errors']} backend errors.</p>")
    for problem in cache.get("problems", [])[:5]:
        head += muted(f"Repaired corrupted cache statistics: {problem}")
    if not cache["functions"]:
        return head + muted("No cached call yet (see effopt_cache_example).")
    most = max((f["saved_s"] for f in cache["functions"]), default=0.0)
    rows = [(Raw(f'<span title="{html.escape(f["function"])}">{html.escape(f["name"])}</span>'), f["namespace"],
             f["calls"], "n/a" if f["hit_rate"] is None else f"{f['hit_rate']:.0%}",
             format_duration(f["saved_s"]), Raw(bar(f["saved_s"] / most if most else 0,
                                                    title=f"{f['saved_s']:.1f} s saved")),
             format_bytes(f["bytes"])) for f in cache["functions"][:30]]
    return head + table(["function", "namespace", "calls", "hit rate", "saved", "", "stored"], rows,
                        numeric=(2, 3, 4, 6), ids=(0,))


def _change_text(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """``requests.cpu 2 -> 1, limits.memory 2Gi -> 1Gi`` for the values that changed."""
    parts = []
    for section in ("requests", "limits"):
        old, new = before.get(section) or {}, after.get(section) or {}
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name):
                parts.append(f"{section}.{name} {old.get(name, '-')} -> {new.get(name, '-')}")
    return ", ".join(parts) or "no change"


def changes_section(changes: list[dict[str, Any]]) -> str:
    if not changes:
        return muted("No right-sizing change applied in the last 30 days (effopt_rightsizing runs in dry-run mode "
                     "unless its mode param says otherwise).")
    rows = [(when(c["applied_at"]), c["mode"],
             _workload_cell({"kind": c["kind"], "namespace": c["namespace"], "name": c["name"]}), c["container"],
             _change_text(c["before"], c["after"]), usd(c["monthly_cost_delta"], signed=True), c["reason"])
            for c in changes]
    return table(["applied", "mode", "workload", "container", "change", "monthly cost delta", "reason"], rows,
                 numeric=(5,), ids=(2, 3))


def _gpu_amount(milli: int | None, unit: str = "") -> str:
    if milli is None:
        return "n/a"
    return f"{milli / 1000:g} GPU" if milli % 1000 == 0 else f"{milli} thousandths"


def gpu_section(gpu: dict[str, Any] | None, now: float) -> str:
    """Inventory per node, effopt's pools with occupied and free slots, active leases with their tasks, and the
    fragmentation figure; "no GPUs in the inventory" when it is empty."""
    if gpu is None:
        return ""
    errors = gpu.get("errors") or {}
    notes = "".join(f'<p class="warn">{html.escape(k)}: {html.escape(v)}</p>' for k, v in errors.items())
    inv = gpu.get("inventory")
    pools = _gpu_pools_table(gpu.get("pools") or [], gpu.get("unit", "gpu"))
    changes = _gpu_changes_table(gpu.get("changes") or [])
    if inv is None:
        return notes + pools + changes
    origin = (f"as effopt_gpu_pools read it {ago(inv.get('taken_at'), now)}" if gpu.get("origin") == "effopt_gpu_pools"
              else "read now")
    if not inv.get("nodes"):
        head = muted(f"No GPUs in the inventory (source {inv.get('source')}: {inv.get('detail')}; {origin}). GPU tasks "
                     "run without a lease, with CUDA_VISIBLE_DEVICES=''; set [effopt] gpu_inventory (and "
                     "gpu_inventory_file) to describe your GPUs.")
        return head + notes + pools + changes
    gpus = gpu.get("gpus") or []
    capacity = 1000 * len(gpus)
    leased = sum(g["leased_milli"] for g in gpus)
    other = sum(g["other_milli"] for g in gpus)
    frag = gpu.get("fragmentation") or {}
    pct = frag.get("fragmented_pct")
    cards = ('<div class="cards">'
             + card("GPUs", f"{inv.get('gpus', len(gpus))}", inv.get("summary", ""))
             + card("Leased", f"{leased / 1000:g} of {capacity / 1000:g}",
                    f"{len(gpu.get('leases') or [])} lease(s) you may see" + (f", {gpu['hidden_leases']} of other DAGs"
                                                                              if gpu.get("hidden_leases") else "")
                    + (f"; {other / 1000:g} GPU held outside effopt" if other else ""))
             + card("Fragmented", "n/a" if pct is None else f"{pct:.1f}%",
                    f"of the {frag.get('free_milli', 0) / 1000:g} free GPUs, what the recent requests "
                    f"({frag.get('types', 0)} kinds) could not use", "bad" if pct else "")
             + "</div>")
    head = (f"<p>{html.escape(inv.get('summary', ''))}: source <b>{html.escape(str(inv.get('source')))}</b> "
            f"({html.escape(str(inv.get('detail') or ''))}), {html.escape(origin)}; leases in "
            f"{html.escape(str(gpu.get('backend') or 'n/a'))}, placed by the {html.escape(str(gpu.get('policy')))} "
            f"policy.</p>")
    by_node: dict[str, list[dict[str, Any]]] = {}
    for g in gpus:
        by_node.setdefault(g["node"], []).append(g)
    memory = {(n["name"], d["index"]): d for n in inv["nodes"] for d in n.get("gpus") or []}
    rows = []
    for node, items in by_node.items():
        for g in items:
            d = memory.get((node, g["device"])) if not g["model"].startswith("mig-") else None
            used = g["leased_milli"] + g["other_milli"]
            rows.append((node, g["device"], g["model"], format_bytes(d["memory_total_mib"] * 2**20)
                         if d and d.get("memory_total_mib") else "n/a",
                         "n/a" if not d or d.get("utilization_pct") is None else f"{d['utilization_pct']:.0f}%",
                         _gpu_amount(g["leased_milli"]), _gpu_amount(g["other_milli"]) if g["other_milli"] else "",
                         Raw(bar(used / 1000, title=f"{used} of 1000 thousandths taken"))))
    inventory = table(["node", "GPU", "model", "memory", "util", "leased", "outside effopt", ""], rows,
                      numeric=(1, 3, 4, 5, 6), ids=(0, 2))
    lease_rows = []
    for lease in sorted(gpu.get("leases") or [], key=lambda x: x["acquired_at"]):
        h = lease["holder_info"]
        lease_rows.append((Raw(f"{dag_link(h['dag_id'])} / {task_link(h['dag_id'], h['task_id'])}"), h["run_id"],
                           lease["node"], ",".join(map(str, lease["devices"])), lease["model"],
                           _gpu_amount(lease["gpu_milli"]) + (" each" if len(lease["devices"]) > 1 else ""),
                           ago(lease["acquired_at"], now),
                           format_duration(max(lease["expires_at"] - now, 0.0)), lease["lease_id"]))
    leases = table(["task", "run", "node", "GPUs", "model", "share", "since", "expires in", "lease"], lease_rows,
                   numeric=(6, 7), ids=(0, 1, 8)) if lease_rows else muted("No active lease.")
    return (head + cards + notes + "<p class=muted>Inventory</p>" + inventory + "<p class=muted>Active leases</p>"
            + leases + pools + changes)


def _gpu_pools_table(pools: list[dict[str, Any]], unit: str) -> str:
    if not pools:
        return muted("No effopt pool yet: effopt_gpu_pools creates them (every 5 minutes).")
    rows = [(p["pool"], "n/a" if p["slots"] is None else p["slots"], p["running"], p["queued"] + p["scheduled"],
             p["deferred"], "n/a" if p["open"] is None else p["open"],
             Raw(bar((p["running"] + p["queued"]) / p["slots"] if p["slots"] else 0,
                     title=f"{p['running']} running, {p['queued']} queued"))) for p in pools]
    return (f"<p class=muted>Pools (slots in {'thousandths of a GPU' if unit == 'milli' else 'GPUs'})</p>"
            + table(["pool", "slots", "running", "queued", "deferred", "free", ""], rows, numeric=(1, 2, 3, 4, 5),
                    ids=(0,)))


def _gpu_changes_table(changes: list[dict[str, Any]]) -> str:
    if not changes:
        return ""
    rows = [(when(c["changed_at"]), c["pool"], c["action"] + (" (dry run)" if c["dry_run"] else ""),
             "-" if c["slots_before"] is None else c["slots_before"],
             "-" if c["slots_after"] is None else c["slots_after"],
             c["reason"]) for c in changes[:10]]
    return "<p class=muted>Pool changes</p>" + table(["when", "pool", "action", "before", "after", "why"], rows,
                                                      numeric=(3, 4), ids=(1,), nowrap=(0,))
def spot_section(spot: dict[str, Any] | None, now: float) -> str:
    """Spot placement: what was decided, the fleets launched with their cost so far, and what happened."""
    if spot is None or not (spot["decisions"] or spot["fleets"] or spot["events"]):
        return muted("No spot placement yet: see effopt_spot_example (placement works without an AWS account; "
                     "fleets need the aws_default connection).")
    c = spot["counts"]
    head = (f"<p>Last {spot['window_days']:g} days: {_plural(len(spot['fleets']), 'fleet')} launched, "
            f"{spot['running_instances']} instance(s) running, cost so far {html.escape(usd(spot['cost_so_far']))}; "
            f"{_plural(c['interruption'], 'interruption')}, {_plural(c['rebalance'], 'rebalance recommendation')}, "
            f"{_plural(c['fallback'], 'fallback')} to on-demand, {_plural(c['disruption'], 'pod disruption')} "
            f"(relaunched in the try), {c['orphans_terminated']} orphaned instance(s) terminated.</p>")
    fleets = table(["launched", "DAG / task", "instances", "offerings", "running", "USD / h now", "cost so far"],
                   [(when(f["launched_at"]), Raw(f"{dag_link(f['dag_id'])} / {task_link(f['dag_id'], f['task_id'])}"),
                     f"{f['instances']} ({f['capacity'].get('spot', 0)} spot, {f['capacity'].get('on-demand', 0)} "
                     "on-demand)", ", ".join(f["offerings"]), f["running"], f"{f['usd_per_hour']:.4f}",
                     usd(f["cost_so_far"]) + (f" (+{f['unpriced']} unpriced)" if f["unpriced"] else ""))
                    for f in spot["fleets"][:20]], numeric=(4, 5, 6), ids=(1, 3)) if spot["fleets"] else muted(
        "No fleet launched.")
    decisions = table(["decided", "DAG / task", "capacity", "offering", "expected cost", "why"],
                      [(when(d["created_at"]), Raw(f"{dag_link(d['dag_id'])} / {task_link(d['dag_id'], d['task_id'])}"),
                        d["capacity"], d["offering"], usd(d["expected_cost"]), "; ".join(d["reasons"][:1]))
                       for d in spot["decisions"][:10]], numeric=(4,), ids=(1, 3, 5)) if spot["decisions"] else ""
    events = table(["when", "what", "DAG / task", "detail"],
                   [(ago(e["at"], now), e["kind"], Raw(f"{dag_link(e['dag_id'])} / "
                                                       f"{task_link(e['dag_id'], e['task_id'])}"), e["text"])
                    for e in spot["events"][:20]], ids=(2, 3), nowrap=(0, 1)) if spot["events"] else muted(
        "No interruption, fallback or disruption.")
    return (head + "<p class=muted>Fleets</p>" + fleets + ("<p class=muted>Decisions</p>" + decisions if decisions
                                                           else "") + "<p class=muted>Interruptions, fallbacks and "
            "disruptions</p>" + events)


def render(*, tasks: list[dict[str, Any]], cache: dict[str, Any] | None, cache_error: str | None,
           plan: dict[str, Any] | None, waste: dict[str, Any] | None, changes: list[dict[str, Any]],
           now: float | None = None, gpu: dict[str, Any] | None = None,
           spot: dict[str, Any] | None = None) -> str:
    now = time.time() if now is None else now
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>effopt</title>"
        f"<meta name=viewport content='width=device-width, initial-scale=1'><style>{STYLE}</style></head><body>"
        "<h1>effopt</h1><p class=sub>What your tasks use, what they waste, and what effopt saved. "
        f"As of {html.escape(when(now))}.</p>"
        + summary_cards(tasks, cache, plan, waste)
        + "<h2 id=waste>Waste report</h2>" + waste_section(waste)
        + "<h2 id=rightsizing>Right-sizing recommendations</h2>" + plan_section(plan, now)
        + "<h2 id=tasks>Measured task usage (last 30 days)</h2>" + tasks_section(tasks)
        + "<h2 id=cache>Computation cache</h2>" + cache_section(cache, cache_error)
        + "<h2 id=changes>Right-sizing changes applied (last 30 days)</h2>" + changes_section(changes)
        + ("<h2 id=gpu>GPUs: inventory, pools and leases</h2>" + gpu_section(gpu, now) if gpu is not None else "")
        + "<h2 id=spot>Spot placement (last 30 days)</h2>" + spot_section(spot, now)
        + "</body></html>"
    )
