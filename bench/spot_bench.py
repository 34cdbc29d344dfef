"""Spot placement benchmark (issue 13) on the real spot availability traces.

    python bench/spot_bench.py [--traces ../shared/data/spot-traces] [--philly ../shared/data/philly/...]
                               [--results bench/RESULTS-spot.md] [--plot bench/spot_cost_vs_slack.png]

All policies run side by side on the same seeded start offsets (30 per setting;
the week before each start is the history a policy may learn from), priced
with the embedded catalog (p3.2xlarge for 1-V100 traces, p3.16xlarge for
8-V100; K80 traces are unpriced and reported so).  Sections:

1. the standard settings (C = 48 h, D = 52 / 70 h, d = 0.05 / 0.2 h, each zone
   alone and the zones of a folder together): cost against on-demand, misses,
   the effopt / uniform-progress ratio, and the **offline optimum** of every job
   (:mod:`effopt.spot.optimal`, a lower bound on what any policy, online or
   clairvoyant, can pay) as the ceiling on any ratio;
2. the same with on-demand launches failing with probability 0.05;
3. hourly checkpoints (k = 1 h) on the 02-15 folder: lost work;
4. the trace values read the other way round (1 = no spot, as the Can't Be
   Late simulator reads them): uniform-progress against greedy;
5. the Philly job mix: jobs longer than 1 h (stratified sample, weighted to the
   whole population) with deadlines 52/48 and 70/48 of their length;
6. a deadline sweep on the 02-15 folder for the plot (cost against slack).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import math
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

import numpy as np  # noqa: E402

from effopt.spot.catalog import SnapshotCatalog  # noqa: E402
from effopt.spot.optimal import offline_optimum  # noqa: E402
from effopt.spot.policies import (  # noqa: E402
    EffoptPolicy,
    GreedyPolicy,
    Job,
    OnDemandPolicy,
    UniformProgressPolicy,
)
from effopt.spot.simulate import (  # noqa: E402
    SettingResult,
    _seed,
    price_group,
    run_setting,
    simulate_job,
    standard_settings,
    start_offsets,
    warmup_ticks,
)
from effopt.spot.traces import TraceGroup, load_traces  # noqa: E402

POLICIES = {"greedy": GreedyPolicy, "uniform-progress": UniformProgressPolicy, "effopt": EffoptPolicy}
NAMES = ["on-demand", *POLICIES]
SEED = 0
OUT: list[str] = []


def say(line: str = "") -> None:
    print(line, flush=True)
    OUT.append(line)


def table(headers: list[str], rows: list[list[object]]) -> None:
    say("| " + " | ".join(headers) + " |")
    say("|" + "|".join("---" for _ in headers) + "|")
    for r in rows:
        say("| " + " | ".join(_fmt(v) for v in r) + " |")
    say()


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def _cell(p) -> str:
    return "unpriced" if p.cost_vs_on_demand is None else f"{p.cost_vs_on_demand:.3f} ({p.deadline_misses})"


def run_cells(cells, catalog, *, starts: int, keep_jobs: bool = False, policies=None,
              common_starts: bool = False) -> list[SettingResult]:
    """Run the cells; ``common_starts``: the same start offsets for every deadline of a zone set."""
    out = []
    shared: dict[tuple, list[int]] = {}
    longest = max(st.job.deadline_h for _, st in cells)
    for g, st in cells:
        avail = g.matrix(1, st.zones)
        market, report = price_group(catalog, g, st.zones)
        offsets = None
        if common_starts:
            key = (g.label, st.zones)
            if key not in shared:
                probe = Job(st.job.work_h, longest, st.job.changeover_h, st.job.checkpoint_h)
                shared[key] = start_offsets(avail.shape[1], probe, g.tick_h, starts, _seed(SEED, g.label, st.zones))
            offsets = shared[key]
        out.append(run_setting(st, avail, g.tick_h, policies or POLICIES, market=market, prices=report,
                               n_starts=starts, seed=SEED, keep_jobs=keep_jobs, starts=offsets))
    return out


def optimum_ratio(res: SettingResult, group: TraceGroup) -> float | None:
    """Mean over the setting's jobs of offline optimum / on-demand-only cost (priced settings only)."""
    if not res.priced:
        return None
    st = res.setting
    avail = group.matrix(1, st.zones)
    spot = min(res.prices["spot"].values())
    span = int(math.ceil(st.job.deadline_h / group.tick_h)) + 1
    ratios = []
    for j, s in enumerate(res.starts):
        opt = offline_optimum(avail[:, s:s + span], st.job.work_h, st.job.deadline_h, st.job.changeover_h,
                              group.tick_h, res.prices["on_demand"], spot)
        base = res.jobs["on-demand"][j].cost
        for n in POLICIES:  # the bound must hold for every policy on every job
            assert res.jobs[n][j].cost >= opt - 1e-6, (st.label, n, j, res.jobs[n][j].cost, opt)
        ratios.append(opt / base)
    return float(np.mean(ratios))


