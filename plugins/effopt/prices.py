"""Unit prices (vCPU-hour, GiB-hour, GPU-hour by GPU model) and monthly costs.

The rate table is DERIVED from a public EC2 price catalog snapshot (see
``../shared/data/aws-prices/README.md``) by :func:`build_rate_table`
(``effopt prices build``); the bundled table ships in the package
(``effopt/data/rate_table.json``, read with :mod:`importlib.resources`) and
states its source file, region and method.  ``[effopt] rate_table`` points at
another table with the same layout.

Method, per pricing model (on-demand, spot):

* one price per instance type in the chosen region: the on-demand ``Price``;
  for spot the median ``SpotPrice`` over the region's availability zones;
* vCPU-hour and GiB-hour: least squares, without intercept, of the instance
  price on (vCPUs, MemoryGiB) over the general-purpose, compute- and
  memory-optimised families without GPUs (m5, m6i, c5, r5 by default; their
  different GiB-per-vCPU ratios make the two rates identifiable; burstable t3
  is left out);
* GPU-hour of a GPU model: for each instance type with that GPU, (instance
  price - its vCPUs x vCPU-hour - its GiB x GiB-hour) / GPU count; the median
  over those instance types.

Lookups never guess: a price the table lacks (an unknown GPU model, a GPU
without a model, a pricing model the table has no rates for) is reported in
:attr:`MonthlyCost.missing`, and the cost is then ``None``, never a zero.

Plain Python (numpy for the fit); no Airflow import.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.resources
import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOURS_PER_MONTH = 730.0
GIB = 1024**3
SCHEMA_VERSION = 1
PRICING_MODELS = ("on_demand", "spot")
DEFAULT_SNAPSHOT = "ec2_catalog_snapshot_001367d2.csv"
DEFAULT_REGION = "us-east-1"
DEFAULT_CPU_FAMILIES = ("m5", "m6i", "c5", "r5")
BUNDLED_RATE_TABLE = "rate_table.json"  # in the package's data folder (effopt/data)

_REQUIRED_COLUMNS = ("InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB", "Price",
                     "SpotPrice", "Region", "AvailabilityZone")


class PriceError(ValueError):
    """A rate table cannot be built or read; the message names the file and the offending item."""


@dataclass(frozen=True)
class _Instance:
    instance_type: str
    family: str
    vcpus: float
    memory_gib: float
    gpu_model: str
    gpu_count: int
    on_demand: float
    spot: float | None  # median over the region's zones; None when no zone had one


def _read_catalog(path: Path, region: str) -> list[_Instance]:
    try:
        fh = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise PriceError(f"cannot read price catalog {path}: {exc.strerror}") from None
    with fh:
        reader = csv.DictReader(fh)
        missing = [c for c in _REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise PriceError(f"{path}: missing column(s) {', '.join(missing)}")
        on_demand: dict[str, float] = {}
        spots: dict[str, list[float]] = defaultdict(list)
        shape: dict[str, tuple[float, float, str, int]] = {}
        for line_no, row in enumerate(reader, start=2):
            if row["Region"] != region:
                continue
            itype = row["InstanceType"]
            try:
                price = float(row["Price"])
                vcpus = float(row["vCPUs"])
                mem = float(row["MemoryGiB"])
                count = int(float(row["AcceleratorCount"] or 0))
                spot = float(row["SpotPrice"]) if row["SpotPrice"].strip() else None
            except ValueError as exc:
                raise PriceError(f"{path}:{line_no} ({itype}): {exc}") from None
            if price <= 0 or vcpus <= 0 or mem <= 0:
                raise PriceError(f"{path}:{line_no} ({itype}): price, vCPUs and memory must be positive")
            if itype in on_demand and on_demand[itype] != price:
                raise PriceError(f"{path}:{line_no} ({itype}): two on-demand prices in {region}")
            on_demand[itype] = price
            shape[itype] = (vcpus, mem, row["AcceleratorName"].strip(), count)
            if spot is not None and spot > 0:
                spots[itype].append(spot)
    if not on_demand:
        raise PriceError(f"{path}: no rows for region {region!r}")
    out = []
    for itype, price in sorted(on_demand.items()):
        vcpus, mem, gpu, count = shape[itype]
        out.append(_Instance(itype, itype.split(".")[0], vcpus, mem, gpu, count, price,
                             statistics.median(spots[itype]) if spots[itype] else None))
    return out


def _fit_cpu_memory(instances: list[_Instance], price_of: str) -> tuple[float, float, dict[str, Any]]:
    import numpy as np

    rows = [i for i in instances if getattr(i, price_of) is not None]
    if len(rows) < 2:
        raise PriceError(f"{price_of}: need at least 2 CPU-only instance types to fit vCPU and GiB rates, "
                         f"got {len(rows)}")
    x = np.array([[i.vcpus, i.memory_gib] for i in rows])
    y = np.array([getattr(i, price_of) for i in rows])
    if np.linalg.matrix_rank(x) < 2:
        raise PriceError(f"{price_of}: the CPU-only instance types all have the same GiB per vCPU; "
                         "add families with other ratios (e.g. c5, r5) so vCPU and memory can be told apart")
    (cpu, mem), *_ = np.linalg.lstsq(x, y, rcond=None)
    if cpu <= 0 or mem <= 0:
        raise PriceError(f"{price_of}: fit gave a non-positive rate (vCPU-hour {cpu:.6f}, GiB-hour {mem:.6f})")
    pred = x @ np.array([cpu, mem])
    rel = np.abs(pred - y) / y
    ss_res = float(((y - pred) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    fit = {
        "instance_types": len(rows),
        "families": sorted({i.family for i in rows}),
        "r2": round(1 - ss_res / ss_tot, 6) if ss_tot > 0 else 1.0,
        "median_abs_rel_error": round(float(np.median(rel)), 6),
        "max_abs_rel_error": round(float(rel.max()), 6),
    }
    return float(cpu), float(mem), fit


def _gpu_rates(instances: list[_Instance], price_of: str, cpu: float, mem: float
               ) -> tuple[dict[str, float], dict[str, Any]]:
    per_model: dict[str, list[tuple[str, float]]] = defaultdict(list)
    excluded: list[str] = []
    for i in instances:
        price = getattr(i, price_of)
        if not i.gpu_model or i.gpu_count <= 0 or price is None:
            continue
        per_gpu = (price - i.vcpus * cpu - i.memory_gib * mem) / i.gpu_count
        if per_gpu <= 0:
            excluded.append(f"{i.instance_type} (CPU and memory share exceeds the instance price)")
            continue
        per_model[i.gpu_model].append((i.instance_type, per_gpu))
    rates = {m: round(statistics.median(v for _, v in vals), 6) for m, vals in sorted(per_model.items())}
    evidence = {
        m: {"instance_types": [t for t, _ in vals], "min": round(min(v for _, v in vals), 6),
            "max": round(max(v for _, v in vals), 6)}
        for m, vals in sorted(per_model.items())
    }
    return rates, {"per_model": evidence, "excluded": excluded}


def build_rate_table(source_dir: str | Path, *, snapshot: str = DEFAULT_SNAPSHOT, region: str = DEFAULT_REGION,
                     cpu_families: Iterable[str] = DEFAULT_CPU_FAMILIES) -> dict[str, Any]:
    """Derive the rate table (a JSON-ready dict) from one catalog snapshot; see the module docstring."""
    path = Path(source_dir) / snapshot
    families = tuple(cpu_families)
    instances = _read_catalog(path, region)
    cpu_only = [i for i in instances if i.family in families and not i.gpu_model]
    if not cpu_only:
        raise PriceError(f"{path}: no CPU-only instance types of families {', '.join(families)} in {region}")
    table: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "currency": "USD",
        "hours_per_month": HOURS_PER_MONTH,
        "units": {"cpu": "USD per vCPU-hour", "memory": "USD per GiB-hour", "gpu": "USD per GPU-hour, by GPU model"},
        "source": {
            "file": snapshot,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "origin": "skypilot-org/skypilot-catalog catalogs/v7/aws/vms.csv (public AWS EC2 price catalog "
                      "snapshot), as copied into shared/data/aws-prices",
            "region": region,
        },
        "method": (
            f"Per instance type in {region}: on-demand = Price; spot = median SpotPrice over the region's "
            "availability zones. vCPU-hour and GiB-hour = least-squares fit without intercept of the instance "
            f"price on (vCPUs, MemoryGiB) over CPU-only types of families {', '.join(families)}. GPU-hour of a "
            "GPU model = median over that model's instance types of (price - vCPUs x vCPU-hour - GiB x "
            "GiB-hour) / GPU count. Monthly cost = hourly rate x hours_per_month."
        ),
        "rates": {},
        "fit": {},
    }
    for model in PRICING_MODELS:
        cpu, mem, fit = _fit_cpu_memory(cpu_only, model)
        gpus, gpu_evidence = _gpu_rates(instances, model, cpu, mem)
        table["rates"][model] = {"cpu_per_vcpu_hour": round(cpu, 6), "memory_per_gib_hour": round(mem, 6),
                                 "gpu_per_hour": gpus}
        table["fit"][model] = {"cpu_memory": fit, "gpu": gpu_evidence}
    return table


def write_rate_table(table: Mapping[str, Any], out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(table, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(out)
    return out


@dataclass(frozen=True)
class Rates:
    """Hourly USD rates of one pricing model."""

    cpu_per_vcpu_hour: float
    memory_per_gib_hour: float
    gpu_per_hour: Mapping[str, float]


@dataclass(frozen=True)
class MonthlyCost:
    """A monthly cost, or the prices that were missing to compute it (then ``usd`` is None)."""

    usd: float | None
    missing: tuple[str, ...] = ()
    breakdown: Mapping[str, float] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.usd is not None


@dataclass(frozen=True)
class RateTable:
    """A loaded rate table; :meth:`monthly_cost` prices (cores, bytes, GPUs by model)."""

    path: str
    source: Mapping[str, Any]
    method: str
    hours_per_month: float
    rates: Mapping[str, Rates]

    def rates_for(self, pricing: str) -> Rates | None:
        return self.rates.get(pricing)

    def describe(self) -> str:
        """Where the prices come from, without this machine's paths: ``rate_table.json: prices from
        ec2_catalog_snapshot_001367d2.csv, us-east-1``."""
        src = self.source or {}
        origin = ", ".join(str(src[k]) for k in ("file", "region") if src.get(k))
        name = Path(self.path).name if self.path else "rate table"
        return f"{name}: prices from {origin}" if origin else name

    def gpu_rate(self, model: str | None, pricing: str = "on_demand") -> float | None:
        rates = self.rates.get(pricing)
        if rates is None or not model:
            return None
        return rates.gpu_per_hour.get(model)

    def monthly_cost(self, cpu_cores: float = 0.0, memory_bytes: float = 0.0,
                     gpus: Mapping[str | None, int] | None = None, *, pricing: str = "on_demand") -> MonthlyCost:
        """USD per month (rate x ``hours_per_month``) of holding these resources.

        ``gpus`` maps a GPU model (``"A10G"``) to a count; a count under the
        model ``None`` (GPUs of unknown model) is reported missing.
        """
        if cpu_cores < 0 or memory_bytes < 0:
            raise ValueError(f"negative resources cannot be priced: cpu {cpu_cores}, memory {memory_bytes}")
        rates = self.rates.get(pricing)
        if rates is None:
            return MonthlyCost(None, (f"pricing model {pricing!r} (table {self.describe()} has "
                                      f"{', '.join(sorted(self.rates)) or 'none'})",))
        missing: list[str] = []
        breakdown = {"cpu": cpu_cores * rates.cpu_per_vcpu_hour * self.hours_per_month,
                     "memory": memory_bytes / GIB * rates.memory_per_gib_hour * self.hours_per_month}
        for model, count in sorted((gpus or {}).items(), key=lambda kv: str(kv[0])):
            if count < 0:
                raise ValueError(f"negative GPU count {count} for model {model!r}")
            if count == 0:
                continue
            if not model:
                missing.append(f"GPU-hour of {count} GPU(s) of unknown model")
                continue
            rate = rates.gpu_per_hour.get(model)
            if rate is None:
                known = ", ".join(sorted(rates.gpu_per_hour)) or "none"
                missing.append(f"GPU-hour of GPU model {model!r} ({pricing}; table {self.path} knows {known})")
                continue
            breakdown[f"gpu:{model}"] = count * rate * self.hours_per_month
        if missing:
            return MonthlyCost(None, tuple(missing), breakdown)
        return MonthlyCost(sum(breakdown.values()), (), breakdown)


def parse_rate_table(data: Mapping[str, Any], path: str = "<memory>") -> RateTable:
    """Validate a rate table's dict; every problem names the key."""
    if not isinstance(data, Mapping):
        raise PriceError(f"rate table {path}: top level must be an object")
    if data.get("schema") != SCHEMA_VERSION:
        raise PriceError(f"rate table {path}: schema {data.get('schema')!r} is not {SCHEMA_VERSION}")
    for key in ("source", "method", "rates"):
        if not data.get(key):
            raise PriceError(f"rate table {path}: {key!r} is missing (a rate table must state its source and method)")
    hours = data.get("hours_per_month", HOURS_PER_MONTH)
    if not isinstance(hours, (int, float)) or hours <= 0:
        raise PriceError(f"rate table {path}: hours_per_month {hours!r} must be a positive number")
    rates = {model: _parse_rates(f"rate table {path}: rates.{model}", raw) for model, raw in data["rates"].items()}
    return RateTable(path, dict(data["source"]), str(data["method"]), float(hours), rates)


