"""One price catalog over on-demand and spot prices per (instance type, region, AZ ID) and time.

Two sources behind one interface (:class:`PriceCatalog`):

* :class:`SnapshotCatalog`: the catalog embedded in this package
  (``effopt/spot/data/catalog.json``), built by ``python -m effopt prices
  build-catalog`` from the public EC2 price catalog snapshots and the Spot
  Instance Advisor feed in ``shared/data/aws-prices`` (see
  :func:`build_snapshot_catalog`).  It holds, per instance type: vCPUs, memory,
  GPU model and count, the on-demand price per region, the spot price per AZ
  ID in each snapshot, and the advisor's interruption band per region.  The
  snapshots' dates are not recorded in their source, only their likely order;
  so a snapshot price has no age in hours, and a price that only an older
  snapshot has is reported stale, naming the snapshot it comes from.
* :class:`Ec2Catalog`: live spot prices from ``describe_spot_price_history``
  (paginated by ``NextToken``, at most 90 days back) through a boto3 EC2 client
  passed in (the Airflow layer passes ``EC2Hook().conn``), joined on the AZ ID
  through ``describe_availability_zones`` because zone names map to AZ IDs
  differently in every account.  EC2 has no on-demand price API (that is the
  AWS Pricing API), so on-demand prices and instance shapes come from a base
  catalog (the snapshot by default), or ``describe_instance_types`` for shapes
  the base lacks.

A price the source lacks is a :class:`PriceQuote` with ``usd_per_hour=None``
and the reason, never a zero.  A quote older than ``max_age_h`` (or of unknown
age) is flagged ``stale`` with its age.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import statistics
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from effopt.spot.errors import SpotError, UnknownInstanceType
from effopt.units import HOUR

SCHEMA = 1
CATALOG_RESOURCE = "catalog.json.gz"
#: Snapshot files in shared/data/aws-prices, oldest first (their README's likely order; dates are unknown).
SNAPSHOT_ORDER = ("27f67dd4", "001367d2", "e385a0d3", "34a4a9e8")
ADVISOR_FILE = "spot_advisor_snapshot.json"
#: The advisor's interruption bands: share of instances interrupted in a month, [low, high).
ADVISOR_BANDS = ((0.0, 0.05, "<5%"), (0.05, 0.10, "5-10%"), (0.10, 0.15, "10-15%"), (0.15, 0.20, "15-20%"),
                 (0.20, 1.0, ">20%"))
MAX_LOOKBACK_DAYS = 90
DEFAULT_MAX_AGE_H = 24.0
_CSV_COLUMNS = ("InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB", "GpuInfo", "Price",
                "SpotPrice", "Region", "AvailabilityZone")


@dataclass(frozen=True)
class InstanceSpec:
    instance_type: str
    vcpus: float
    memory_gib: float
    gpu_model: str | None
    gpu_count: int
    gpu_memory_mib: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"instance_type": self.instance_type, "vcpus": self.vcpus, "memory_gib": self.memory_gib,
                "gpu_model": self.gpu_model, "gpu_count": self.gpu_count, "gpu_memory_mib": self.gpu_memory_mib}


@dataclass(frozen=True)
class PriceQuote:
    """A price with where and when it comes from; ``usd_per_hour`` None means missing (``note`` says why)."""

    instance_type: str
    region: str
    az_id: str | None  # None for on-demand (a regional price) and region/catalog medians
    capacity: str  # "spot" or "on-demand"
    usd_per_hour: float | None
    source: str
    observed_at: datetime | None = None
    age_h: float | None = None
    stale: bool = False
    note: str = ""

    @property
    def missing(self) -> bool:
        return self.usd_per_hour is None

    def as_dict(self) -> dict[str, Any]:
        return {"instance_type": self.instance_type, "region": self.region, "az_id": self.az_id,
                "capacity": self.capacity, "usd_per_hour": self.usd_per_hour, "source": self.source,
                "observed_at": self.observed_at.isoformat() if self.observed_at else None,
                "age_h": None if self.age_h is None else round(self.age_h, 3), "stale": self.stale,
                "note": self.note}


@dataclass(frozen=True)
class AdvisorBand:
    """Spot Instance Advisor entry: interruption band (share of instances interrupted per month)."""

    index: int
    label: str
    low: float
    high: float
    savings_pct: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"band": self.index, "label": self.label, "monthly_low": self.low, "monthly_high": self.high,
                "savings_pct": self.savings_pct}


def advisor_band(index: int, savings_pct: float | None = None) -> AdvisorBand:
    if not 0 <= index < len(ADVISOR_BANDS):
        raise SpotError(f"advisor band index {index!r} is not 0..{len(ADVISOR_BANDS) - 1}")
    low, high, label = ADVISOR_BANDS[index]
    return AdvisorBand(index, label, low, high, savings_pct)


class PriceCatalog(ABC):
    """The interface both sources implement."""

    source: str = ""

    @abstractmethod
    def instance_types(self) -> list[str]:
        """Every instance type the source knows."""

    @abstractmethod
    def instance(self, instance_type: str) -> InstanceSpec:
        """The type's vCPUs, memory and GPUs (UnknownInstanceType names an unknown one)."""

    @abstractmethod
    def regions(self, instance_type: str) -> list[str]:
        """Regions with an on-demand or spot price for the type."""

    @abstractmethod
    def zones(self, instance_type: str, region: str) -> list[str]:
        """AZ IDs of the region for which the source has a spot price record of the type."""

    @abstractmethod
    def on_demand(self, instance_type: str, region: str) -> PriceQuote:
        """The on-demand price of the type in the region."""

    @abstractmethod
    def spot(self, instance_type: str, region: str, az_id: str, at: datetime | None = None) -> PriceQuote:
        """The spot price of the type in one AZ ID (at ``at``, default now)."""

    def advisor(self, instance_type: str, region: str) -> AdvisorBand | None:
        return None

    # -- derived, source-independent ------------------------------------------------------------------
    def spot_median(self, instance_type: str, region: str | None = None) -> PriceQuote:
        """Median spot price over the region's AZ IDs (or over every region's when ``region`` is None).

        Used where a trace names a zone, not an AZ ID: zone names map to AZ IDs differently per account.
        """
        self.instance(instance_type)
        regions = [region] if region else self.regions(instance_type)
        quotes = [self.spot(instance_type, r, z) for r in regions for z in self.zones(instance_type, r)]
        priced = [q for q in quotes if q.usd_per_hour is not None]
        where = region or "all regions"
        if not priced:
            return PriceQuote(instance_type, region or "*", None, "spot", None, self.source,
                              note=f"no spot price for {instance_type} in {where}")
        stale = [q for q in priced if q.stale]
        ages = [q.age_h for q in priced if q.age_h is not None]
        return PriceQuote(instance_type, region or "*", None, "spot",
                          round(statistics.median(q.usd_per_hour for q in priced), 6), self.source,
                          age_h=max(ages) if ages else None, stale=bool(stale),
                          note=f"median over {len(priced)} AZ ID(s) in {where}"
                               + (f"; {len(stale)} stale" if stale else ""))

    def on_demand_median(self, instance_type: str) -> PriceQuote:
        quotes = [self.on_demand(instance_type, r) for r in self.regions(instance_type)]
        priced = [q for q in quotes if q.usd_per_hour is not None]
        if not priced:
            return PriceQuote(instance_type, "*", None, "on-demand", None, self.source,
                              note=f"no on-demand price for {instance_type}")
        return PriceQuote(instance_type, "*", None, "on-demand",
                          round(statistics.median(q.usd_per_hour for q in priced), 6), self.source,
                          note=f"median over {len(priced)} region(s)")

    def median_spot_ratio(self) -> float | None:
        """Median over instance types of (median spot price / median on-demand price): a typical discount."""
        ratios = []
        for t in self.instance_types():
            sp, od = self.spot_median(t).usd_per_hour, self.on_demand_median(t).usd_per_hour
            if sp is not None and od:
                ratios.append(sp / od)
        return round(statistics.median(ratios), 6) if ratios else None

    def types_with_gpu(self, model: str, count: int) -> list[str]:
        """Instance types with exactly ``count`` GPUs of ``model`` (case-insensitive), cheapest on-demand first."""
        found = []
        for t in self.instance_types():
            spec = self.instance(t)
            if spec.gpu_model and spec.gpu_model.lower() == model.lower() and spec.gpu_count == count:
                od = self.on_demand_median(t).usd_per_hour
                found.append((od if od is not None else float("inf"), t))
        return [t for _, t in sorted(found)]