def section_standard(groups, catalog, starts):
    say("## 1. Standard settings: cost against on-demand-only (deadline misses)")
    say()
    say("C = 48 h; each row is the mean over the setting's jobs of cost / on-demand-only cost of the same job. "
        "`optimum` is the offline optimum (future availability known; a lower bound for any policy). "
        "Ratios effopt / UP and optimum / UP are per setting.")
    say()
    by_label = {g.label: g for g in groups}
    cells = standard_settings(groups)
    results = run_cells(cells, catalog, starts=starts, keep_jobs=True)
    rows, stats = [], []
    for res in results:
        s = res.summaries
        opt = optimum_ratio(res, by_label[res.setting.group])
        up, ef, gr = (s[n].cost_vs_on_demand for n in ("uniform-progress", "effopt", "greedy"))
        rows.append([res.setting.label, *[_cell(s[n]) for n in ("greedy", "uniform-progress", "effopt")],
                     opt, None if up is None else ef / up, None if up is None or opt is None else opt / up,
                     f"{s['uniform-progress'].changeovers}/{s['effopt'].changeovers}"])
        stats.append((res, up, ef, gr, opt))
    table(["setting", "greedy", "uniform-progress", "effopt", "optimum", "effopt/UP", "optimum/UP",
           "changeovers UP/effopt"], rows)
    priced = [x for x in stats if x[1] is not None]
    agg = []
    for layout, multi in (("single zone", False), ("zones of one folder", True)):
        sel = [x for x in priced if x[0].setting.multi_zone == multi]
        agg.append([layout, len(sel), np.mean([x[3] for x in sel]), np.mean([x[1] for x in sel]),
                    np.mean([x[2] for x in sel]), np.mean([x[4] for x in sel]),
                    np.mean([x[2] / x[1] for x in sel]), min(x[2] / x[1] for x in sel), max(x[2] / x[1] for x in sel),
                    np.mean([x[4] / x[1] for x in sel])])
    say("### Summary over the priced settings")
    say()
    table(["layout", "settings", "greedy", "uniform-progress", "effopt", "optimum", "effopt/UP (mean)",
           "effopt/UP min", "effopt/UP max", "optimum/UP (mean)"], agg)
    savings = [[n, 1 - np.mean([r.summaries[n].cost_vs_on_demand for r in results if r.priced]),
                sum(r.summaries[n].deadline_misses for r in results), sum(r.summaries[n].jobs for r in results),
                sum(r.summaries[n].changeovers for r in results)] for n in NAMES]
    say("### Savings against on-demand-only (mean over priced settings), misses over all settings")
    say()
    table(["policy", "saving vs on-demand", "deadline misses", "jobs", "changeovers"], savings)
    return results, stats, agg


