"""Benchmark of the right-sizing recommenders (issue 5) on the Alibaba GenAI 2026 trace.

Backtests effopt, VPA and KRR side by side (step 1 h, warmup 6 h; see
``effopt.rightsizing.backtest`` for the scoring) on ``pod_memory_util``
(usage as a fraction of the deployed limit, so the deployed baseline is a
limit of 1.0) and ``pod_gpu_memory_used_bytes`` (no deployed value in the
trace).  effopt is calibrated on the whole fleet before each decision time (its empirical-Bayes margin
prior; see ``effopt.rightsizing.backtest``).  The target for effopt: mean slack <= 0.7x VPA's with no more overrun
events than VPA, on both metrics.  For reference, Google Autopilot reports
23% slack automated against 46% for hand-set limits.

Prints ``name: value (ratio vs baseline)`` lines and a table; ``--results
FILE`` also writes them as Markdown.  Usage::

    .venv/bin/python bench/rightsizing_bench.py [PATH] [--results bench/RESULTS-rightsizing.md]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))

import numpy as np  # noqa: E402

from effopt.cli.rightsize import render_backtest  # noqa: E402
from effopt.metrics.trace import TraceSource  # noqa: E402
from effopt.rightsizing import BacktestResult, backtest, get_recommender  # noqa: E402

METRICS = (("pod_memory_util", "memory"), ("pod_gpu_memory_used_bytes", "gpu_memory"))
RECOMMENDERS = ("effopt", "vpa", "krr")
#: Alternative effopt settings reported by --sweep (the trade-off between slack and overruns).
SWEEP: tuple[tuple[str, dict[str, float]], ...] = (
    ("defaults", {}),
    ("target_overrun_rate 0.01", {"target_overrun_rate": 0.01}),
    ("target_overrun_rate 0.015", {"target_overrun_rate": 0.015}),
    ("target_overrun_rate 0.03", {"target_overrun_rate": 0.03}),
    ("target_overrun_rate 0.05", {"target_overrun_rate": 0.05}),
    ("no fleet prior (fixed 15%)", {"fleet_min_ratios": 10**12}),
    ("level_percentile 0.9", {"level_percentile": 0.9}),
    ("own margin = largest rise", {"growth_quantile": 1.0}),
    ("half_life 6 h", {"half_life_s": 6 * 3600.0}),
    ("max_decrease 50%", {"max_decrease": 0.5}),
    ("no growth trend", {"trend": False}),
    ("no burn-in (burn_in_intervals 0)", {"burn_in_intervals": 0}),
    ("burn_in_intervals 2", {"burn_in_intervals": 2}),
)
LINES: list[str] = []
#: Written under the sweep in --results: what the figures say about the target.
ANALYSIS = """
What the sweep shows: ``target_overrun_rate`` moves effopt along one slack/overrun frontier.  Within VPA's
overrun counts on both metrics the rows reach 0.74-0.77x VPA's slack on memory and 0.85-0.88x on GPU memory;
0.70x is reached on memory only at 25-29 overruns, never within VPA's count on either metric.  The trend and
the burn-in work together: the burn-in alone removes the start-up rise from each container's own margin
(slack falls) but leaves slow ramps to overrun (25 vs 20); the trend covers those ramps in the level.