# -- the embedded snapshot ----------------------------------------------------------------------------------
def _parse_gpu_memory(text: str) -> int | None:
    import ast

    if not text.strip():
        return None
    try:
        info = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    gpus = info.get("Gpus") or [{}]
    mem = (gpus[0].get("MemoryInfo") or {}).get("SizeInMiB")
    return int(mem) if isinstance(mem, (int, float)) else None


def build_snapshot_catalog(source_dir: str | Path, snapshots: Sequence[str] = SNAPSHOT_ORDER,
                           advisor_file: str = ADVISOR_FILE) -> dict[str, Any]:
    """The embedded catalog (a JSON-ready dict) from the snapshot CSVs and the advisor feed in ``source_dir``."""
    src = Path(source_dir)
    files = []
    types: dict[str, dict[str, Any]] = {}
    for idx, tag in enumerate(snapshots):
        path = src / f"ec2_catalog_snapshot_{tag}.csv"
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise SpotError(f"cannot read price snapshot {path}: {exc.strerror}") from None
        files.append({"file": path.name, "snapshot": tag, "sha256": hashlib.sha256(raw).hexdigest(),
                      "observed_at": None})
        reader = csv.DictReader(raw.decode("utf-8").splitlines())
        missing = [c for c in _CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise SpotError(f"{path}: missing column(s) {', '.join(missing)}")
        for line, row in enumerate(reader, start=2):
            itype = row["InstanceType"]
            try:
                vcpus, mem = float(row["vCPUs"]), float(row["MemoryGiB"])
                count = int(float(row["AcceleratorCount"] or 0))
                od = float(row["Price"]) if row["Price"].strip() else None
                spot = float(row["SpotPrice"]) if row["SpotPrice"].strip() else None
            except ValueError as exc:
                raise SpotError(f"{path}:{line} ({itype}): {exc}") from None
            if (od is not None and od <= 0) or (spot is not None and spot <= 0):
                raise SpotError(f"{path}:{line} ({itype}): prices must be positive (a missing price is empty)")
            entry = types.setdefault(itype, {
                "vcpus": vcpus, "memory_gib": mem, "gpu_model": row["AcceleratorName"].strip() or None,
                "gpu_count": count, "gpu_memory_mib": _parse_gpu_memory(row["GpuInfo"]),
                "on_demand": {}, "spot": {}, "advisor": {}})
            region, az = row["Region"], row["AvailabilityZone"]
            if od is not None:
                entry["on_demand"][region] = od  # the newest snapshot's price wins (files are oldest first)
            series = entry["spot"].setdefault(region, {}).setdefault(az, [None] * len(snapshots))
            series[idx] = spot
    adv_path = src / advisor_file
    try:
        advisor = json.loads(adv_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SpotError(f"cannot read spot advisor feed {adv_path}: {exc}") from None
    for region, by_os in (advisor.get("spot_advisor") or {}).items():
        for itype, rec in (by_os.get("Linux") or {}).items():
            if itype in types and isinstance(rec, dict) and isinstance(rec.get("r"), int):
                types[itype]["advisor"][region] = {"band": rec["r"], "savings_pct": rec.get("s")}
    adv_src = advisor.get("source") or {}
    return {
        "schema": SCHEMA,
        "kind": "effopt spot price catalog",
        "currency": "USD per instance-hour",
        "source": {
            "prices": "skypilot-org/skypilot-catalog catalogs/v7/aws/vms.csv at the commits in the file names "
                      "(public AWS EC2 price catalog snapshots), as copied into shared/data/aws-prices",
            "advisor": f"AWS Spot Instance Advisor feed (spot-advisor-data.json) as stored in "
                       f"{adv_src.get('repo', '?')} at commit {str(adv_src.get('commit', '?'))[:8]}, Linux entries",
            "files": files + [{"file": adv_path.name, "sha256": hashlib.sha256(adv_path.read_bytes()).hexdigest()}],
            "dates": "the snapshots' dates are not recorded in their source; they are ordered oldest first by the "
                     "likely order of shared/data/aws-prices/README.md (27f67dd4 ~ 001367d2 < e385a0d3 < 34a4a9e8); "
                     "the advisor feed was fetched around 2026-08-10",
        },
        "snapshots": list(snapshots),
        "advisor_bands": [{"band": i, "label": lab, "monthly_low": lo, "monthly_high": hi}
                          for i, (lo, hi, lab) in enumerate(ADVISOR_BANDS)],
        "instance_types": dict(sorted(types.items())),
    }


def write_catalog(catalog: Mapping[str, Any], out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(catalog, separators=(",", ":"), sort_keys=False) + "\n"
    tmp = out.with_suffix(out.suffix + ".tmp")
    if out.suffix == ".gz":
        tmp.write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))
    else:
        tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out


def embedded_catalog_path() -> Path:
    return Path(str(resources.files("effopt.spot") / "data" / CATALOG_RESOURCE))


class SnapshotCatalog(PriceCatalog):
    """Prices from the embedded snapshot catalog (or a file with the same layout).

    ``snapshot`` picks the "current" snapshot (default: the newest); a zone's
    spot price is its value in that snapshot, else its value in the newest
    older snapshot that has one, reported stale with the snapshot named.
    """

    def __init__(self, data: Mapping[str, Any], *, snapshot: str | None = None, path: str = "<memory>") -> None:
        if not isinstance(data, Mapping) or data.get("schema") != SCHEMA or "instance_types" not in data:
            raise SpotError(f"spot catalog {path}: not an effopt spot catalog (schema {SCHEMA})")
        self.data = data
        self.path = path
        self.snapshots: list[str] = list(data["snapshots"])
        if snapshot is not None and snapshot not in self.snapshots:
            raise SpotError(f"spot catalog {path}: unknown snapshot {snapshot!r} (has {', '.join(self.snapshots)})")
        self.current = self.snapshots.index(snapshot) if snapshot else len(self.snapshots) - 1
        self.source = f"snapshot {self.snapshots[self.current]}"
        self._types: Mapping[str, Any] = data["instance_types"]
        self._specs: dict[str, InstanceSpec] = {}

    @classmethod
    def load(cls, path: str | Path | None = None, *, snapshot: str | None = None) -> SnapshotCatalog:
        """The embedded catalog, or one written by ``prices build-catalog`` at ``path``."""
        try:
            if path is None:
                ref = resources.files("effopt.spot") / "data" / CATALOG_RESOURCE
                raw, where = ref.read_bytes(), f"effopt/spot/data/{CATALOG_RESOURCE}"
            else:
                raw, where = Path(path).read_bytes(), str(path)
        except OSError as exc:
            raise SpotError(f"cannot read spot catalog {path or CATALOG_RESOURCE}: {exc}") from None
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise SpotError(f"spot catalog {where} is not valid JSON: {exc}") from None
        return cls(data, snapshot=snapshot, path=where)

    @property
    def sources(self) -> Mapping[str, Any]:
        return self.data.get("source", {})

    def instance_types(self) -> list[str]:
        return list(self._types)

    def _entry(self, instance_type: str) -> Mapping[str, Any]:
        try:
            return self._types[instance_type]
        except KeyError:
            raise UnknownInstanceType(f"unknown instance type {instance_type!r} (the spot catalog {self.path} "
                                      f"has {len(self._types)} types, e.g. {', '.join(list(self._types)[:4])})"
                                      ) from None

    def instance(self, instance_type: str) -> InstanceSpec:
        spec = self._specs.get(instance_type)
        if spec is None:
            e = self._entry(instance_type)
            spec = InstanceSpec(instance_type, float(e["vcpus"]), float(e["memory_gib"]), e.get("gpu_model"),
                                int(e.get("gpu_count") or 0), e.get("gpu_memory_mib"))
            self._specs[instance_type] = spec
        return spec

    def regions(self, instance_type: str) -> list[str]:
        e = self._entry(instance_type)
        return sorted(set(e["on_demand"]) | set(e["spot"]))

    def zones(self, instance_type: str, region: str) -> list[str]:
        e = self._entry(instance_type)
        return sorted(z for z, s in (e["spot"].get(region) or {}).items() if any(v is not None for v in s))

    def on_demand(self, instance_type: str, region: str) -> PriceQuote:
        price = self._entry(instance_type)["on_demand"].get(region)
        note = "" if price is not None else f"no on-demand price for {instance_type} in {region} in {self.path}"
        return PriceQuote(instance_type, region, None, "on-demand", price, self.source, stale=price is None,
                          note=note or "regional on-demand price; snapshot date not recorded in the source")

    def spot(self, instance_type: str, region: str, az_id: str, at: datetime | None = None) -> PriceQuote:
        """``at`` is not used: the snapshots have no dates (pick the snapshot with ``snapshot=``)."""
        series = (self._entry(instance_type)["spot"].get(region) or {}).get(az_id)
        if series is None:
            return PriceQuote(instance_type, region, az_id, "spot", None, self.source,
                              note=f"no spot record for {instance_type} in {region}/{az_id}")
        for idx in range(self.current, -1, -1):
            if series[idx] is not None:
                tag = self.snapshots[idx]
                if idx == self.current:
                    return PriceQuote(instance_type, region, az_id, "spot", series[idx], f"snapshot {tag}",
                                      stale=False, note="snapshot date not recorded in the source")
                return PriceQuote(instance_type, region, az_id, "spot", series[idx], f"snapshot {tag}", stale=True,
                                  note=f"stale: from snapshot {tag}, {self.current - idx} snapshot(s) older than "
                                       f"the current {self.snapshots[self.current]} (no price there)")
        return PriceQuote(instance_type, region, az_id, "spot", None, self.source,
                          note=f"no spot price for {instance_type} in {region}/{az_id} in snapshot "
                               f"{self.snapshots[self.current]} or older")

    def spot_history(self, instance_type: str, region: str, az_id: str) -> list[tuple[str, float | None]]:
        series = (self._entry(instance_type)["spot"].get(region) or {}).get(az_id) or [None] * len(self.snapshots)
        return list(zip(self.snapshots, series, strict=True))

    def advisor(self, instance_type: str, region: str) -> AdvisorBand | None:
        rec = self._entry(instance_type).get("advisor", {}).get(region)
        return None if rec is None else advisor_band(int(rec["band"]), rec.get("savings_pct"))


# -- live EC2 ---------------------------------------------------------------------------------------------
@dataclass
class _SpotRecord:
    at: datetime
    price: float


@dataclass
class Ec2Catalog(PriceCatalog):
    """Spot prices from EC2's ``describe_spot_price_history`` through a boto3 client passed in.

    The client's region is the catalog's region.  Prices are fetched on first
    use per instance type (all AZs, ``product`` descriptions, ``lookback_days``
    <= 90 back from ``now``), paginated with ``NextToken``, and joined on the
    AZ ID through ``describe_availability_zones``.  The price of a zone at
    ``at`` is the newest record at or before ``at``; its age is ``at`` minus
    the record's time, stale beyond ``max_age_h``.  On-demand prices, shapes
    and advisor bands come from ``base`` (the embedded snapshot by default).
    """

    client: Any
    base: PriceCatalog | None = None
    now: datetime | None = None
    lookback_days: float = MAX_LOOKBACK_DAYS
    max_age_h: float = DEFAULT_MAX_AGE_H
    product: str = "Linux/UNIX"
    _history: dict[str, dict[str, list[_SpotRecord]]] = field(default_factory=dict, repr=False)
    _az_ids: dict[str, str] | None = field(default=None, repr=False)
    _extra_specs: dict[str, InstanceSpec] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.lookback_days <= MAX_LOOKBACK_DAYS:
            raise SpotError(f"lookback_days {self.lookback_days!r} must be in (0, {MAX_LOOKBACK_DAYS}] "
                            "(EC2 keeps 90 days of spot price history)")
        if self.base is None:
            self.base = SnapshotCatalog.load()
        self.now = self.now or datetime.now(timezone.utc)
        if self.now.tzinfo is None:
            raise SpotError("Ec2Catalog.now must be timezone-aware")
        self.region = getattr(getattr(self.client, "meta", None), "region_name", None) or "unknown"
        self.source = f"ec2 describe_spot_price_history ({self.region})"

    # AZ names -> IDs, once per catalog
    def az_ids(self) -> dict[str, str]:
        if self._az_ids is None:
            resp = self.client.describe_availability_zones(AllAvailabilityZones=False)
            self._az_ids = {z["ZoneName"]: z["ZoneId"] for z in resp.get("AvailabilityZones", [])
                            if z.get("ZoneName") and z.get("ZoneId")}
        return self._az_ids

    def _fetch(self, instance_type: str) -> dict[str, list[_SpotRecord]]:
        if instance_type in self._history:
            return self._history[instance_type]
        names = self.az_ids()
        start = self.now - timedelta(days=self.lookback_days)
        by_az: dict[str, list[_SpotRecord]] = {}
        kwargs: dict[str, Any] = {"InstanceTypes": [instance_type], "ProductDescriptions": [self.product],
                                  "StartTime": start, "EndTime": self.now, "MaxResults": 1000}
        while True:
            resp = self.client.describe_spot_price_history(**kwargs)
            for rec in resp.get("SpotPriceHistory", []):
                if rec.get("InstanceType") != instance_type:
                    continue
                az_id = names.get(rec.get("AvailabilityZone", ""))
                if az_id is None:
                    continue
                ts = rec["Timestamp"]
                if isinstance(ts, str):
                    ts = datetime.fromisoformat(ts.replace("Z", "+00:00"))
                if ts.tzinfo is None:
                    ts = ts.replace(tzinfo=timezone.utc)
                price = float(rec["SpotPrice"])
                if price > 0:
                    by_az.setdefault(az_id, []).append(_SpotRecord(ts, price))
            token = resp.get("NextToken")
            if not token:
                break
            kwargs["NextToken"] = token
        for records in by_az.values():
            records.sort(key=lambda r: r.at)
        self._history[instance_type] = by_az
        return by_az

    def instance_types(self) -> list[str]:
        return self.base.instance_types()

    def instance(self, instance_type: str) -> InstanceSpec:
        try:
            return self.base.instance(instance_type)
        except UnknownInstanceType:
            pass
        if instance_type not in self._extra_specs:
            try:
                resp = self.client.describe_instance_types(InstanceTypes=[instance_type])
            except Exception as exc:  # noqa: BLE001 - botocore ClientError for an unknown type
                raise UnknownInstanceType(f"unknown instance type {instance_type!r} ({exc})") from None
            items = resp.get("InstanceTypes") or []
            if not items:
                raise UnknownInstanceType(f"unknown instance type {instance_type!r} (describe_instance_types "
                                          "returned nothing)")
            it = items[0]
            gpus = (it.get("GpuInfo") or {}).get("Gpus") or []
            self._extra_specs[instance_type] = InstanceSpec(
                instance_type, float(it["VCpuInfo"]["DefaultVCpus"]), it["MemoryInfo"]["SizeInMiB"] / 1024,
                gpus[0]["Name"] if gpus else None, int(sum(g.get("Count", 0) for g in gpus)),
                (gpus[0].get("MemoryInfo") or {}).get("SizeInMiB") if gpus else None)
        return self._extra_specs[instance_type]

    def regions(self, instance_type: str) -> list[str]:
        return [self.region]

    def zones(self, instance_type: str, region: str) -> list[str]:
        if region != self.region:
            return []
        return sorted(self._fetch(instance_type))

    def on_demand(self, instance_type: str, region: str) -> PriceQuote:
        q = self.base.on_demand(instance_type, region)
        return PriceQuote(q.instance_type, q.region, None, "on-demand", q.usd_per_hour,
                          f"{q.source} (EC2 has no on-demand price API)", q.observed_at, q.age_h, q.stale, q.note)

    def spot(self, instance_type: str, region: str, az_id: str, at: datetime | None = None) -> PriceQuote:
        self.instance(instance_type)
        if region != self.region:
            return PriceQuote(instance_type, region, az_id, "spot", None, self.source,
                              note=f"the EC2 client is for {self.region}, not {region}")
        at = at or self.now
        records = [r for r in self._fetch(instance_type).get(az_id, []) if r.at <= at]
        if not records:
            return PriceQuote(instance_type, region, az_id, "spot", None, self.source,
                              note=f"no spot price record for {instance_type} in {az_id} in the "
                                   f"{self.lookback_days:g} days before {at.isoformat()}")
        rec = records[-1]
        age = (at - rec.at).total_seconds() / HOUR
        stale = age > self.max_age_h
        return PriceQuote(instance_type, region, az_id, "spot", rec.price, self.source, rec.at, age, stale,
                          f"stale: newest record is {age:.1f} h old (> {self.max_age_h:g} h)" if stale else "")

    def spot_history(self, instance_type: str, region: str, az_id: str) -> list[tuple[datetime, float]]:
        if region != self.region:
            return []
        return [(r.at, r.price) for r in self._fetch(instance_type).get(az_id, [])]

    def advisor(self, instance_type: str, region: str) -> AdvisorBand | None:
        try:
            return self.base.advisor(instance_type, region)
        except UnknownInstanceType:
            return None


def catalog_for(source: str, client: Any = None, **kwargs: Any) -> PriceCatalog:
    """``"snapshot"`` (embedded) or ``"ec2"`` (needs ``client``); what the Airflow layer calls."""
    if source == "snapshot":
        return SnapshotCatalog.load(kwargs.get("path"), snapshot=kwargs.get("snapshot"))
    if source == "ec2":
        if client is None:
            raise SpotError("catalog source 'ec2' needs a boto3 EC2 client")
        return Ec2Catalog(client, **{k: v for k, v in kwargs.items() if k in ("base", "now", "lookback_days",
                                                                                 "max_age_h", "product")})
    raise SpotError(f"unknown catalog source {source!r} (use snapshot or ec2)")


def iter_offer_zones(catalog: PriceCatalog, instance_type: str, regions: Iterable[str] | None = None
                     ) -> list[tuple[str, str]]:
    """(region, AZ ID) pairs with a spot record for the type."""
    rs = list(regions) if regions else catalog.regions(instance_type)
    return [(r, z) for r in rs for z in catalog.zones(instance_type, r)]