def section_failures(groups, catalog, starts):
    say("## 2. On-demand launches fail with probability 0.05")
    say()
    cells = standard_settings(groups, od_failure=0.05)
    results = run_cells(cells, catalog, starts=starts)
    rows = []
    for res in results:
        s = res.summaries
        rows.append([res.setting.label, *[s[n].deadline_misses for n in NAMES],
                     *[s[n].failed_launches for n in ("uniform-progress", "effopt")]])
    misses = {n: sum(r.summaries[n].deadline_misses for r in results) for n in NAMES}
    jobs = sum(r.summaries["effopt"].jobs for r in results)
    table(["setting", *[f"misses {n}" for n in NAMES], "failed launches UP", "failed launches effopt"],
          [r for r in rows if any(r[1:1 + len(NAMES)])] or [["(no setting had a miss)", *[0] * (len(NAMES) + 2)]])
    cost = {n: np.mean([r.summaries[n].cost_vs_on_demand for r in results if r.priced]) for n in NAMES}
    table(["policy", "deadline misses", "jobs", "mean cost vs on-demand (priced)"],
          [[n, misses[n], jobs, cost[n]] for n in NAMES])
    return misses


def section_checkpoints(groups, catalog, starts):
    say("## 3. Hourly checkpoints (k = 1 h): a preemption loses the work since the last checkpoint")
    say()
    east = [g for g in groups if g.label.startswith("aws-02-15-2023")]
    cells = standard_settings(east, checkpoint_h=1.0)
    results = run_cells(cells, catalog, starts=starts)
    rows = []
    for res in results:
        s = res.summaries
        rows.append([res.setting.label, *[s[n].cost_vs_on_demand for n in ("greedy", "uniform-progress", "effopt")],
                     *[round(s[n].lost_work_h / max(1, s[n].jobs), 3) for n in ("uniform-progress", "effopt")],
                     "/".join(str(s[n].deadline_misses) for n in POLICIES)])
    table(["setting (k = 1 h)", "greedy", "uniform-progress", "effopt", "lost work h/job UP",
           "lost work h/job effopt", "misses greedy/UP/effopt"], rows)
    sel = [r for r in results if r.priced]
    ratios = [r.summaries["effopt"].cost_vs_on_demand / r.summaries["uniform-progress"].cost_vs_on_demand
              for r in sel]
    say(f"Mean effopt / uniform-progress with k = 1 h: {np.mean(ratios):.3f}")
    say()
    return results


def section_inverted(groups, catalog, starts):
    say("## 4. Values read the other way round (1 = no spot), as the Can't Be Late simulator reads them")
    say()
    rows = []
    wins = total = 0
    for g in groups:
        inv = TraceGroup(g.folder, g.accelerator, g.accelerator_count, tuple(
            type(t)(t.path, t.zone, t.region, t.accelerator, t.accelerator_count, t.gap_seconds,
                    (t.values == 0).astype(np.int64)) for t in g.traces))
        cells = standard_settings([inv])
        res = run_cells(cells, catalog, starts=starts, policies={"greedy": GreedyPolicy,
                                                                 "uniform-progress": UniformProgressPolicy})
        for r in res:
            if not r.priced:
                continue
            gr, up = r.summaries["greedy"].cost_vs_on_demand, r.summaries["uniform-progress"].cost_vs_on_demand
            total += 1
            wins += up < gr
            rows.append([r.setting.label, gr, up, "yes" if up < gr else "no"])
    table(["setting (inverted)", "greedy", "uniform-progress", "UP cheaper"], rows)
    say(f"uniform-progress is cheaper than greedy on {wins} of {total} priced settings read inverted.")
    say()
    return wins, total


def _philly_runtimes(path: Path) -> np.ndarray:
    with gzip.open(path, "rt") as fh:
        return np.array([float(r["runtime"]) for r in csv.DictReader(fh)]) / 3600.0


