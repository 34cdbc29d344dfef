"""Replay spot availability traces and price what each policy would have paid.

The replay (:func:`simulate_job`) steps at the trace's tick ``g``.  At the
start of tick ``i``:

1. a spot instance in a zone whose trace shows no spot at ``i`` is preempted:
   the work since the last checkpoint is lost (``lost_work_h``) and nothing
   runs;
2. the policy sees an :class:`~effopt.spot.policies.Observation` and returns
   an action; a change of what runs (wait -> launch, spot <-> on-demand, a
   move to another zone) is a changeover: the new instance pays ``d`` hours
   before it makes progress.  A voluntary stop checkpoints first (nothing is
   lost); an on-demand launch fails with probability ``od_failure`` (seeded),
   and then nothing runs for this tick;
3. the running instance is paid for the tick (per second, so the last tick
   only until the work is done) and makes ``g`` minus the changeover still
   due hours of progress; checkpoints fall every ``k`` hours of progress
   (``k = 0``: continuously).

A job that reaches its deadline unfinished is a deadline miss; the simulator
then runs it on on-demand to the end so that its cost stays comparable.
Spot is unavailable after the end of the trace (or, with ``cyclic=True``, the
trace starts over).  Costs are compared side by side against ``on-demand`` on
the same job (the same start and seed).

Policies see, as history, the availability of every zone before the job's
start (the record a deployment keeps of its own launches); start offsets are
drawn after a warm-up (:func:`warmup_ticks`: a week, or a quarter of a shorter
trace) so that every job has some.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from effopt.spot.catalog import PriceCatalog
from effopt.spot.errors import SpotError
from effopt.spot.policies import (
    ON_DEMAND,
    SPOT,
    WAIT,
    Action,
    Job,
    Market,
    Observation,
    Policy,
)
from effopt.spot.traces import TraceGroup

_EPS = 1e-9


@dataclass
class JobResult:
    """One job under one policy; hours and USD (``cost`` None when unpriced)."""

    policy: str
    start_tick: int
    finished: bool
    finish_h: float
    missed: bool
    cost: float | None
    spot_h: float = 0.0  # paid spot hours (changeovers included)
    on_demand_h: float = 0.0  # paid on-demand hours (changeovers included)
    overhead_h: float = 0.0  # paid hours spent in changeovers
    lost_work_h: float = 0.0  # progress discarded by preemptions
    changeovers: int = 0
    preemptions: int = 0
    failed_launches: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def _seed(*parts: object) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode())


def simulate_job(policy: Policy, job: Job, available: np.ndarray, start: int, tick_h: float, *,
                 market: Market | None = None, od_failure: float = 0.0, seed: int = 0, cyclic: bool = False,
                 trace: Callable[[int, Observation, Action], None] | None = None) -> JobResult:
    """Replay one job from tick ``start`` of ``available`` (zones x ticks, bool); see the module docstring.

    Each tick: preempt a spot instance whose zone has no spot, let the policy decide, switch to what it
    decided (a changeover, or a failed on-demand launch), then run the instance for the tick.
    """
    avail = np.asarray(available, dtype=bool)
    if avail.ndim == 1:
        avail = avail[None, :]
    zones, ticks = avail.shape
    if not 0 <= start < ticks:
        raise SpotError(f"start tick {start} outside the trace (0..{ticks - 1})")
    if not 0.0 <= od_failure < 1.0:
        raise SpotError(f"od_failure = {od_failure!r} must be in [0, 1)")
    market = market or Market(None, (None,) * zones)
    policy.reset(job, zones, tick_h, market, history=avail[:, :start], od_failure=od_failure)
    rng = random.Random(seed)  # ok: seeded on-demand launch failures of the documented replay
    cols, ticks = _columns_from(avail, start, job, tick_h, cyclic)
    n_cols = len(cols)
    none_avail = [False] * zones
    c, dl, d, k = job.work_h, job.deadline_h, job.changeover_h, job.checkpoint_h
    g = tick_h
    obs = Observation(g)
    res = JobResult(policy.name, start, False, math.inf, False, None)
    run = _Running()
    spot_cost_h = [0.0] * zones
    i = 0
    max_ticks = int(math.ceil((dl + c + (d + k) * 4) / g)) + ticks  # a hard stop far past any sane finish
    while run.done < c - _EPS:
        if i > max_ticks:
            raise SpotError(f"policy {policy.name} did not finish the job within {max_ticks} ticks")
        t = i * g
        a = cols[i] if i < n_cols else none_avail
        obs.preempted = False
        if run.kind == SPOT and not a[run.zone]:
            _preempt(run, res)
            obs.preempted = True
        obs.t, obs.done, obs.committed, obs.kind, obs.zone = t, run.done, run.committed, run.kind, run.zone
        obs.overhead_left, obs.available = run.overhead, a
        if t >= dl - _EPS:
            act = Action(ON_DEMAND)  # late: finish on on-demand (the miss is recorded below)
        else:
            act = policy.decide(obs)
        if trace is not None:
            trace(i, obs, act)
        obs.launch_failed = False
        if act.kind == SPOT:
            _check_spot_zone(policy.name, act, a, zones, i)
        if act.kind != run.kind or (act.kind == SPOT and act.zone != run.zone):
            obs.launch_failed = _switch(run, act, d, od_failure, rng, res)
        if run.kind != WAIT:
            _run_tick(run, t, g, c, k, res, spot_cost_h)
        i += 1
    res.missed = res.finish_h > dl + _EPS
    res.cost = _job_cost(market, res, spot_cost_h)
    return res


@dataclass(slots=True)
class _Running:
    """What runs during a replay (wait, spot or on-demand; the spot zone; changeover hours still due) and the
    job's progress (``done``; ``committed``: up to the last checkpoint)."""

    kind: str = WAIT
    zone: int | None = None
    overhead: float = 0.0
    done: float = 0.0
    committed: float = 0.0