def _not_a_rate(v: Any) -> bool:
    """Whether ``v`` is not a rate: not a number, a boolean, or <= 0."""
    return not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0


def _parse_rates(where: str, raw: Any) -> Rates:
    """The rates of one pricing model: USD per vCPU-hour, per GiB-hour and per GPU-hour of each GPU model."""
    if not isinstance(raw, Mapping):
        raise PriceError(f"{where} must be an object")
    values = {}
    for key in ("cpu_per_vcpu_hour", "memory_per_gib_hour"):
        v = raw.get(key)
        if _not_a_rate(v):
            raise PriceError(f"{where}.{key} = {v!r} must be a positive number")
        values[key] = float(v)
    gpu = raw.get("gpu_per_hour", {})
    if not isinstance(gpu, Mapping):
        raise PriceError(f"{where}.gpu_per_hour must be an object of GPU model -> USD per hour")
    for name, v in gpu.items():
        if _not_a_rate(v):
            raise PriceError(f"{where}.gpu_per_hour.{name} = {v!r} must be a positive number")
    return Rates(values["cpu_per_vcpu_hour"], values["memory_per_gib_hour"],
                 {str(k): float(v) for k, v in gpu.items()})


def bundled_rate_table_path() -> Path:
    """The rate table that ships in the package (``effopt/data/rate_table.json``)."""
    resource = importlib.resources.files("effopt.data") / BUNDLED_RATE_TABLE
    if not resource.is_file():
        raise PriceError(f"the package's rate table {resource} is missing; set [effopt] rate_table to a table "
                         "built with effopt prices build")
    return Path(str(resource))


def load_rate_table(path: str | Path | None = None) -> RateTable:
    """Load and validate a rate table; ``None`` or ``""`` loads the bundled one."""
    p = Path(path) if path else bundled_rate_table_path()
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PriceError(f"cannot read rate table {p}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise PriceError(f"rate table {p} is not valid JSON: {exc}") from None
    return parse_rate_table(data, str(p))