def section_philly(groups, catalog, path: Path, per_stratum: int):
    say("## 5. Philly job mix: every job longer than 1 h")
    say()
    hours = _philly_runtimes(path)
    jobs = hours[hours > 1.0]
    edges = [1, 2, 4, 8, 16, 32, 64, 128, 256, math.inf]
    rng = np.random.default_rng(_seed(SEED, "philly"))
    strata = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        members = jobs[(jobs > lo) & (jobs <= hi)]
        n = min(per_stratum, members.size)
        pick = rng.choice(members, size=n, replace=False) if n else members
        strata.append((lo, hi, members.size, float(members.sum()), np.sort(pick)))
    say(f"{jobs.size} jobs longer than 1 h ({jobs.sum():,.0f} h of work) from {path.name}; stratified by length, "
        f"up to {per_stratum} sampled jobs per stratum, each weighted by (jobs in stratum / sampled); estimated "
        "totals = sum of weighted costs.  Replayed on aws-02-15-2023 (us-east-1, p3.2xlarge) from seeded starts "
        "after a week of history, cyclically for jobs longer than what is left of the trace; d = 0.2 h, k = 0; "
        "D = max(C x 52/48 or C x 70/48, C + d) (a job must be able to finish on on-demand).")
    say()
    east = next(g for g in groups if g.label == "aws-02-15-2023/v100_1")
    avail_all = east.matrix()
    markets = {z: price_group(catalog, east, (z,))[0] for z in east.zones}
    markets["all"] = price_group(catalog, east, east.zones)[0]
    names = list(NAMES)
    makers = {"on-demand": OnDemandPolicy, **POLICIES}
    summary = []
    od_only_rows = []
    for slack_name, factor in (("tight 52/48", 52 / 48), ("loose 70/48", 70 / 48)):
        for layout in ("single zone (seeded per job)", "zones of the folder"):
            totals = dict.fromkeys(names, 0.0)
            misses = dict.fromkeys(names, 0)
            od_only = defaultdict(lambda: defaultdict(int))
            for lo, hi, count, _h, pick in strata:
                if not pick.size:
                    continue
                weight = count / pick.size
                for j, c in enumerate(pick):
                    job = Job(float(c), max(float(c) * factor, float(c) + 0.2), 0.2)
                    key = _seed(SEED, "philly", slack_name, layout, lo, j)
                    jr = np.random.default_rng(key)
                    if layout.startswith("single"):
                        z = int(jr.integers(len(east.zones)))
                        avail, market = avail_all[z:z + 1], markets[east.zones[z]]
                    else:
                        avail, market = avail_all, markets["all"]
                    first = warmup_ticks(avail.shape[1], east.tick_h, 0)
                    start = int(jr.integers(first, avail.shape[1]))
                    for n in names:
                        r = simulate_job(makers[n](), job, avail, start, east.tick_h, market=market, cyclic=True,
                                         seed=_seed(key, n))
                        totals[n] += weight * r.cost
                        misses[n] += r.missed
                        if r.spot_h == 0:
                            od_only[n][f"{lo:g}-{hi:g} h"] += 1
            summary.append([slack_name, layout, *[totals[n] for n in names], totals["effopt"] /
                            totals["uniform-progress"], misses["effopt"] + misses["uniform-progress"]
                            + misses["greedy"]])
            od_only_rows.append((slack_name, layout, od_only))
    say("Estimated total USD over all jobs longer than 1 h:")
    say()
    table(["deadline", "layout", *[f"{n} USD" for n in names], "effopt/UP", "misses (sampled, all policies)"],
          [[a, b, *[f"{v:,.0f}" for v in r[:-2]], r[-2], r[-1]] for a, b, *r in summary])
    say("Sampled jobs that a policy ran entirely on on-demand, by length (effopt and uniform-progress): "
        "with d = 0.2 h the safety net forces on-demand from the start when the slack is below 2d (tight: jobs "
        "under 4.8 h); beyond that, effopt's plan weighs each job's expected restart cost (changeovers, and "
        "waiting through gaps) against the spot saving, with no rule on the job's length.")
    say()
    rows = []
    labels = [f"{lo:g}-{hi:g} h" for lo, hi, *_ in strata]
    for slack_name, layout, od_only in od_only_rows:
        for n in ("uniform-progress", "effopt"):
            rows.append([slack_name, layout, n, *[od_only[n].get(lab, 0) for lab in labels]])
    table(["deadline", "layout", "policy", *labels], rows)
    say("Sampled jobs per stratum: " + ", ".join(f"{lab}: {s[4].size} of {s[2]}" for lab, s in
                                                zip(labels, strata, strict=True)))
    say()
    return summary