def _columns_from(avail: np.ndarray, start: int, job: Job, tick_h: float, cyclic: bool
                  ) -> tuple[list[list[bool]], int]:
    """(per tick from ``start``, the per-zone availability; the trace's ticks), the trace repeated enough
    times to cover the job's window when ``cyclic``."""
    ticks = avail.shape[1]
    window = int(math.ceil((job.deadline_h + job.work_h) / tick_h)) + 2
    if cyclic and start + window > ticks:
        reps = int(math.ceil((start + window) / ticks))
        avail = np.tile(avail, (1, reps))
        ticks = avail.shape[1]
    return avail[:, start:].T.tolist(), ticks


def _preempt(run: _Running, res: JobResult) -> None:
    """Preempt the spot instance (its zone has no spot now): the work since the last checkpoint is lost."""
    res.preemptions += 1
    res.lost_work_h += run.done - run.committed
    run.done = run.committed
    run.kind, run.zone, run.overhead = WAIT, None, 0.0


def _check_spot_zone(policy: str, act: Action, a: Sequence[bool], zones: int, i: int) -> None:
    """A spot action must name a zone that has spot at tick ``i``."""
    if act.zone is None or not 0 <= act.zone < zones or not a[act.zone]:
        raise SpotError(f"policy {policy} asked for spot in zone {act.zone} at tick {i}, where the trace has none")


def _switch(run: _Running, act: Action, d: float, od_failure: float, rng: random.Random, res: JobResult) -> bool:
    """Switch to what ``act`` asks for (it differs from what runs): a voluntary stop checkpoints first, a
    launch is a changeover of ``d`` hours; an on-demand launch fails with probability ``od_failure``.
    Returns whether the launch failed."""
    if run.kind != WAIT:
        run.committed = run.done  # a voluntary stop checkpoints first
    run.kind, run.zone, run.overhead = WAIT, None, 0.0
    if act.kind == ON_DEMAND and od_failure > 0 and rng.random() < od_failure:  # ok: seeded launch failure
        res.failed_launches += 1
        return True
    if act.kind != WAIT:
        run.kind, run.zone, run.overhead = act.kind, act.zone, d
        res.changeovers += 1
    return False


