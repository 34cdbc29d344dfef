"""GPU placement benchmark (issue 12): the FGD paper's experiment reproduced, and effopt against FGD.

    python bench/gpu_bench.py [--data ../shared/data/alibaba-gpu-2023] [--seeds 10] [--jobs 2]
                              [--results bench/RESULTS-gpu.md] [--plot bench/gpu_default.png]

For each of the three shared traces (default, gpushare40, multigpu20) every policy runs on seeds 42..51
with the published protocol (effopt.gpu.simulate). Printed and written to bench/RESULTS-gpu.md:

* reproduction: unallocated GPU % at x = 100 (mean ± sd over seeds) next to the published mean, the
  difference and whether it is within the ±0.5 pp target;
* effopt against fgd, measured side by side on the same seeds: the ratio at x = 100 and the reduction;
* fragmentation ratio at x = 50 and 90, failed pods, seconds per run;
* the packing LP's lower bound on unallocated GPU at x = 100 (no packer, even offline, can go below it).

Then it runs ``bench/gpu_leases_bench.py`` (issue 16: GPU lease acquire / release latency against Redis next to a
bare ``SET NX`` round trip, and the overhead ``@gpu_task`` adds to a task; ``bench/RESULTS-gpu-leases.md``).
``--leases-only`` runs just that; ``--no-leases`` skips it.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from effopt.cli.gpu import plot_curves  # noqa: E402
from effopt.gpu import TargetWorkload, arrivals, load_nodes, load_pods, run_many  # noqa: E402
from effopt.gpu.packing import packing_bound  # noqa: E402
from effopt.gpu.simulate import FIRST_SEED  # noqa: E402

TRACES = ("default", "gpushare40", "multigpu20")
POLICIES = ("random", "dot-product", "gpu-clustering", "gpu-packing", "best-fit", "fgd", "effopt")
# Published means over 10 seeds, unallocated GPU % at x = 100 (FGD paper, ATC '23; ANCHORS.md section 5).
PUBLISHED = {
    "default": {"random": 13.70, "dot-product": 9.38, "gpu-clustering": 8.35, "gpu-packing": 8.22,
                "best-fit": 7.14, "fgd": 4.77},
    "gpushare40": {"random": 15.14, "dot-product": 10.70, "gpu-clustering": 10.24, "gpu-packing": 10.23,
                   "best-fit": 8.56, "fgd": 6.04},
    "multigpu20": {"random": 13.08, "dot-product": 8.15, "gpu-clustering": 6.66, "gpu-packing": 6.50,
                   "best-fit": 6.27, "fgd": 4.47},
}
# Fragmentation ratio % at x = 50 / 90, means of the simulator's own 10-seed results
# (hkust-adsl/kubernetes-scheduler-simulator, experiments/analysis/expected_results/analysis_frag_ratio_discrete.csv).
PUBLISHED_FRAG = {
    "default": {"random": (30.17, 96.65), "dot-product": (24.19, 94.18), "gpu-clustering": (24.23, 84.33),
                "gpu-packing": (24.02, 83.60), "best-fit": (21.62, 74.08), "fgd": (17.86, 49.97)},
    "gpushare40": {"random": (33.46, 96.95), "dot-product": (25.77, 99.52), "gpu-clustering": (26.73, 97.95),
                   "gpu-packing": (26.72, 98.46), "best-fit": (23.18, 87.26), "fgd": (19.11, 61.06)},
    "multigpu20": {"random": (28.93, 88.58), "dot-product": (22.48, 82.09), "gpu-clustering": (21.04, 68.06),
                   "gpu-packing": (20.94, 67.53), "best-fit": (20.40, 65.95), "fgd": (17.22, 47.29)},
}
TOLERANCE_PP = 0.5
TARGET_REDUCTION = 0.15  # effopt must leave >= 15% fewer unallocated GPUs than fgd at x = 100 (default)


def lp_bound(nodes, pods, seeds) -> tuple[float, float]:
    """Mean and max over seeds of the packing LP's bound at x = 100 (the pods arrived by then)."""
    cap = sum(n.gpus for n in nodes) * 1000
    out = []
    for seed in seeds:
        arrived, req = [], 0
        for r in arrivals(pods, cap, seed):
            if req + r.total_gpu_milli > cap:
                break
            req += r.total_gpu_milli
            arrived.append(r)
        out.append(packing_bound(arrived, cap // 1000).unallocated_bound_pct)
    return float(np.mean(out)), float(np.max(out))


def fmt(m, sd) -> str:
    if m is None:
        return "-"
    return f"{m:.2f} ± {sd:.2f}" if sd is not None else f"{m:.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / ".." / "shared" / "data" / "alibaba-gpu-2023"))
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--traces", default=",".join(TRACES))
    ap.add_argument("--results", default=str(ROOT / "bench" / "RESULTS-gpu.md"))
    ap.add_argument("--plot", default=str(ROOT / "bench" / "gpu_default.png"))
    ap.add_argument("--leases-only", action="store_true", help="only the GPU lease benchmark (gpu_leases_bench.py)")
    ap.add_argument("--no-leases", action="store_true", help="skip the GPU lease benchmark")
    args = ap.parse_args()
    if args.leases_only:
        return leases(args)
    data = Path(args.data)
    node_file = data / "openb_node_list_gpu_node.csv"
    if not node_file.is_file():
        print(f"error: {node_file} not found (pass --data)", file=sys.stderr)
        return 2
    seeds = list(range(FIRST_SEED, FIRST_SEED + args.seeds))
    nodes = load_nodes(node_file)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    report: dict[str, dict] = {}
    for trace in args.traces.split(","):
        pods = load_pods(data / f"openb_pod_list_{trace}.csv", {n.model for n in nodes})
        workload = TargetWorkload.from_requests(pods)
        t = time.perf_counter()
        results = run_many(nodes, pods, POLICIES, seeds, jobs=args.jobs, workload=workload,
                           progress=lambda d, n, tr=trace: print(f"\r{tr}: {d}/{n} runs", end="", file=sys.stderr))
        print(file=sys.stderr)
        bound = lp_bound(nodes, pods, seeds)
        report[trace] = {"results": results, "bound": bound, "wall": time.perf_counter() - t, "pods": len(pods),
                         "types": len(workload)}
        if trace == "default" and args.plot:
            plot_curves(results, args.plot, f"default trace: {len(nodes)} nodes, "
                        f"{sum(n.gpus for n in nodes)} GPUs, seeds {seeds[0]}..{seeds[-1]}")
    load_after = os.getloadavg()
    text = render(report, seeds, nodes, load_before, load_after, time.perf_counter() - t0, args)
    print(text)
    Path(args.results).write_text(text + "\n" + PROTOCOL_NOTES)
    print(f"\nwritten: {args.results}" + (f", {args.plot}" if args.plot else ""))
    return 0 if args.no_leases else leases(args)


def leases(args) -> int:
    """GPU leases against Redis and the @gpu_task overhead (bench/gpu_leases_bench.py)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import gpu_leases_bench

    return gpu_leases_bench.main(["--data", args.data])


def render(report, seeds, nodes, load_before, load_after, wall, args) -> str:
    lines = ["# GPU placement benchmark (issue 12)", "",
             f"`python bench/gpu_bench.py --seeds {len(seeds)} --jobs {args.jobs}` on {platform.machine()}, "
             f"{os.cpu_count()} CPUs, Python {platform.python_version()}; {len(nodes)} GPU nodes, "
             f"{sum(n.gpus for n in nodes)} GPUs; seeds {seeds[0]}..{seeds[-1]}; {wall / 60:.1f} min wall. "
             f"Machine load average {load_before[0]:.1f} before and {load_after[0]:.1f} after "
             "(shared with other jobs: the seconds per run are upper bounds).", ""]
    lines += ["## Reproduction: unallocated GPU % at x = 100 (mean ± sd over seeds) vs the published means", "",
              "| trace | policy | ours | published | difference | within ±0.5 pp |", "|---|---|---|---|---|---|"]
    for trace, rep in report.items():
        for name in POLICIES:
            if name == "effopt":
                continue
            m, sd = rep["results"][name].stat(100)
            pub = PUBLISHED.get(trace, {}).get(name)
            diff = "-" if pub is None or m is None else f"{m - pub:+.2f}"
            ok = "-" if pub is None or m is None else ("yes" if abs(m - pub) <= TOLERANCE_PP else "**no**")
            lines.append(f"| {trace} | {name} | {fmt(m, sd)} | {pub if pub is not None else '-'} | {diff} | {ok} |")
    lines += ["", "## effopt against fgd (same seeds, measured side by side)", "",
              "| trace | fgd x=100 | effopt x=100 | effopt / fgd | reduction | LP bound (mean, max) | target |",
              "|---|---|---|---|---|---|---|"]
    for trace, rep in report.items():
        f, e = rep["results"]["fgd"].stat(100), rep["results"]["effopt"].stat(100)
        ratio = e[0] / f[0]
        target = (f"≥ {TARGET_REDUCTION:.0%} fewer: {'met' if 1 - ratio >= TARGET_REDUCTION else '**not met**'}"
                  if trace == "default" else f"≤ fgd: {'met' if e[0] <= f[0] else '**not met**'}")
        lines.append(f"| {trace} | {fmt(*f)} | {fmt(*e)} | {ratio:.3f} | {1 - ratio:.1%} | "
                     f"{rep['bound'][0]:.2f}, {rep['bound'][1]:.2f} | {target} |")
    lines += ["", "Per seed, x = 100 (effopt − fgd, percentage points):", ""]
    for trace, rep in report.items():
        d = [e.at(100) - f.at(100) for e, f in zip(rep["results"]["effopt"].runs, rep["results"]["fgd"].runs,
                                                    strict=True)]
        lines.append(f"- {trace}: " + ", ".join(f"{v:+.2f}" for v in d) + f" (effopt lower on {sum(v < 0 for v in d)}"
                     f" of {len(d)} seeds)")
    lines += ["", "## Curve, fragmentation, failures, time", "",
              "Unallocated GPU % (mean over seeds) at requested load x; fragmentation ratio % (fragmented share "
              "of the free GPU under the trace's M) at x = 50 and 90, published in brackets; failed pods per run "
              "(to x = 130); seconds per run (one policy, one seed, to 130%, in a worker process).", "",
              "| trace | policy | x=90 | x=95 | x=100 | x=110 | x=120 | frag x=50 | frag x=90 | failed pods | s/run |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for trace, rep in report.items():
        for name in POLICIES:
            s = rep["results"][name]
            cells = [f"{s.stat(x)[0]:.2f}" for x in (90, 95, 100, 110, 120)]
            pf = PUBLISHED_FRAG.get(trace, {}).get(name)
            f50, f90 = s.stat(50, frag=True)[0], s.stat(90, frag=True)[0]
            fr = [f"{f50:.1f}" + (f" [{pf[0]:.1f}]" if pf else ""), f"{f90:.1f}" + (f" [{pf[1]:.1f}]" if pf else "")]
            lines.append(f"| {trace} | {name} | " + " | ".join(cells + fr)
                         + f" | {s.failed_pods:.0f} | {s.seconds:.1f} |")
    t = report.get("default")
    if t:
        worst = max(max(r.seconds for r in t["results"][n].runs) for n in POLICIES)
        lines += ["", f"Slowest single run on the default trace: {worst:.1f} s (target ≤ 60 s; the Go simulator "
                  "needs about 10 minutes for the same run on 2 vCPUs, by its authors' README)."]
    return "\n".join(lines) + "\n"


PROTOCOL_NOTES = """
## Protocol: what the published experiment does, what it leaves open, and what effopt.gpu chose

Read from the simulator's source (hkust-adsl/kubernetes-scheduler-simulator: `pkg/simulator`,
`pkg/simulator/plugin`, `pkg/utils/frag.go`, `pkg/type/resource.go`, `scripts/generate_config_and_run.py`,
`scripts/analysis.py`, `experiments/analysis/merge_*.py`) and its Kubernetes fork (mental2008/kubernetes,
`pkg/scheduler/core/generic_scheduler.go`).

* **Ties.** The fork's `selectHost` gives a tie to the node with the smallest name, and the simulator
  prefixes every node name with its index in a seeded random permutation. So ties go to a fixed random
  ranking of the nodes, not to a fresh random choice. This matters a lot: with uniformly random ties FGD
  leaves 10.3% unallocated at x = 100 (seed 42) instead of 5.0%, because the fixed ranking packs pods onto
  the first-ranked nodes (first fit) and keeps the others whole. effopt.gpu ranks nodes by a hash of their
  name salted from the seed (stable when a state is rebuilt from a live inventory); `ties="random"` is
  available. `random` draws a node uniformly (its plugin scores one random node 100).
* **Random numbers.** Go's math/rand stream (shuffle, resampling, node permutation) is not reproduced;
  numpy's generator seeded 42.. draws the permutation and the resampled pods, a second generator
  ([seed, 1]) the node ranking and random choices. Same seed, same arrivals for every policy.
* **Resampling.** The Go code stops when the next draw's *per-GPU* request would exceed 130%; effopt.gpu
  stops at the first draw whose *total* request would (so the requested GPU never exceeds 130%). Only the
  last draw or two differ; nothing below x = 129 changes.
* **x-axis and y.** After every arrival: requested GPU so far (failed pods included) and allocated GPU, in
  thousandths. The value at x is the mean over arrivals whose requested % rounds (half to even, as Python's
  `round`) to x, falling back to x ± 1 when none does, as `merge_alloc_discrete.py` does. The published
  table is 100 − that mean, averaged over seeds.
* **Scores.** Integer scores as the plugins compute them: best-fit `int((1 − ((cpu_free − cpu)/128000·0.5 +
  (gpu_free − gpu)/8000·0.5))·100)` (its min-max normalisation keeps the order and the ties, so it is
  skipped); dot-product with the "merge" GPU dimension and "max" normalisation, `int(100·(1 − dot/2))`;
  GPU packing and clustering with their integer arithmetic; FGD `int(100·sigmoid(ΔF/1000))`. GPU choice for
  sharing pods: tightest fit (best-fit, dot-product, packing, clustering), random (random), best FGD score,
  lowest index (fgd). Whole GPUs: the first fully free ones by index.
* **Filters.** CPU and memory (Kubernetes NodeResourcesFit), GPU model, GPU fit (one GPU with enough free
  thousandths for a sharing pod, k fully free GPUs for a k-GPU pod). No score looks at memory.
* **M.** Distinct (CPU, thousandths per GPU, GPU count, models) of the trace's pods, most frequent first
  (equal counts: larger CPU, then GPU, first, the simulator's sort order), kept until 95% of the pods,
  renormalised: 35 types on the default trace, CPU-only types included. It also measures the fragmentation
  ratio for every policy.
* **Left open / not modelled.** Kubernetes' non-zero default request (100 milli-CPU for a pod asking 0; no
  pod in these traces does); the pod-count limit (1001 per node, never reached); the simulator's pods with
  `num_gpu > 0, gpu_milli = 0` count as CPU-only there and are rejected as malformed here (none in the traces).

## effopt's rule and how it was found

(Numbers in this section were measured while developing effopt, with a scratch harness on the default
trace, seeds 42-47 unless noted; the tables above are what this script measured now.)

effopt keeps FGD's scoring machinery (integer `int(100·sigmoid(gain/1000))`, first-ranked node among equals:
that first-fit consolidation is worth more than any finer score; scoring the exact ΔF instead leaves 7.9%
unallocated on the default trace) and changes the gain:

1. **Stranded CPU.** At x = 100 FGD's free GPU was, on seed 42: 2.7 pp in 190-thousandth slivers next to
   810-thousandth pods (structural: only 105 of the trace's 3,078 sharing pods are small enough to fill
   them), 1.1 pp on nodes whose free CPU was below what any pod that fits the free GPU asks (stranded by
   CPU), 0.8 pp in slivers some pod could use, 0.2 pp whole GPUs, 0.1 pp tiny slivers, <0.1 pp stranded by
   memory. FGD sees CPU only one task ahead. effopt adds the change of `max(0, R − c/κ)` (R free thousandths
   of GPU, c free milli-CPU, κ the CPU per thousandth of GPU of the GPU pods seen so far): 4.19% on seeds
   42-51 (FGD 4.79, −12.6%), CPU-stranded GPU down to 0.3 pp; gpushare40 5.52, multigpu20 3.67. Weighting \
that term 0.5x or 2x changed nothing
   (4.21 / 4.18 on seeds 42-47), so it is added unweighted: both terms are thousandths of a GPU.
2. **Sliver prices.** The remaining gap above the packing LP's bound was mostly GPU-level combinatorics
   (pairs of 470s leave 60, a 160 put into the 350 a 650 leaves kills a 650+320 pairing ...). effopt solves
   the configuration LP for the mix of requests seen so far, scaled to the cluster (0.1 s cold, ~10 ms warm),
   and scores a sharing request on a GPU with h free by minus the dual-priced value it destroys,
   `V(h) − (s − π_s) − V(h − s)`, instead of FGD's ΔF: 3.79% on seeds 42-51 (−20.9%). Adding it to ΔF
   instead of replacing ΔF gave 4.05% (seeds 42-45).