Why the target is missed (helpers searched about 120 variants: per-minute decaying quantiles, medians of
hourly peaks, location-scale and volatility-class ("Mondrian") conformal margins, effective-sample-size
shrinkage, change-point release of spikes, rolling maxima; then, against a spike being counted twice (the
level holds it and the container's own margin holds its ratio), margins conditional on an inflated level,
dropping the ratio of the spike the level holds, a cap at the largest usage seen times a calibrated
ratio; and for the fleet prior, empirical-Bayes shrinkage toward the containers' own quantiles, a
beta-binomial prior, a Dirichlet-process mixture, a prior conditional on the container's largest rise so
far; none reached 0.70x within VPA's overruns on both metrics.  The one rule that gained in both held-out
halves, dropping the fleet prior once a container has 8 replayed hours (memory 0.71x, GPU 0.86x), has its
cutoff read off this trace; learned from the fleet's own history instead, it added overruns in both
memory halves):

* pod_memory_util: 14-15 of every recommender's overruns fall in one hour in which the fleet restarts at once
  (a short spike, then a lower baseline), unforeseeable from any container's or the fleet's past; that leaves
  5-6 overruns for the other 1,560 windows.  After it, the level holds the spike for a few hours (releasing
  it sooner costs overruns on containers whose bursts recur).
* pod_gpu_memory_used_bytes: bursty containers sit at a baseline and burst to 1.2-1.9x of it, and the next
  burst is often above every earlier one: even "largest usage seen x 1.1" overruns 23 times.  A constant limit
  per container chosen with hindsight and allowed VPA's 15 overruns reaches 0.62x; with effopt's level (as it
  was before the trend) and a margin per container chosen with hindsight, 0.70x, so a causal margin on that
  level would have to be as good as hindsight.

Held out: backtested separately on the even- and the odd-numbered containers (each half calibrating its own
fleet prior), the trend and burn-in gain 0.06-0.08x on memory and 0.03x on GPU memory in every half (memory
0.908x -> 0.830x and 0.780x -> 0.716x, GPU 0.910x -> 0.878x and 0.903x -> 0.871x), with overruns 11, 10, 7
and 7 against VPA's 11, 9, 8 and 7 (before: 12, 9, 6 and 8).  Two defaults were set with this trace in view (rate 0.02 rather than 0.01, level
p95 rather than p90: the nearest settings that keep overruns within VPA's on both metrics); the rows above are
their neighbours.  The fleet prior weighs its pooled ratios by age with the level's 3 h half-life (a weighted
conformal quantile, no new constant); unweighted, the fleet's start-up ramp in the first hours set the prior
for the whole day (memory 0.94x, GPU 0.92x before the weighting, the trend and the burn-in).  The same
settings serve both metrics; the effopt module docstring gives the reason for each.
"""


#: Written under the slack-by-history tables in --results.
HISTORY_ANALYSIS = """
What the tables show.  On pod_gpu_memory_used_bytes the clairvoyant constant limit (each container held
at the largest usage of its whole scored future, zero overruns) scores 0.70x VPA's slack overall, which is
the target itself.  effopt's slack starts 0.12-0.14 above it (6-9 h of history, where no causal recommender
knows a container's bursts yet; VPA is 0.09-0.12 above it there), closes to 0.01-0.06 above it at 16-20 h and
falls below it only at 21-22 h; VPA stays 0.09-0.16 above it throughout.  Meeting 0.70x would need
effopt to be as good as the clairvoyant limit on average over the whole day, first hours included.  On
pod_memory_util effopt starts 0.09 above the clairvoyant limit (6 h), is 0.005-0.04 above it at 7-13 h and
below it from 14 h until the fleet restart at 19 h, which costs 15 overruns for effopt (14 for
VPA); afterwards every recommender still holds the restart's spike over a baseline that fell to a sixth
of it (effopt 0.04-0.08 above the clairvoyant limit, VPA 0.12).
"""


def report(name: str, value: str, ratio: float | None = None, baseline: str | None = None) -> None:
    text = f"{name}: {value}" + (f" ({ratio:.2f}x vs {baseline})" if ratio is not None else "")
    LINES.append(text)
    print(text, flush=True)


def _best_within_budget(gains: list[np.ndarray], budget: int) -> float:
    """Exact knapsack: the largest total gain with at most ``budget`` overruns, where ``gains[c][k]`` is
    what container ``c`` gains by taking ``k`` overruns (``gains[c][0] == 0``)."""
    best = np.zeros(budget + 1)
    for g in gains:
        new = best.copy()
        for k in range(1, min(budget, g.size - 1) + 1):
            new[k:] = np.maximum(new[k:], best[:budget + 1 - k] + g[k])
        best = new
    return float(best[budget])


def hindsight(series: list, warmup_s: float, budget: int) -> tuple[float, float, float]:
    """Clairvoyant references (not recommenders; they see the future), as mean slack over the samples
    after warm-up, in hourly windows:

    * a constant limit per container equal to its future peak (zero overruns);
    * the same, allowed ``budget`` overrun windows in all (VPA's count): each container's constant limit
      may sit at its k-th highest window peak (k windows overrun), the k chosen for the whole fleet by
      an exact knapsack that minimises slack;
    * a limit per window equal to that window's peak (zero overruns; no causal recommender can beat it).

    A causal recommender that keeps each container's limit constant cannot beat the second."""
    const_sum = window_sum = 0.0
    gains: list[np.ndarray] = []
    n = 0
    for s in series:
        keep = s.timestamps >= (s.timestamps[0] + warmup_s if len(s) else 0)
        u, t = s.values[keep], s.timestamps[keep]
        if not u.size:
            continue
        hour = np.floor((t - t[0]) / 3600).astype(int)
        peaks = np.zeros(hour.max() + 1)
        np.maximum.at(peaks, hour, u)
        p = peaks[hour]
        window_sum += float(np.sum(np.where(p > 0, (p - u) / np.where(p > 0, p, 1), 0.0)))
        n += u.size
        if u.max() > 0:
            def slack(limit: float, u: np.ndarray = u) -> float:
                return float(u.size - u.sum() / limit)

            const_sum += slack(u.max())
            ranked = np.sort(peaks[peaks > 0])[::-1][:budget + 1]  # limit at the k-th highest: k windows over
            gains.append(np.array([slack(ranked[0]) - slack(limit) for limit in ranked]))
    return const_sum / n, (const_sum - _best_within_budget(gains, budget)) / n, window_sum / n


class ByHistory:
    """Mean slack and overruns by how much history a decision had (hours since the container's first
    sample), next to the clairvoyant constant limit (each container's peak over its scored windows): where
    a causal recommender loses to a limit that knows the future, and where it beats it."""

    def __init__(self) -> None:
        self.windows: list[tuple[str, float, dict[str, float], np.ndarray]] = []

    def __call__(self, series, t: float, recs, usage: np.ndarray) -> None:  # backtest's on_window
        hours = (t - float(series.timestamps[0])) / 3600.0
        self.windows.append((f"{series.workload}/{series.container}", hours,
                             {n: r.target for n, r in recs.items()}, usage))

    def table(self) -> str:
        from effopt.cli.table import render

        peak: dict[str, float] = {}
        for c, _, _, u in self.windows:
            peak[c] = max(peak.get(c, 0.0), float(u.max()))
        names = list(self.windows[0][2]) if self.windows else []
        acc: dict[int, dict[str, list[float]]] = {}
        for c, hours, targets, u in self.windows:
            row = acc.setdefault(int(hours), {n: [0.0, 0.0] for n in [*names, "hindsight"]})
            for n, rec in [*targets.items(), ("hindsight", peak[c])]:
                row[n][0] += float(np.sum((rec - u) / rec)) if rec > 0 else 0.0
                row[n][1] += float(np.any(u > rec))
            row.setdefault("_", [0.0, 0.0])
            row["_"][0] += u.size
            row["_"][1] += 1
        rows = []
        for h in sorted(acc):
            r = acc[h]
            rows.append([h, int(r["_"][1])] + [f"{r[n][0] / r['_'][0]:.3f} ({int(r[n][1])})"
                                                  for n in [*names, "hindsight"]])
        return render(["history h", "windows", *[f"{n} slack (overruns)" for n in names],
                       "clairvoyant constant"], rows)


def recommend_cost(series: list) -> dict[str, float]:
    """Seconds per container for one hourly decision over the whole fleet, as the DAG makes it
    (``recommend_all``: effopt calibrates its fleet prior, then recommends), best of 3."""
    from effopt.rightsizing.recommend import recommend_all

    out = {}
    for name in RECOMMENDERS:
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            recommend_all(series, name)
            best = min(best, time.perf_counter() - t0)
        out[name] = best / len(series)
    return out


def run(path: Path, step_s: float, warmup_s: float) -> list[tuple[str, BacktestResult, float, tuple, dict, str]]:
    source = TraceSource(path)
    out = []
    for label, metric in METRICS:
        t0 = time.perf_counter()
        series = source.series(metric)  # type: ignore[arg-type]
        by_history = ByHistory()
        result = backtest(series, {n: get_recommender(n) for n in RECOMMENDERS}, step_s=step_s, warmup_s=warmup_s,
                          metric=metric, on_window=by_history)
        seconds = time.perf_counter() - t0
        out.append((label, result, seconds, hindsight(series, warmup_s, result.recommenders["vpa"].overrun_events),
                    recommend_cost(series), by_history.table()))
    return out


def sweep(path: Path, step_s: float, warmup_s: float) -> str:
    """Backtest each :data:`SWEEP` variant of effopt against VPA on both metrics; a table."""
    from effopt.cli.table import render

    source = TraceSource(path)
    data = {metric: source.series(metric) for _, metric in METRICS}  # type: ignore[arg-type]
    rows = []
    for label, settings in SWEEP:
        row: list[object] = [label]
        for _, metric in METRICS:
            res = backtest(data[metric], {"effopt": get_recommender("effopt", **settings),
                                          "vpa": get_recommender("vpa")}, step_s=step_s, warmup_s=warmup_s)
            e, v = res.recommenders["effopt"], res.recommenders["vpa"]
            row += [e.mean_slack / v.mean_slack, f"{e.overrun_events}/{v.overrun_events}"]
        rows.append(row)
    heads = ["effopt variant"]
    for label, _ in METRICS:
        heads += [f"{label} slack/vpa", "overruns eff/vpa"]
    return render(heads, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=str(REPO.parent / "shared" / "data" / "alibaba-genai-2026"),
                        help="directory of the trace (default ../shared/data/alibaba-genai-2026)")
    parser.add_argument("--step", type=float, default=3600.0, help="decision step, seconds (default 3600)")
    parser.add_argument("--warmup", type=float, default=6 * 3600.0, help="warm-up, seconds (default 21600)")
    parser.add_argument("--results", help="also write the figures as Markdown to this file")
    parser.add_argument("--sweep", action="store_true", help="also backtest alternative effopt settings")
    args = parser.parse_args(argv)
    path = Path(args.path)
    if not path.is_dir():
        parser.error(f"trace directory {path} does not exist")
    results = run(path, args.step, args.warmup)
    tables = []
    verdicts = []
    history_tables = []
    for label, res, seconds, (const, const_budget, window), cost, history in results:
        vpa = res.recommenders["vpa"]
        for name, s in res.recommenders.items():
            report(f"{label} {name} mean slack", f"{s.mean_slack:.4f}", s.mean_slack / vpa.mean_slack, "vpa")
            report(f"{label} {name} overrun events", f"{s.overrun_events} of {s.windows} windows "
                   f"({s.overrun_fraction:.2%})", s.overrun_events / vpa.overrun_events if vpa.overrun_events else None,
                   "vpa")
            report(f"{label} {name} changes", str(s.changes))
        if res.deployed is not None:
            d = res.deployed
            report(f"{label} deployed mean slack", f"{d.mean_slack:.4f}", d.mean_slack / vpa.mean_slack, "vpa")
            report(f"{label} deployed overrun events", str(d.overrun_events))
        report(f"{label} hindsight constant limit (future peak per container) mean slack", f"{const:.4f}",
               const / vpa.mean_slack, "vpa")
        report(f"{label} hindsight constant limit allowed VPA's {vpa.overrun_events} overruns mean slack",
               f"{const_budget:.4f}", const_budget / vpa.mean_slack, "vpa")
        report(f"{label} hindsight per-window limit (each hour's peak) mean slack", f"{window:.4f}",
               window / vpa.mean_slack, "vpa")
        report(f"{label} backtest time", f"{seconds:.1f} s")
        for name, per in cost.items():
            report(f"{label} {name} hourly decision (recommend_all, whole history) per container",
                   f"{per * 1e3:.2f} ms", per / cost["vpa"], "vpa")
        e = res.recommenders["effopt"]
        met_slack = e.mean_slack <= 0.7 * vpa.mean_slack
        met_over = e.overrun_events <= vpa.overrun_events
        verdicts.append(f"{label}: slack {e.mean_slack / vpa.mean_slack:.2f}x VPA "
                        f"({'meets' if met_slack else 'MISSES'} <= 0.70x), overruns {e.overrun_events} vs VPA "
                        f"{vpa.overrun_events} ({'meets' if met_over else 'MISSES'} <=)")
        table = render_backtest(res)
        tables.append((label, table))
        print(table, flush=True)
        history_tables.append((label, history))
        print(f"{label}: mean slack (overrun events) by hours of history at the decision\n{history}", flush=True)
    for v in verdicts:
        print("target " + v)
    sweep_table = sweep(path, args.step, args.warmup) if args.sweep else None
    if sweep_table:
        print(sweep_table)
    if args.results:
        with open(args.results, "w") as fh:
            fh.write("# Right-sizing benchmark (issue 5)\n\n")
            fh.write(f"`python bench/rightsizing_bench.py` on {platform.node()} ({platform.machine()}, Python "
                     f"{platform.python_version()}), trace `{path.name}`, step {args.step / 3600:g} h, warmup "
                     f"{args.warmup / 3600:g} h.\n\n")
            fh.write("Mean slack = mean over scored samples of (rec - usage) / rec; an overrun event is a "
                     "container-hour in which usage exceeded the recommendation (for memory, request = limit: "
                     "an OOM kill). Deployed = the limits the trace ran with (pod_memory_util is a fraction of "
                     "it, so 1.0).\n\n")
            for label, table in tables:
                fh.write(f"## {label}\n\n```\n{table}\n```\n\n")
            fh.write("## Target (effopt slack <= 0.7x VPA, overruns <= VPA)\n\n")
            fh.writelines(f"- {v}\n" for v in verdicts)
            fh.write("\nFor scale, three clairvoyant references (they see the future; see the figures below): "
                     "a constant limit per container equal to its future peak (zero overruns); the same allowed "
                     "VPA's number of overruns, spent where they save the most slack (an exact knapsack); and a "
                     "limit per hour equal to that hour's peak.  A causal recommender that keeps a container's "
                     "limit constant cannot beat the second.\n")
            fh.write("\n## Slack by hours of history\n\nMean slack per scored sample (overrun events) of the "
                     "decisions made with that many hours of the container's history, next to the clairvoyant "
                     "constant limit (the container's peak over all its scored windows, so zero overruns).\n")
            for label, history in history_tables:
                fh.write(f"\n### {label}\n\n```\n{history}\n```\n")
            fh.write(HISTORY_ANALYSIS)
            if sweep_table:
                fh.write("\n## effopt settings sweep (slack and overruns relative to VPA)\n\n```\n"
                         f"{sweep_table}\n```\n")
                fh.write(ANALYSIS)
            fh.write("\n## Figures\n\n")
            fh.writelines(f"- {line}\n" for line in LINES)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
