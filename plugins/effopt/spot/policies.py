"""Execution policies for a deadline job on spot capacity.

A job has ``work_h`` hours of work (C) to finish by ``deadline_h`` (D); every
launch, switch or move to another zone costs a changeover of
``changeover_h`` hours (d) during which the instance is paid for but makes no
progress; progress is checkpointed every ``checkpoint_h`` hours of work (k; 0 =
continuously), and a preemption loses the work since the last checkpoint.

Each tick a policy gets an :class:`Observation` (time, progress, what it runs,
spot availability per zone) and returns an :class:`Action`: spot in zone
``z``, on-demand, or wait.  Policies:

* ``on-demand``: on-demand from the start.
* ``greedy``: spot whenever some zone has it, otherwise wait, until the last
  safe moment (the safety net below), then on-demand to the end.
* ``uniform-progress``: Can't Be Late's rules (NSDI '24), as the paper's
  simulator applies them: use spot whenever it is available; when idle and
  behind the line ``t*C/D``, go on-demand, and stay on on-demand while spot is
  unavailable or progress is short of the line at ``t + 2d``; when the time
  left is below the work left + 2d (rounded to ticks), on-demand to the end.
  Several zones: spot is "available" when any zone has it; the policy keeps its
  zone while it has spot and otherwise takes the first zone that has it.
* ``effopt``: ours (:class:`EffoptPolicy`): it fits a semi-Markov model of
  spot availability (:func:`effopt.spot.risk.fit_availability_model`) to the
  availability observed before the job starts, plans the cost-optimal action
  for every (time left, slack, what runs, availability and its age) by dynamic
  programming (:mod:`effopt.spot.planner`, prices and changeovers included),
  and follows the plan, under the same safety net as the baselines.  Several
  zones: it takes the zone with the largest expected saving (price gap x
  expected remaining availability at the zone's current age).

Safety net (greedy, uniform-progress, effopt): with ``R`` = time left floored
to the tick and ``W`` = work left if the instance were lost now (work since
the last checkpoint counts as not done while on spot), go on-demand when
``ceil((W + 2d + k) / tick) * tick >= R`` (unless on spot); when
``ceil((W + d) / tick) * tick >= R`` keep a running spot instance whose
changeover is over, else go on-demand.  With ``k = 0`` (continuous
checkpoints) this is exactly the paper's rule.  With ``k > 0`` a spot attempt
may also lose up to ``k`` of work, hence the ``+ k``, and a spot instance
holding work since its last checkpoint is left for on-demand one tick before
the second point (a voluntary stop checkpoints, a preemption would lose the
work), so no deadline is missed when on-demand is always obtainable.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from effopt.spot.errors import SpotError

WAIT = "wait"
SPOT = "spot"
ON_DEMAND = "on-demand"
_EPS = 1e-9


@dataclass(frozen=True)
class Job:
    """C, D, d and k of one job, in hours."""

    work_h: float
    deadline_h: float
    changeover_h: float = 0.2
    checkpoint_h: float = 0.0

    def __post_init__(self) -> None:
        for name in ("work_h", "deadline_h", "changeover_h", "checkpoint_h"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise SpotError(f"job {name} = {v!r} must be a finite number of hours")
        if self.work_h <= 0:
            raise SpotError(f"job work_h = {self.work_h!r} must be positive")
        if self.changeover_h < 0:
            raise SpotError(f"job changeover_h (d) = {self.changeover_h!r} must not be negative")
        if self.checkpoint_h < 0:
            raise SpotError(f"job checkpoint_h (k) = {self.checkpoint_h!r} must not be negative")
        if self.deadline_h < self.work_h + self.changeover_h:
            raise SpotError(f"job deadline_h = {self.deadline_h:g} h is shorter than its work plus one changeover "
                            f"({self.work_h:g} h + {self.changeover_h:g} h): it cannot finish even on on-demand")

    def as_dict(self) -> dict[str, float]:
        return {"work_h": self.work_h, "deadline_h": self.deadline_h, "changeover_h": self.changeover_h,
                "checkpoint_h": self.checkpoint_h}


@dataclass(frozen=True)
class Action:
    kind: str  # SPOT, ON_DEMAND or WAIT
    zone: int | None = None

    def __str__(self) -> str:
        return f"spot@{self.zone}" if self.kind == SPOT else self.kind


WAIT_ACTION = Action(WAIT)
OD_ACTION = Action(ON_DEMAND)
_SPOT_ACTIONS = [Action(SPOT, z) for z in range(64)]


def spot_in(zone: int) -> Action:
    return _SPOT_ACTIONS[zone] if zone < len(_SPOT_ACTIONS) else Action(SPOT, zone)


class Observation:
    """What a policy sees at the start of a tick (the simulator reuses one object)."""

    __slots__ = ("t", "tick_h", "done", "committed", "kind", "zone", "overhead_left", "available", "preempted",
                 "launch_failed")

    def __init__(self, tick_h: float) -> None:
        self.t = 0.0  # hours since the job started
        self.tick_h = tick_h
        self.done = 0.0  # hours of work done (checkpointed or not)
        self.committed = 0.0  # hours of work saved by the last checkpoint
        self.kind = WAIT  # what runs now: SPOT, ON_DEMAND or WAIT (nothing)
        self.zone: int | None = None
        self.overhead_left = 0.0  # changeover still to pay on the running instance
        self.available: Sequence[bool] = ()  # spot obtainable now, per zone
        self.preempted = False  # the spot instance was lost at this tick
        self.launch_failed = False  # the last on-demand launch failed


@dataclass(frozen=True)
class Market:
    """Hourly prices: on-demand, and spot per zone (None where unpriced).

    ``assumed_spot_ratio``: where the prices are unknown, the spot/on-demand
    price ratio a policy may assume for its decisions (the simulator passes the
    catalog's median); costs stay unpriced.
    """

    on_demand: float | None
    spot: tuple[float | None, ...]
    assumed_spot_ratio: float | None = None

    @property
    def priced(self) -> bool:
        return self.on_demand is not None and all(p is not None for p in self.spot)

    def decision_prices(self) -> tuple[float, tuple[float, ...]] | None:
        """(on-demand, spot per zone) to weigh decisions with: the real prices, else the assumed ratio."""
        if self.priced:
            return float(self.on_demand), tuple(float(p) for p in self.spot)
        if self.assumed_spot_ratio is not None:
            return 1.0, tuple(self.assumed_spot_ratio for _ in self.spot)
        return None


class Policy(ABC):
    """``reset`` once per job, then ``decide`` every tick.

    ``history`` is the (zones x ticks) availability observed before the job
    starts (oldest first), ``od_failure`` the expected chance that an on-demand
    launch fails; policies may ignore both.
    """

    name = ""

    def reset(self, job: Job, zones: int, tick_h: float, market: Market | None = None,
              history: np.ndarray | None = None, od_failure: float = 0.0) -> None:
        self.job = job
        self.zones = zones
        self.tick_h = tick_h
        self.market = market

    @abstractmethod
    def decide(self, obs: Observation) -> Action:
        """What to run during the next tick, given what is observed now."""


def _work_at_risk(job: Job, obs: Observation) -> float:
    """Work left if the running instance were lost now."""
    return job.work_h - (obs.committed if obs.kind == SPOT else obs.done)


def safety_net(job: Job, obs: Observation, current: Action | None) -> Action | None:
    """The last-safe-moment rule shared by greedy and uniform-progress (see the module docstring)."""
    g = obs.tick_h
    d = job.changeover_h
    remaining = math.floor((job.deadline_h - obs.t) / g + _EPS) * g
    w = _work_at_risk(job, obs)
    at_risk = obs.done - obs.committed if obs.kind == SPOT else 0.0
    edge = math.ceil((w + d) / g - _EPS) * g
    if math.ceil((w + 2 * d + job.checkpoint_h) / g - _EPS) * g >= remaining - _EPS and obs.kind != SPOT:
        current = OD_ACTION
    if at_risk > _EPS and edge + g >= remaining - _EPS:
        current = OD_ACTION  # stop (and checkpoint) before a preemption could cost the deadline
    elif edge >= remaining - _EPS:
        if obs.kind == SPOT and obs.overhead_left < 1e-3 / 3600:
            current = spot_in(obs.zone)
        else:
            current = OD_ACTION
        if d == 0 and obs.kind != SPOT:
            z = _first_spot(obs)
            if z is not None:
                current = spot_in(z)
    return current


def _first_spot(obs: Observation) -> int | None:
    if obs.kind == SPOT and obs.zone is not None and obs.available[obs.zone]:
        return obs.zone
    for z, a in enumerate(obs.available):
        if a:
            return z
    return None


class OnDemandPolicy(Policy):
    name = "on-demand"

    def decide(self, obs: Observation) -> Action:
        return OD_ACTION


class GreedyPolicy(Policy):
    """Spot whenever some zone has it, else wait; on-demand to the end from the last safe moment."""

    name = "greedy"

    def decide(self, obs: Observation) -> Action:
        if obs.kind == ON_DEMAND:
            return OD_ACTION
        z = _first_spot(obs)
        act = spot_in(z) if z is not None else WAIT_ACTION
        return safety_net(self.job, obs, act)


class UniformProgressPolicy(Policy):
    """Can't Be Late's Uniform Progress with its hysteresis and safety net (module docstring)."""

    name = "uniform-progress"

    def decide(self, obs: Observation) -> Action:
        job = self.job
        c, dl, d = job.work_h, job.deadline_h, job.changeover_h
        z = _first_spot(obs)
        has_spot = z is not None
        act = spot_in(z) if has_spot else WAIT_ACTION
        if obs.done - obs.t * c / dl < 0:  # behind the line t*C/D
            act = spot_in(z) if has_spot else OD_ACTION
        if obs.kind == ON_DEMAND and (not has_spot or (obs.t + 2 * d) * c / dl - obs.done >= 0):
            act = OD_ACTION  # hysteresis: stay until progress reaches the line at t + 2d
        return safety_net(job, obs, act)


class EffoptPolicy(Policy):
    """Plan by dynamic programming on a semi-Markov availability model fitted to the history.

    * the model is fitted on the history up to its last whole ``refit_h``
      (a week by default; all of it when shorter), so jobs that start in the
      same week share one plan;
    * with less than ``min_history_h`` of history there is nothing to fit:
      it follows ``uniform-progress`` (and says so in :attr:`note`);
    * a job with more than ``max_plan_h`` hours of work left is planned as a
      job of ``max_plan_h`` with the same slack-to-work ratio;
    * the baselines' safety net overrides the plan, so that with on-demand
      always obtainable no deadline is missed.
    """

    name = "effopt"

    def __init__(self, min_history_h: float = 24.0, refit_h: float = 168.0, max_plan_h: float = 72.0) -> None:
        self.min_history_h = min_history_h
        self.refit_h = refit_h
        self.max_plan_h = max_plan_h
        self.note = ""

    def reset(self, job: Job, zones: int, tick_h: float, market: Market | None = None,
              history: np.ndarray | None = None, od_failure: float = 0.0) -> None:
        from effopt.spot import planner
        from effopt.spot.risk import fit_availability_model

        super().reset(job, zones, tick_h, market, history, od_failure)
        self.fallback: Policy | None = None
        self.ages = [0] * zones
        self.gap_age = 0
        prices = market.decision_prices() if market is not None else None
        hist = None if history is None else np.atleast_2d(np.asarray(history, dtype=bool))
        have_h = 0.0 if hist is None else hist.shape[1] * tick_h
        if prices is None or have_h < self.min_history_h:
            self.fallback = UniformProgressPolicy()
            self.fallback.reset(job, zones, tick_h, market, history, od_failure)
            self.note = ("no prices to weigh decisions with" if prices is None else
                         f"{have_h:.1f} h of availability history < {self.min_history_h:g} h") + \
                ": follows uniform-progress"
            return
        p_od, p_spot = prices
        refit = max(1, int(round(self.refit_h / tick_h)))
        n_fit = hist.shape[1] // refit * refit
        if n_fit * tick_h < self.min_history_h:
            n_fit = hist.shape[1]
        self.model = fit_availability_model(hist[:, :n_fit], tick_h, [p_od - p for p in p_spot])
        for z in range(zones):  # ages of what runs at the start, from the tail of the history
            col = hist[z]
            run = np.flatnonzero(~col[::-1])
            self.ages[z] = int(run[0]) if run.size else int(col.size)
        any_up = hist.any(axis=0)[::-1]
        up_at = np.flatnonzero(any_up)
        self.gap_age = int(up_at[0]) if up_at.size else int(any_up.size)
        self.plan_work = min(job.work_h, self.max_plan_h)
        plan_deadline = self.plan_work * job.deadline_h / job.work_h
        spot_price = float(np.median(p_spot))
        self.plan = planner.solve(self.plan_work, plan_deadline, job.changeover_h, job.checkpoint_h, tick_h, p_od,
                                  spot_price, self.model, od_failure)
        self.note = (f"plan from {n_fit * tick_h:.0f} h of history ({self.model.instance_runs} instance runs, "
                     f"{self.model.gaps} gaps)")

    def decide(self, obs: Observation) -> Action:
        from effopt.spot import planner
        from effopt.spot.risk import age_bucket

        avail = obs.available
        for z in range(self.zones):
            self.ages[z] = self.ages[z] + 1 if avail[z] else 0
        self.gap_age = 0 if any(avail) else self.gap_age + 1
        job = self.job
        guard = safety_net(job, obs, None)
        if guard is not None:
            return guard
        if self.fallback is not None:
            return self.fallback.decide(obs)
        nb = self.model.buckets
        if obs.kind == SPOT and obs.zone is not None and avail[obs.zone]:
            zone = obs.zone
        else:
            zone = self.model.pick(avail, self.ages)
        x = nb + age_bucket(self.ages[zone]) if zone is not None else age_bucket(max(1, self.gap_age))
        g = obs.tick_h
        w = job.work_h - obs.done  # a voluntary stop checkpoints; the plan prices what a preemption loses
        slack = math.floor((job.deadline_h - obs.t) / g + _EPS) * g - w
        if slack < 0:
            return OD_ACTION
        w_plan = min(w, self.plan_work)
        s_plan = slack * w_plan / w if w > self.plan_work else slack
        s_plan = min(s_plan, self.plan.slots * self.plan.step_h)
        r = int(round((w_plan + s_plan) / g))
        act = self.plan.action(r, s_plan, planner.MACHINE[obs.kind], x)
        if act == planner.SPOT_A and zone is not None:
            return spot_in(zone)
        if act == planner.OD_A:
            return OD_ACTION
        return WAIT_ACTION


POLICIES: dict[str, type[Policy]] = {
    OnDemandPolicy.name: OnDemandPolicy,
    GreedyPolicy.name: GreedyPolicy,
    UniformProgressPolicy.name: UniformProgressPolicy,
    EffoptPolicy.name: EffoptPolicy,
}


def get_policy(name: str) -> Policy:
    try:
        return POLICIES[name]()
    except KeyError:
        raise SpotError(f"unknown policy {name!r} (known: {', '.join(POLICIES)})") from None
