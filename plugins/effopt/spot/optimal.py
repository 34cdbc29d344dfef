"""A lower bound on what any policy can pay: the offline optimum over the known trace.

Dynamic programming over the job's window with the future availability
*known* (no online policy can do better), on the state (tick, slack on a grid
of ``tick / 4``, what runs).  The bound is made optimistic wherever the
discretisation needs a choice, so that it stays a lower bound of the
simulator's cost for every policy that meets the deadline:

* the changeover is rounded *down* to the grid, the start slack and a partial last tick *up*;
* with several zones, spot counts as available when any zone has it and
  moving between zones is free (only a change of capacity type pays ``d``);
* work lost at preemptions is ignored (the policy is clairvoyant: it never
  holds uncheckpointed work into a preemption it can see coming).
"""

from __future__ import annotations

import math

import numpy as np

_BIG = 1e18


def offline_optimum(available: np.ndarray, work_h: float, deadline_h: float, changeover_h: float, tick_h: float,
                    on_demand: float, spot: float, q: int = 4) -> float:
    """Least cost to finish ``work_h`` by ``deadline_h`` given the window's availability (zones x ticks or ticks)."""
    a = np.asarray(available, dtype=bool)
    if a.ndim == 2:
        a = a.any(axis=0)
    g = tick_h
    h = g / q
    r0 = int(math.ceil(deadline_h / g - 1e-9))  # a partial last tick counts whole (optimistic)
    if deadline_h < work_h:
        return math.inf
    s0 = r0 * g - work_h
    slots = int(math.ceil(s0 / h - 1e-9))
    s = np.arange(slots + 1) * h
    jd = int(math.floor(changeover_h / h + 1e-9))

    def shift(v: np.ndarray, n: int) -> np.ndarray:
        if n == 0:
            return v
        out = np.full_like(v, _BIG)
        if n <= slots:
            out[n:] = v[: slots + 1 - n]
        return out

    v_idle = np.zeros(slots + 1)  # at the deadline every state with no work left costs nothing
    v_spot = np.zeros(slots + 1)
    v_od = np.zeros(slots + 1)
    for i in range(r0 - 1, -1, -1):
        w = (r0 - i) * g - s
        up = bool(a[i]) if i < a.size else False
        wait = shift(v_idle, q)
        tail = (r0 - i) * g - s0 <= g + jd * h + 1e-9  # some state may finish during this tick
        od_keep = _pay(on_demand, w, 0.0, g, v_od, tail)
        od_new = _pay(on_demand, w, jd * h, g, shift(v_od, jd), tail)
        if up:
            spot_keep = _pay(spot, w, 0.0, g, v_spot, tail)
            spot_new = _pay(spot, w, jd * h, g, shift(v_spot, jd), tail)
            n_idle = np.minimum(np.minimum(wait, spot_new), od_new)
            n_spot = np.minimum(np.minimum(wait, spot_keep), od_new)
            n_od = np.minimum(np.minimum(wait, spot_new), od_keep)
        else:  # a spot instance is lost: its state is the idle one
            n_idle = n_spot = np.minimum(wait, od_new)
            n_od = np.minimum(wait, od_keep)
        if tail:
            done = w <= 1e-9
            n_idle, n_spot, n_od = (np.where(done, 0.0, x) for x in (n_idle, n_spot, n_od))
        v_idle, v_spot, v_od = n_idle, n_spot, n_od
    return float(v_idle[slots])


def _pay(price: float, w: np.ndarray, extra_h: float, g: float, nxt: np.ndarray, tail: bool) -> np.ndarray:
    if not tail:
        return price * g + nxt
    wl = w + extra_h
    return price * np.clip(wl, 0.0, g) + np.where(wl <= g + 1e-9, 0.0, nxt)
