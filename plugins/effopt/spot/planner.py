"""The effopt plan: the cost-optimal action for every state of a job under an availability model.

Dynamic programming, backwards over the ticks left to the deadline ``r``,
on the state (``r``, slack ``s``, what runs ``m``, availability state ``x``):

* slack ``s = r * tick - work left`` (hours), on a grid of ``tick / q``;
  waiting costs one tick of slack, a changeover (launch, switch, move) costs
  ``d``, a preemption costs the work lost since the last checkpoint.  A spot
  run starts from a checkpoint (a preemption falls back to one, a voluntary
  stop writes one) and the next checkpoint is up to ``k`` of progress away, so
  with ``x`` hours of progress in the run the expected loss is
  ``x - x^2 / (2k)`` for ``x < k`` and ``k / 2`` beyond; ``x`` is taken as the
  run's age (the middle of its age bucket) less the changeover;
* ``m``: nothing, spot, on-demand;
* ``x``: the :class:`~effopt.spot.risk.AvailabilityModel` state (gap or
  availability, and its age bucket).

Each tick the plan pays the tick's price of what runs (spot or on-demand;
the last tick only until the work is done).  An on-demand launch fails with
probability ``od_failure`` (then the tick is spent waiting).  A state whose
slack would go negative is a deadline miss, priced at :data:`MISS_COST`
(effectively forbidden).  The value of a state is the expected cost to the
end; the plan stores, per state, the action that minimises it.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from effopt.spot.risk import AvailabilityModel

WAIT_A, SPOT_A, OD_A = 0, 1, 2
MACHINE = {"wait": 0, "spot": 1, "on-demand": 2}
MISS_COST = 1e12
_CACHE: OrderedDict[tuple, Plan] = OrderedDict()
_CACHE_SIZE = 8


@dataclass(frozen=True)
class Plan:
    work_h: float
    deadline_h: float
    tick_h: float
    step_h: float  # slack grid step
    ticks: int  # R0: ticks from the start to the deadline (floored)
    slots: int  # J: slack grid points - 1
    actions: np.ndarray  # int8 [r, m, j, x]
    start_value: float  # expected cost from the start (idle, gap) with the model

    def action(self, r: int, slack_h: float, machine: int, x: int) -> int:
        r = min(max(r, 0), self.ticks)
        j = min(max(int(math.floor(slack_h / self.step_h + 1e-9)), 0), self.slots)
        return int(self.actions[r, machine, j, x])


def _run(price: float, nxt: np.ndarray, w: np.ndarray, extra_h: float, h: float, g: float) -> np.ndarray:
    """Run one tick with ``w + extra_h`` work left: pay until done (at most the tick), then ``nxt``."""
    wl = (w + extra_h)[:, None]
    return price * np.clip(wl, 0.0, g) + np.where(wl <= g + 1e-9, 0.0, nxt)


def expected_loss_h(progress_h: float, checkpoint_h: float) -> float:
    """Expected work lost at a preemption after ``progress_h`` of progress since the run's checkpoint."""
    if checkpoint_h <= 0 or progress_h <= 0:
        return 0.0
    if progress_h >= checkpoint_h:
        return checkpoint_h / 2
    return progress_h - progress_h * progress_h / (2 * checkpoint_h)


def _loss_shifts(model: AvailabilityModel, g: float, d: float, k: float, h: float) -> list[tuple[int, np.ndarray]]:
    """Slack-grid shift of the expected loss per source state, grouped: [(shift, state indices)]."""
    from effopt.spot.risk import AGE_EDGES

    nb = model.buckets
    shifts = np.zeros(2 * nb, dtype=np.int64)
    for b in range(nb):
        lo = AGE_EDGES[b]
        age = (lo + AGE_EDGES[b + 1] - 1) / 2 if b + 1 < nb else float(lo)
        shifts[nb + b] = int(round(expected_loss_h(age * g - d, k) / h)) if b + 1 < nb else \
            int(round((k / 2 if k > 0 else 0.0) / h))
    return [(int(n), np.flatnonzero(shifts == n)) for n in np.unique(shifts)]


def grid_factor(tick_h: float, changeover_h: float) -> int:
    """Slack grid ``tick / q``: fine enough that a changeover spans about two grid steps (1 <= q <= 8)."""
    if changeover_h <= 0:
        return 1
    return max(1, min(8, math.ceil(2 * tick_h / changeover_h)))