def _run_tick(run: _Running, t: float, g: float, c: float, k: float, res: JobResult,
              spot_cost_h: list[float]) -> None:
    """Run the instance for one tick: pay it (only until the work is done), pay the changeover still due
    first, progress with the rest, checkpoint every ``k`` hours of progress (``k = 0``: continuously)."""
    done = run.done
    over = min(run.overhead, g)
    work = g - over
    if work > c - done:
        paid = over + (c - done)
        work = c - done
    else:
        paid = g
    run.overhead -= over
    done += work
    run.done = done
    finished = done >= c - _EPS
    run.committed = done if k <= 0 or finished else max(run.committed, math.floor(done / k + _EPS) * k)
    res.overhead_h += over
    if run.kind == SPOT:
        res.spot_h += paid
        spot_cost_h[run.zone] += paid
    else:
        res.on_demand_h += paid
    if finished:
        res.finished = True
        res.finish_h = t + paid


def _job_cost(market: Market, res: JobResult, spot_cost_h: list[float]) -> float | None:
    """USD paid: on-demand and spot hours at the market's prices; None when a price used is unknown."""
    if market.on_demand is not None and all(market.spot[z] is not None or spot_cost_h[z] == 0
                                            for z in range(len(spot_cost_h))):
        return res.on_demand_h * market.on_demand + sum(h * market.spot[z] for z, h in enumerate(spot_cost_h) if h)
    return None


# -- settings ----------------------------------------------------------------------------------------------
#: The benchmark's standard job shapes: C = 48 h with the tight and loose deadlines of Can't Be Late.
STANDARD_WORK_H = 48.0
STANDARD_DEADLINES_H = (52.0, 70.0)
STANDARD_CHANGEOVERS_H = (0.05, 0.2)
WARMUP_H = 168.0


@dataclass(frozen=True)
class Setting:
    """One benchmark cell: zones of one trace group, a job shape, the on-demand launch-failure rate."""

    group: str  # TraceGroup.label, e.g. "aws-02-15-2023/v100_1"
    zones: tuple[str, ...]
    job: Job
    od_failure: float = 0.0

    @property
    def multi_zone(self) -> bool:
        return len(self.zones) > 1

    @property
    def label(self) -> str:
        z = ",".join(self.zones) if len(self.zones) <= 2 else f"{len(self.zones)} zones"
        fail = f" fail={self.od_failure:g}" if self.od_failure else ""
        return (f"{self.group} {z} C={self.job.work_h:g} D={self.job.deadline_h:g} d={self.job.changeover_h:g}"
                f"{fail}")