Measured on the default trace (seeds 42-47 unless noted, scratch harness during development) and dropped:
memory-stranding term (4.17 vs 4.18: no effect), M weighted by GPU demand (4.18, but 4.03 vs 3.67 on
multigpu20), M kept to 95% of GPU demand (4.33), M at 100% coverage (4.18), expected stranding over the
distribution of CPU/GPU ratios instead of the mean (4.25, and earlier failures), stranding of usable GPU
only (4.47), node orders for ties (fewest GPUs first 4.16, most first 4.26, CPU-poor first 4.26, CPU-rich
first 4.26), within-bucket preference for used nodes (4.19), tightest GPU for sharing pods (4.18),
Sum-of-Squares GPU choice (5.72 as the main criterion, 4.18 as a tie-breaker), coarser or finer buckets
of the gain (width 20/50/100/200 thousandths: 4.16/4.18/4.19/4.25 on 4 seeds), offline first-fit-decreasing
with hindsight (5.1%: sorting hurts here). M and κ are learned online from the arrivals (effopt ignores
the trace's M after its first 16 arrivals); on these traces that matches using the trace's M (4.20 vs
4.15/4.18 on seeds 42/43 before step 2), as it should since arrivals are drawn from the trace.

**The LP bound.** Relax the cluster to its 6,212 GPUs (no CPU, memory or node boundaries, multi-GPU pods
split into whole GPUs, arrivals known in advance): the configuration LP's value is an upper bound on what
any packer allocates by x = 100, so `100 − value` is a lower bound on the unallocated GPU (the "LP bound"
column above; 3.1% on the default trace, so FGD is about 1.7 pp above it and effopt about 0.7 pp).
"""


if __name__ == "__main__":
    raise SystemExit(main())