def solve(work_h: float, deadline_h: float, changeover_h: float, checkpoint_h: float, tick_h: float,
          on_demand: float, spot: float, model: AvailabilityModel, od_failure: float = 0.0) -> Plan:
    """The plan for one job shape under ``model`` (cached: the same inputs give the same plan object)."""
    key = (work_h, deadline_h, changeover_h, checkpoint_h, tick_h, on_demand, spot, model.fingerprint(), od_failure)
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    plan = _solve(work_h, deadline_h, changeover_h, checkpoint_h, tick_h, on_demand, spot, model, od_failure)
    _CACHE[key] = plan
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return plan


def _solve(c: float, dl: float, d: float, k: float, g: float, p_od: float, p_s: float, model: AvailabilityModel,
           f: float) -> Plan:
    q = grid_factor(g, d)
    h = g / q
    r0 = int(math.floor(dl / g + 1e-9))
    s0 = r0 * g - c
    if s0 < 0:
        s0 = 0.0
    slots = int(math.floor(s0 / h + 1e-9))
    s = np.arange(slots + 1) * h
    jd = int(round(d / h))
    loss_shift = _loss_shifts(model, g, d, k, h)
    endgame = s < 2 * d + k + g - 1e-9  # the policies' safety net allows no new spot launch and no wait here
    cont, end = model.matrices()
    full_t, cont_t, end_t = (cont + end).T, cont.T, end.T
    nb = model.buckets
    x_n = 2 * nb
    up = np.zeros(x_n, dtype=bool)
    up[nb:] = True
    v_idle = np.zeros((slots + 1, x_n))
    v_spot = np.zeros((slots + 1, x_n))
    v_od = np.zeros((slots + 1, x_n))
    actions = np.empty((r0 + 1, 3, slots + 1, x_n), dtype=np.int8)
    actions[0] = WAIT_A

    def shift(a: np.ndarray, n: int) -> np.ndarray:
        if n == 0:
            return a
        out = np.full_like(a, MISS_COST)
        if n <= slots:
            out[n:] = a[: slots + 1 - n]
        return out

    for r in range(1, r0 + 1):
        e_wait = shift(v_idle, q) @ full_t
        e_spot = v_spot @ cont_t  # the instance is lost when its zone drops, with the work since its checkpoint
        for n, cols in loss_shift:
            e_spot[:, cols] += shift(v_idle, n) @ end_t[:, cols]
        e_od = v_od @ full_t
        e_spot_new, e_od_new = shift(e_spot, jd), shift(e_od, jd)
        w = r * g - s  # work left per slack point
        if r * g - s0 > g + jd * h + 1e-9:  # no state can finish during this tick
            spot_keep, spot_new = e_spot + p_s * g, e_spot_new + p_s * g
            od_keep, od_new = e_od + p_od * g, e_od_new + p_od * g
        else:
            spot_keep, spot_new = _run(p_s, e_spot, w, 0, h, g), _run(p_s, e_spot_new, w, jd * h, h, g)
            od_keep, od_new = _run(p_od, e_od, w, 0, h, g), _run(p_od, e_od_new, w, jd * h, h, g)
            finished = (w <= 1e-9)[:, None]
            e_wait = np.where(finished, 0.0, e_wait)
        if f > 0:
            od_new = (1.0 - f) * od_new + f * e_wait
        spot_keep[:, ~up] = MISS_COST
        spot_new[:, ~up] = MISS_COST
        spot_new[endgame] = MISS_COST  # the safety net's last safe moment: on-demand only from here
        e_wait = np.where(endgame[:, None], MISS_COST, e_wait)
        values = []
        for m, (sp, od) in enumerate(((spot_new, od_new), (spot_keep, od_new), (spot_new, od_keep))):
            best = np.minimum(e_wait, sp)
            act = (sp < e_wait).astype(np.int8)
            better = od < best
            act[better] = OD_A
            values.append(np.where(better, od, best))
            actions[r, m] = act
        v_idle, v_spot, v_od = values
    return Plan(c, dl, g, h, r0, slots, actions, float(v_idle[slots, 0]))