def warmup_ticks(ticks: int, tick_h: float, span: int) -> int:
    """History every job gets before its start: a week, or a quarter of a trace too short for that."""
    week = int(round(WARMUP_H / tick_h))
    if ticks - span >= week + max(1, span // 2):
        return week
    return max(0, min(ticks // 4, ticks - span))


def start_offsets(ticks: int, job: Job, tick_h: float, n: int, seed: int) -> list[int]:
    """``n`` seeded start ticks after the warm-up, such that [start, start + D] lies in the trace."""
    span = int(math.ceil(job.deadline_h / tick_h))
    last = ticks - span
    if last < 0:
        raise SpotError(f"trace of {ticks} ticks ({ticks * tick_h:.1f} h) is shorter than the deadline "
                        f"{job.deadline_h:g} h")
    first = warmup_ticks(ticks, tick_h, span)
    rng = np.random.default_rng(seed)  # ok: seeded start offsets of the documented protocol
    return sorted(int(x) for x in rng.integers(first, last + 1, size=n))


@dataclass
class PolicySummary:
    policy: str
    jobs: int
    cost: float | None  # summed over jobs; None when unpriced
    cost_vs_on_demand: float | None  # mean over jobs of cost / on-demand-only cost of the same job
    deadline_misses: int
    lost_work_h: float
    changeovers: int
    preemptions: int
    spot_h: float
    on_demand_h: float
    overhead_h: float
    failed_launches: int

    def as_dict(self) -> dict[str, Any]:
        return {"cost_vs_on_demand": _r(self.cost_vs_on_demand), "deadline_misses": self.deadline_misses,
                "jobs": self.jobs, "lost_work_h": _r(self.lost_work_h), "changeovers": self.changeovers,
                "cost_usd": _r(self.cost, 2), "preemptions": self.preemptions, "spot_h": _r(self.spot_h, 3),
                "on_demand_h": _r(self.on_demand_h, 3), "overhead_h": _r(self.overhead_h, 3),
                "failed_launches": self.failed_launches}


def _r(v: float | None, nd: int = 6) -> float | None:
    if v is None or not math.isfinite(v):
        return None
    return round(v, nd)


def summarize(name: str, results: Sequence[JobResult], baseline: Sequence[JobResult]) -> PolicySummary:
    priced = all(r.cost is not None for r in results) and all(b.cost for b in baseline)
    return PolicySummary(
        name, len(results), sum(r.cost for r in results) if priced else None,
        float(np.mean([r.cost / b.cost for r, b in zip(results, baseline, strict=True)])) if priced else None,
        sum(r.missed for r in results), sum(r.lost_work_h for r in results), sum(r.changeovers for r in results),
        sum(r.preemptions for r in results), sum(r.spot_h for r in results), sum(r.on_demand_h for r in results),
        sum(r.overhead_h for r in results), sum(r.failed_launches for r in results))


@dataclass
class SettingResult:
    setting: Setting
    prices: Mapping[str, Any]
    starts: list[int]
    summaries: dict[str, PolicySummary]
    jobs: dict[str, list[JobResult]] = field(repr=False, default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def priced(self) -> bool:
        return bool(self.prices.get("priced"))

    def as_dict(self) -> dict[str, Any]:
        s = self.setting
        return {"label": s.label, "group": s.group, "zones": list(s.zones), "multi_zone": s.multi_zone,
                **s.job.as_dict(), "od_failure": s.od_failure, "jobs": len(self.starts), "priced": self.priced,
                "prices": dict(self.prices), "policies": {n: p.as_dict() for n, p in self.summaries.items()},
                "notes": list(self.notes)}


PolicyFactory = Callable[[], Policy]


def run_setting(setting: Setting, available: np.ndarray, tick_h: float, policies: Mapping[str, PolicyFactory], *,
                market: Market, prices: Mapping[str, Any], n_starts: int = 30, seed: int = 0,
                starts: Sequence[int] | None = None, keep_jobs: bool = False,
                progress: Callable[[int, int], None] | None = None) -> SettingResult:
    """Every policy on the same seeded start offsets; ``on-demand`` always runs too, as the baseline."""
    if n_starts < 1:
        raise SpotError(f"starts = {n_starts} must be >= 1")
    if starts is None:
        starts = start_offsets(available.shape[-1], setting.job, tick_h, n_starts, _seed(seed, setting.label))
    from effopt.spot.policies import OnDemandPolicy

    runs: dict[str, PolicyFactory] = {"on-demand": OnDemandPolicy, **policies}
    results: dict[str, list[JobResult]] = {n: [] for n in runs}
    notes: set[str] = set()
    total, step = len(starts) * len(runs), 0
    for j, s in enumerate(starts):
        for name, make in runs.items():
            policy = make()
            results[name].append(simulate_job(policy, setting.job, available, s, tick_h, market=market,
                                              od_failure=setting.od_failure, seed=_seed(seed, setting.label, j, name)))
            if getattr(policy, "note", "").endswith("follows uniform-progress"):
                notes.add(f"{name}: {policy.note}")
            step += 1
            if progress is not None:
                progress(step, total)
    base = results["on-demand"]
    order = ["on-demand", *[n for n in policies if n != "on-demand"]]
    summaries = {n: summarize(n, results[n], base) for n in order}
    return SettingResult(setting, prices, list(starts), summaries, results if keep_jobs else {}, sorted(notes))


# -- prices for trace groups -------------------------------------------------------------------------------
def instance_type_for(catalog: PriceCatalog, accelerator: str | None, count: int | None) -> str | None:
    """The cheapest on-demand type with exactly ``count`` GPUs of the trace's accelerator (None if none)."""
    if not accelerator or not count:
        return None
    types = catalog.types_with_gpu(accelerator, count)
    return types[0] if types else None


def price_group(catalog: PriceCatalog, group: TraceGroup, zones: Sequence[str], *,
                overrides: Mapping[str, Any] | None = None, zone_map: Mapping[str, str] | None = None
                ) -> tuple[Market, dict[str, Any]]:
    """Prices for replaying ``zones`` of ``group`` and a report of which prices were used.

    Trace zones are zone NAMES; without ``zone_map`` (name -> AZ ID) a zone is
    priced at its region's median spot price over the region's AZ IDs, or the
    instance type's median over the catalog when the region is absent.
    ``overrides`` (``--prices``) maps ``<accelerator>_<count>`` (``k80_1``) or
    an instance type to ``{"instance_type"?, "on_demand", "spot"}`` (``spot``
    a number or ``{zone: number}``).
    """
    key = f"{group.accelerator}_{group.accelerator_count}"
    traces = {t.zone: t for t in group.traces}
    ratio = catalog.median_spot_ratio() if hasattr(catalog, "median_spot_ratio") else None
    itype = instance_type_for(catalog, group.accelerator, group.accelerator_count)
    over = None
    if overrides:
        over = overrides.get(key) or (overrides.get(itype) if itype else None)
    if over is not None:
        od = over.get("on_demand")
        sp = over.get("spot")
        spots = [sp.get(z) if isinstance(sp, Mapping) else sp for z in zones]
        bad = [v for v in [od, *spots] if v is None or isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0]
        if bad:
            raise SpotError(f"--prices entry {key!r}: on_demand and spot (for zones {', '.join(zones)}) must be "
                            "positive numbers")
        report = {"priced": True, "instance_type": over.get("instance_type", itype), "source": "--prices",
                  "on_demand": float(od), "spot": {z: float(v) for z, v in zip(zones, spots, strict=True)},
                  "method": f"given by --prices for {key}"}
        return Market(float(od), tuple(float(v) for v in spots)), report
    if itype is None:
        note = (f"unpriced: the catalog has no instance type with {group.accelerator_count} x "
                f"{group.accelerator} (give --prices)" if group.accelerator else
                "unpriced: the trace file name names no accelerator (give --prices)")
        return (Market(None, (None,) * len(zones), assumed_spot_ratio=ratio),
                {"priced": False, "instance_type": None, "note": note, "assumed_spot_ratio_for_decisions": ratio})
    spots: dict[str, float | None] = {}
    methods: dict[str, str] = {}
    od_quotes = []
    for z in zones:
        region = traces[z].region
        az = (zone_map or {}).get(z)
        if az and region:
            q = catalog.spot(itype, region, az)
            methods[z] = f"{region}/{az} (zone map)"
        elif region and region in catalog.regions(itype):
            q = catalog.spot_median(itype, region)
            methods[z] = f"median over {region}'s AZ IDs"
        else:
            q = catalog.spot_median(itype)
            methods[z] = f"{itype}'s median over the catalog (region {region or '?'} absent)"
        spots[z] = q.usd_per_hour
        odq = catalog.on_demand(itype, region) if region and region in catalog.regions(itype) else None
        od_quotes.append(odq.usd_per_hour if odq and odq.usd_per_hour is not None else None)
    od_known = [v for v in od_quotes if v is not None]
    od = float(np.median(od_known)) if od_known else catalog.on_demand_median(itype).usd_per_hour
    priced = od is not None and all(v is not None for v in spots.values())
    report = {"priced": priced, "instance_type": itype, "source": catalog.source, "on_demand": od, "spot": spots,
              "method": methods}
    if not priced:
        missing = [z for z, v in spots.items() if v is None]
        report["note"] = f"unpriced: no spot price for {itype} for zone(s) {', '.join(missing)}"
        report["assumed_spot_ratio_for_decisions"] = ratio
        return Market(None, (None,) * len(zones), assumed_spot_ratio=ratio), report
    return Market(od, tuple(spots[z] for z in zones)), report


def standard_settings(groups: Sequence[TraceGroup], *, work_h: float = STANDARD_WORK_H,
                      deadlines_h: Sequence[float] = STANDARD_DEADLINES_H,
                      changeovers_h: Sequence[float] = STANDARD_CHANGEOVERS_H, checkpoint_h: float = 0.0,
                      od_failure: float = 0.0, zones: Sequence[str] | None = None,
                      single: bool = True, multi: bool = True) -> list[tuple[TraceGroup, Setting]]:
    """Each zone alone and all of a group's zones together, for every deadline and changeover."""
    out = []
    for g in groups:
        names = [z for z in g.zones if not zones or z in zones]
        sets: list[tuple[str, ...]] = [(z,) for z in names] if single else []
        if multi and len(names) > 1:
            sets.append(tuple(names))
        for zs in sets:
            for dl in deadlines_h:
                for d in changeovers_h:
                    out.append((g, Setting(g.label, zs, Job(work_h, dl, d, checkpoint_h), od_failure)))
    return out


@dataclass
class Simulation:
    settings: list[SettingResult]
    skipped: list[dict[str, str]]

    def policy_totals(self, names: Sequence[str], where: Callable[[SettingResult], bool] | None = None
                      ) -> dict[str, dict[str, Any]]:
        """Over all (selected) settings: mean cost ratio over the priced ones, summed misses and counts."""
        chosen = [s for s in self.settings if where is None or where(s)]
        out = {}
        for n in names:
            rows = [s.summaries[n] for s in chosen if n in s.summaries]
            ratios = [r.cost_vs_on_demand for r in rows if r.cost_vs_on_demand is not None]
            out[n] = {"cost_vs_on_demand": _r(float(np.mean(ratios))) if ratios else None,
                      "deadline_misses": sum(r.deadline_misses for r in rows), "jobs": sum(r.jobs for r in rows),
                      "lost_work_h": _r(sum(r.lost_work_h for r in rows), 3),
                      "changeovers": sum(r.changeovers for r in rows), "priced_settings": len(ratios),
                      "settings": len(rows)}
        return out

    def as_dict(self, names: Sequence[str]) -> dict[str, Any]:
        return {"settings": [s.as_dict() for s in self.settings], "policies": self.policy_totals(names),
                "skipped": list(self.skipped)}


def simulate(groups: Sequence[TraceGroup], policies: Mapping[str, PolicyFactory], catalog: PriceCatalog, *,
             settings: Sequence[tuple[TraceGroup, Setting]] | None = None, n_starts: int = 30, seed: int = 0,
             nodes: int = 1, overrides: Mapping[str, Any] | None = None, zone_map: Mapping[str, str] | None = None,
             progress: Callable[[int, int], None] | None = None) -> Simulation:
    """Run ``policies`` on every setting (default: :func:`standard_settings`)."""
    cells = list(settings) if settings is not None else standard_settings(groups)
    results, skipped = [], []
    total = len(cells)
    for i, (g, st) in enumerate(cells):
        avail = g.matrix(nodes, st.zones)
        span = int(math.ceil(st.job.deadline_h / g.tick_h))
        if avail.shape[1] < span:
            skipped.append({"label": st.label, "reason": f"trace of {avail.shape[1] * g.tick_h:.1f} h is shorter "
                                                          f"than the deadline {st.job.deadline_h:g} h"})
            continue
        market, report = price_group(catalog, g, st.zones, overrides=overrides, zone_map=zone_map)
        results.append(run_setting(st, avail, g.tick_h, policies, market=market, prices=report, n_starts=n_starts,
                                   seed=seed))
        if progress is not None:
            progress(i + 1, total)
    return Simulation(results, skipped)