def section_sweep(groups, catalog, starts, plot: str | None):
    say("## 6. Deadline sweep (aws-02-15-2023, d = 0.2 h): mean cost against on-demand")
    say()
    say("The same 30 start offsets for every deadline of a zone set (drawn for the longest deadline).")
    say()
    east = [g for g in groups if g.label.startswith("aws-02-15-2023")]
    deadlines = (50.0, 52.0, 56.0, 60.0, 65.0, 70.0, 80.0)
    cells = standard_settings(east, deadlines_h=deadlines, changeovers_h=(0.2,))
    results = run_cells(cells, catalog, starts=starts, keep_jobs=True, common_starts=True)
    by = {g.label: g for g in east}
    curves: dict[tuple[bool, str], dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        slack = (r.setting.job.deadline_h - r.setting.job.work_h) / r.setting.job.work_h
        for n in NAMES:
            curves[(r.setting.multi_zone, n)][slack].append(r.summaries[n].cost_vs_on_demand)
        curves[(r.setting.multi_zone, "offline optimum")][slack].append(optimum_ratio(r, by[r.setting.group]))
    rows = []
    for multi in (False, True):
        for n in [*NAMES, "offline optimum"]:
            pts = curves[(multi, n)]
            rows.append(["zones of the folder" if multi else "single zone (mean of 4)", n,
                         *[float(np.mean(pts[s])) for s in sorted(pts)]])
    slacks = sorted(next(iter(curves.values())))
    table(["layout", "policy", *[f"D={48 * (1 + s):.0f} ({100 * s:.0f}%)" for s in slacks]], rows)
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.6), dpi=90, sharey=True)
        colors = {"on-demand": "0.4", "greedy": "tab:orange", "uniform-progress": "tab:blue", "effopt": "tab:green",
                  "offline optimum": "k"}
        for ax, multi, title in ((axes[0], False, "each us-east-1 zone alone (mean)"),
                                 (axes[1], True, "the 4 us-east-1 zones together")):
            for n in [*NAMES, "offline optimum"]:
                pts = curves[(multi, n)]
                xs = sorted(pts)
                ax.plot([100 * x for x in xs], [np.mean(pts[x]) for x in xs], ":" if n == "offline optimum" else "-",
                        marker="o", ms=3, color=colors[n], label=n)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("deadline slack (D - C) / C, %  (C = 48 h, d = 0.2 h)", fontsize=8)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("cost / on-demand-only cost", fontsize=8)
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(plot)
        plt.close(fig)
        say(f"plot: {plot} ({Path(plot).stat().st_size / 1024:.0f} KB)")
        say()
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", default=str(ROOT.parent / "shared" / "data" / "spot-traces"))
    ap.add_argument("--philly", default=str(ROOT.parent / "shared" / "data" / "philly" / "philly_runtime.csv.gz"))
    ap.add_argument("--starts", type=int, default=30, help="start offsets per setting (default 30)")
    ap.add_argument("--per-stratum", type=int, default=25, help="sampled Philly jobs per length stratum")
    ap.add_argument("--results", default=str(ROOT / "bench" / "RESULTS-spot.md"))
    ap.add_argument("--plot", default=str(ROOT / "bench" / "spot_cost_vs_slack.png"))
    ap.add_argument("--skip", default="", help="comma-separated sections to skip (2,3,4,5,6)")
    args = ap.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    started = time.time()
    catalog = SnapshotCatalog.load()
    groups = load_traces(args.traces)
    say("# Spot placement benchmark (issue 13)")
    say()
    say(f"`python bench/spot_bench.py --traces {args.traces}` on {platform.node()} ({os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, a shared machine); {args.starts} seeded start offsets per setting, seed "
        f"{SEED}; prices from the embedded catalog ({catalog.source}).")
    say()
    _results, stats, agg = section_standard(groups, catalog, args.starts)
    misses_fail = section_failures(groups, catalog, args.starts) if "2" not in skip else None
    if "3" not in skip:
        section_checkpoints(groups, catalog, args.starts)
    inverted = section_inverted(groups, catalog, args.starts) if "4" not in skip else None
    if "5" not in skip and Path(args.philly).is_file():
        section_philly(groups, catalog, Path(args.philly), args.per_stratum)
    if "6" not in skip:
        section_sweep(groups, catalog, args.starts, args.plot)
    say("## Targets")
    say()
    priced = [x for x in stats if x[1] is not None]
    up_beats_greedy = [x for x in priced if x[1] < x[3]]
    losers = [x[0].setting.label for x in priced if not x[1] < x[3]]
    miss = {n: sum(x[0].summaries[n].deadline_misses for x in stats) for n in POLICIES}
    single, multi = agg
    say(f"* uniform-progress cheaper than greedy: {len(up_beats_greedy)} of {len(priced)} priced settings"
        + (f" (not on: {'; '.join(losers)})" if losers else "") +
        (f"; read inverted as the paper's simulator does: {inverted[0]} of {inverted[1]}" if inverted else ""))
    say(f"* deadline misses with on-demand always obtainable: greedy {miss['greedy']}, uniform-progress "
        f"{miss['uniform-progress']}, effopt {miss['effopt']}")
    say(f"* effopt / uniform-progress, single zone: {single[6]:.3f} (target <= 0.85; the offline optimum "
        f"reaches {single[9]:.3f})")
    say(f"* effopt / uniform-progress, zones of one folder: {multi[6]:.3f} (target <= 0.60; the offline optimum "
        f"reaches {multi[9]:.3f})")
    if misses_fail is not None:
        say(f"* with 5% on-demand launch failures: misses effopt {misses_fail['effopt']}, uniform-progress "
            f"{misses_fail['uniform-progress']}, greedy {misses_fail['greedy']}")
    say()
    single_opt = [x for x in priced if not x[0].setting.multi_zone]
    multi_opt = [x for x in priced if x[0].setting.multi_zone]
    say("### Why the two ratio targets cannot be met on these traces")
    say()
    say("`optimum` above is the offline optimum of each job: a dynamic program over the job's window with the "
        "future availability known, the changeover rounded down, the start slack rounded up and (several zones) "
        "moves between zones free, so every policy that meets the deadline, online or not, pays at least that "
        "much on every job; the benchmark asserts `cost >= optimum` for each policy on each of the "
        f"{sum(x[0].summaries['effopt'].jobs for x in priced)} priced jobs.  Hence, per setting, "
        "policy / UP >= optimum / UP, and the mean over settings too:")
    say()
    say(f"* single zone: the mean optimum / uniform-progress is {single[9]:.3f} > 0.85; only "
        f"{sum(x[4] / x[1] <= 0.85 for x in single_opt)} of {len(single_opt)} settings allow 0.85 at all "
        f"(effopt reaches {single[6]:.3f}, {100 * (1 - single[6]) / (1 - single[9]):.0f}% of the way from "
        "uniform-progress to the optimum);")
    say(f"* zones of one folder: the mean optimum / uniform-progress is {multi[9]:.3f} > 0.60; "
        f"{sum(x[4] / x[1] <= 0.60 for x in multi_opt)} of {len(multi_opt)} settings allow 0.60 at all "
        f"(effopt reaches {multi[6]:.3f}, {100 * (1 - multi[6]) / (1 - multi[9]):.0f}% of the way).")
    say()
    say("The published gains over Uniform Progress (16% one region, 48% several) come from the Can't Be Late "
        "simulator, which reads the trace values the other way round (section 4), on other traces; read as the "
        "data README pins them (1 = spot obtainable), these traces leave less room: uniform-progress is already "
        f"within {100 * (1 - single[9]):.0f}% (single zone) and {100 * (1 - multi[9]):.0f}% (zones of a folder) "
        "of a clairvoyant policy on average.")
    say()
    if losers:
        say("uniform-progress is not cheaper than greedy where spot is plentiful and the deadline loose "
            f"({'; '.join(losers)}): waiting costs greedy nothing there, while uniform-progress pays on-demand "
            "whenever an early gap puts it behind the line t C / D.  This is the published rule as written; "
            f"effopt is cheaper than both on {sum(x[2] < min(x[1], x[3]) for x in priced)} of {len(priced)} "
            "priced settings.")
        say()
    say(f"Wall time {time.time() - started:.0f} s.")
    if args.results:
        Path(args.results).write_text("\n".join(OUT) + "\n", encoding="utf-8")
        print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
