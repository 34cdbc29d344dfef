"""effopt settings: the ``[effopt]`` section of the Airflow configuration.

This module is plain Python (no Airflow import) so it can be validated and
tested on its own.  :mod:`effopt.airflow_settings` feeds it the section read
from Airflow (``airflow.cfg`` or ``AIRFLOW__EFFOPT__*`` environment variables).

Every key is declared once in :data:`OPTIONS` with its type, default and
accepted values; the README's configuration table is generated from the same
declarations (``python -m effopt config show --markdown``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """An ``[effopt]`` option has a value effopt cannot use."""


@dataclass(frozen=True)
class Option:
    key: str
    default: str
    help: str
    kind: str = "str"  # str | bool | int | float | choice | path | secrets | schedule | gpu_quotas
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    secret: bool = False

    def accepted(self) -> str:
        if self.kind == "bool":
            return "true or false"
        if self.kind == "choice":
            return ", ".join(self.choices)
        if self.kind in ("int", "float"):
            lo = "" if self.minimum is None else f" >= {self.minimum:g}"
            hi = "" if self.maximum is None else f"{' and' if lo else ''} <= {self.maximum:g}"
            return f"a{'n integer' if self.kind == 'int' else ' number'}{lo}{hi}"
        if self.kind == "path":
            return "a filesystem path ({AIRFLOW_HOME} is expanded)"
        if self.kind == "secrets":
            return "comma-separated strings of at least 16 characters"
        if self.kind == "gpu_quotas":
            return "comma-separated TENANT:MODEL=GPUS items (MODEL * for any model), e.g. team-a:A100=4,team-b:*=8"
        if self.kind == "schedule":
            return "a cron expression (minute hour day month weekday) or a preset such as @hourly, @daily, @weekly"
        return "a string"


SECRET_MIN_LENGTH = 16
_TRUE = {"1", "true", "yes", "on", "t", "y"}
_FALSE = {"0", "false", "no", "off", "f", "n"}

_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_QUOTA_GPUS = re.compile(r"\d+(\.\d{1,3})?\Z")


@dataclass(frozen=True)
class GpuQuota:
    """One item of ``[effopt] gpu_quotas``: ``tenant`` may use ``milli`` thousandths of GPU of ``model``
    (``*``: any)."""

    tenant: str
    model: str
    milli: int

    def __str__(self) -> str:
        gpus = self.milli / 1000
        return f"{self.tenant}:{self.model}={gpus:g}"


def parse_gpu_quotas(text: str) -> tuple[GpuQuota, ...]:
    """``team-a:A100=4,team-b:*=8`` as quotas; a malformed item raises ConfigError naming it (1 = the first)."""
    out: list[GpuQuota] = []
    seen: set[tuple[str, str]] = set()
    items = [item.strip() for item in text.split(",")] if text.strip() else []
    for n, item in enumerate(items, start=1):
        def bad(why: str, item: str = item, n: int = n) -> ConfigError:
            return ConfigError(f"[effopt] gpu_quotas is invalid: item {n} {item!r} {why}; expected TENANT:MODEL=GPUS "
                               "items such as team-a:A100=4,team-b:*=8 (set it in airflow.cfg or "
                               "AIRFLOW__EFFOPT__GPU_QUOTAS)")
        if not item:
            raise bad("is empty")
        who, colon, rest = item.partition(":")
        model, equals, amount = rest.partition("=")
        who, model, amount = who.strip(), model.strip(), amount.strip()
        if not colon or not equals:
            raise bad("lacks the ':' or the '='")
        if not _TENANT.match(who):
            raise bad(f"has tenant {who!r}: letters, digits, '_', '.' and '-' only, starting with a letter or digit")
        if not model or any(c in model for c in ":=*") and model != "*":
            raise bad(f"has GPU model {model!r}: a model name or *")
        if not _QUOTA_GPUS.match(amount) or float(amount) <= 0:
            raise bad(f"has {amount!r} GPUs: a positive number with at most 3 decimals")
        if (who, model) in seen:
            raise bad(f"repeats the quota of {who}:{model}")
        seen.add((who, model))
        out.append(GpuQuota(who, model, round(float(amount) * 1000)))
    return tuple(out)


OPTIONS: tuple[Option, ...] = (
    Option(
        "store_url",
        "sqlite:///{AIRFLOW_HOME}/effopt.db",
        "SQLAlchemy URL of the effopt store (task usage, audit records, report history). "
        "A Postgres URL such as postgresql+psycopg2://user:pass@host/effopt is used as is.",
    ),
    Option(
        "store_timeout_s",
        "5",
        "Seconds a read or write of the effopt store may wait (for a locked SQLite file, a Postgres connection) "
        "before it fails; the task-usage listener then only warns.",
        kind="float",
        minimum=0.1,
        maximum=300,
    ),
    Option(
        "task_usage_listener",
        "true",
        "Record CPU seconds, peak RSS and wall time of every task instance.",
        kind="bool",
    ),
    Option(
        "cache_backend",
        "auto",
        "Backend of the computation cache: redis uses the effopt_redis connection, local a "
        "directory on this machine, auto picks redis when that connection exists.",
        kind="choice",
        choices=("auto", "local", "redis"),
    ),
    Option(
        "cache_dir",
        "{AIRFLOW_HOME}/effopt-cache",
        "Directory of the local cache backend.",
        kind="path",
    ),
    Option(
        "cache_secret",
        "",
        "Secret key that signs every cache entry (HMAC-SHA256), at least 16 characters; every worker sharing "
        "the cache needs the same value (e.g. AIRFLOW__EFFOPT__CACHE_SECRET in each worker's environment). "
        "Shown masked.",
        secret=True,
    ),
    Option(
        "cache_secret_fallbacks",
        "",
        "Other secrets accepted when reading, never used to sign: comma-separated (so a secret with a comma "
        "cannot be one), each at least 16 characters. Rotate without misses: add the new secret here on every "
        "worker, then make it cache_secret and put the old one here, and drop the old one once what it signed "
        "has expired (a warning in the task log says while it is still read). Shown masked.",
        kind="secrets",
        secret=True,
    ),
    Option(
        "cache_max_bytes",
        "10737418240",
        "Size bound of the local cache backend in bytes; least recently read entries are evicted above it.",
        kind="int",
        minimum=65536,
        maximum=2**50,
    ),
    Option(
        "cache_max_entry_bytes",
        "268435456",
        "Largest cache entry in bytes; a larger result is returned but not cached (with a warning).",
        kind="int",
        minimum=1024,
        maximum=4 * 1024**3,
    ),
    Option(
        "cache_compress_min_bytes",
        "1048576",
        "Cache entries at least this many bytes long are zstandard-compressed when a sample of them compresses.",
        kind="int",
        minimum=0,
        maximum=2**40,
    ),
    Option(
        "cache_lock_lease_s",
        "30",
        "Seconds a single-flight lock outlives a crashed holder before a waiting worker takes over "
        "(a live holder renews it every third of that).",
        kind="float",
        minimum=1,
        maximum=86400,
    ),
    Option(
        "cache_lock_timeout_s",
        "3600",
        "Seconds a cached call waits for another worker computing the same inputs before it fails with a "
        "timeout error.",
        kind="float",
        minimum=0,
        maximum=7 * 86400,
    ),
    Option(
        "cache_timeout_s",
        "5",
        "Seconds a cache backend operation may take; past it the call computes without the cache (fail-open).",
        kind="float",
        minimum=0.1,
        maximum=600,
    ),
    Option(
        "redis_conn_id",
        "effopt_redis",
        "Airflow connection of the Redis server used by the cache.",
    ),
    Option(
        "prometheus_conn_id",
        "effopt_prometheus",
        "Airflow connection of the Prometheus server used as a metrics source.",
    ),
    Option(
        "kubernetes_conn_id",
        "kubernetes_default",
        "Airflow connection of the Kubernetes cluster to read and patch.",
    ),
    Option("aws_conn_id", "aws_default", "Airflow connection of the AWS account."),
    Option("smtp_conn_id", "smtp_default", "Airflow connection of the SMTP server for reports."),
    Option(
        "rightsizing_schedule",
        "@hourly",
        "When the effopt_rightsizing DAG runs.",
        kind="schedule",
    ),
    Option(
        "waste_report_schedule",
        "0 7 * * 1",
        "When the effopt_waste_report DAG runs (default Mondays 07:00 UTC).",
        kind="schedule",
    ),
    Option(
        "report_recipients",
        "",
        "Comma-separated addresses that receive the emailed reports when a DAG run names none; empty: reports "
        "are rendered and shown on the effopt page, and mailed only to the recipients a run gives.",
    ),
    Option(
        "airflow_api_conn_id",
        "effopt_airflow_api",
        "Airflow connection of this Airflow's REST API (an http connection: host, port, and a user with the "
        "Op role) that effopt's tasks use for pools; make run defines it for its effopt service user.",
    ),
    Option(
        "rate_table",
        "",
        "Rate table (USD per vCPU-hour, GiB-hour and GPU-hour by model) that prices right-sizing plans and "
        "waste; empty uses the one in the package (effopt/data/rate_table.json), derived from a public AWS EC2 price "
        "snapshot (effopt prices build).",
    ),
    Option(
        "templates_dir",
        "",
        "Folder of your own report templates (waste_report.html.j2); empty: the templates in the package.",
    ),
    Option(
        "graph_specs_dir",
        "",
        "Folder of the computation-graph specs (*.yaml) that dags/effopt_graphs.py compiles; empty: the "
        "bundle's include/graphs.",
    ),
    Option(
        "graph_spec_max_bytes",
        "4194304",
        "Largest graph spec accepted, in bytes; a larger one becomes an import error of its own DAG and the others "
        "load.",
        kind="int",
        minimum=1024,
        maximum=256 * 1024 * 1024,
    ),
    Option(
        "graph_spec_time_budget_s",
        "10",
        "Seconds one graph spec may take to validate, optimise and plan before it is refused (the DAG file's "
        "import timeout covers every spec together).",
        kind="float",
        minimum=0.1,
        maximum=3600,
    ),
    Option(
        "graph_plan_cache_dir",
        "{AIRFLOW_HOME}/effopt-graph-cache",
        "Where compiled graph plans are cached, keyed by the spec's SHA-256, so DAG parsing stays cheap.",
        kind="path",
    ),
    Option(
        "graph_storage",
        "file://{AIRFLOW_HOME}/effopt-graph-data",
        "Airflow object-storage base for large graph values when the computation cache is not shared (Redis): "
        "file:// works as installed; s3://conn_id@bucket/prefix and other stores need their fsspec filesystem "
        "(e.g. s3fs) on every worker.",
    ),
    Option(
        "graph_retention_days",
        "7",
        "The daily effopt_maintenance DAG removes a graph DAG run's values from graph_storage once all of them "
        "are older than this many days; 0 keeps them forever.",
        kind="float",
        minimum=0,
        maximum=36500,
    ),
    # -- GPU slot pools and leases (effopt.gpu.inventory, effopt.gpu.leases, the effopt_gpu_pools DAG) ----------
    Option(
        "gpu_inventory",
        "auto",
        "Where effopt learns which GPUs exist: nvml (this host's GPUs through the NVIDIA driver), kubernetes "
        "(nodes' nvidia.com/gpu and MIG resources through kubernetes_conn_id), prometheus (DCGM exporter metrics "
        "through prometheus_conn_id), static (gpu_inventory_file); auto is nvml when a driver answers, else static.",
        kind="choice",
        choices=("auto", "static", "nvml", "kubernetes", "prometheus"),
    ),
    Option(
        "gpu_inventory_file",
        "",
        "The static GPU inventory: a YAML file (nodes with their GPUs) or a CSV node list "
        "(sn,cpu_milli,memory_mib,gpu,model, as the Alibaba trace's); empty: no GPUs ({AIRFLOW_HOME} is expanded).",
    ),
    Option(
        "gpu_pool_unit",
        "gpu",
        "Unit of the GPU pools' slots: gpu (one slot per GPU; a task asking part of a GPU takes one slot) or "
        "milli (1000 slots per GPU; a task asking half a GPU takes 500).",
        kind="choice",
        choices=("gpu", "milli"),
    ),
    Option(
        "gpu_quotas",
        "",
        "Tenant GPU quotas that become pools (effopt_quota_<tenant>[_<model>]), each capped by the GPUs that "
        "exist: e.g. team-a:A100=4,team-b:*=8 (* is any model); empty: none.",
        kind="gpu_quotas",
    ),
    Option(
        "gpu_policy",
        "effopt",
        "Placement policy of GPU leases (effopt.gpu.policies; effopt left the fewest GPUs unallocated in the "
        "placement benchmark).",
        kind="choice",
        choices=("effopt", "fgd", "best-fit", "dot-product", "gpu-packing", "gpu-clustering", "random"),
    ),
    Option(
        "gpu_lease_ttl_s",
        "60",
        "Seconds a GPU lease lives without renewal: a running task renews it every third of that, so the GPUs "
        "of a task that died are leased again at most this long after.",
        kind="float",
        minimum=5,
        maximum=3600,
    ),
    Option(
        "gpu_capacity_poll_s",
        "10",
        "Seconds between two checks of a GPU task waiting (deferred, in the triggerer) for its request to fit.",
        kind="float",
        minimum=1,
        maximum=600,
    ),
    Option(
        "deployment_id",
        "",
        "Name of this Airflow deployment in the effopt:deployment tag of the spot instances it launches (their "
        "ClientTokens, release and cleanup use it too, so deployments sharing an AWS account never touch each "
        "other's instances); empty: a 12-hex-digit sha256 of store_url. Set it when two deployments could have "
        "the same store_url.",
    ),
    Option(
        "spot_price_source",
        "snapshot",
        "Prices of spot placement in Airflow: snapshot (the catalog embedded in the package, no AWS account needed) or "
        "ec2 (live spot prices from describe_spot_price_history through aws_conn_id, on-demand from the snapshot).",
        kind="choice",
        choices=("snapshot", "ec2"),
    ),
    Option(
        "spot_unavailable_minutes",
        "3",
        "Minutes an offering (instance type, zone, capacity type) that failed with a capacity error is left out of "
        "every fleet request, as Karpenter does; 0 never leaves one out.",
        kind="float",
        minimum=0,
        maximum=1440,
    ),
    Option(
        "spot_interruption_poll_s",
        "5",
        "Seconds between two looks for a spot interruption notice or rebalance recommendation (AWS suggests 5).",
        kind="float",
        minimum=1,
        maximum=300,
    ),
    Option(
        "spot_capacity_label",
        "karpenter",
        "Node label that puts pods on spot or on-demand nodes: karpenter (karpenter.sh/capacity-type: spot) or eks "
        "(eks.amazonaws.com/capacityType: SPOT, managed node groups).",
        kind="choice",
        choices=("karpenter", "eks"),
    ),
    Option(
        "spot_pod_grace_period_s",
        "90",
        "terminationGracePeriodSeconds of a pod on spot: the time it has to checkpoint after SIGTERM, inside the "
        "two-minute interruption notice.",
        kind="int",
        minimum=1,
        maximum=119,
    ),
    Option(
        "spot_pod_relaunches",
        "3",
        "Times a SpotKubernetesPodOperator try relaunches its pod after a disruption (the first on spot, the rest "
        "on on-demand) before the try fails; these never spend one of the task's retries.",
        kind="int",
        minimum=0,
        maximum=20,
    ),
)

_BY_KEY = {o.key: o for o in OPTIONS}


#: What a kind's converter returns for a value it does not accept.
_INVALID: Any = object()


def _to_bool(option: Option, value: str, airflow_home: str) -> Any:
    low = value.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    return _INVALID


def _to_choice(option: Option, value: str, airflow_home: str) -> Any:
    return value.lower() if value.lower() in option.choices else _INVALID


def _to_number(option: Option, value: str, airflow_home: str) -> Any:
    """An int or float option: finite and within its minimum and maximum."""
    conv: Callable[[str], Any] = int if option.kind == "int" else float
    try:
        number = conv(value)
    except (ValueError, OverflowError):
        return _INVALID
    if (math.isfinite(number) and (option.minimum is None or number >= option.minimum)
            and (option.maximum is None or number <= option.maximum)):
        return number
    return _INVALID


def _to_schedule(option: Option, value: str, airflow_home: str) -> Any:
    from croniter import croniter  # Airflow's own cron parser

    return value if croniter.is_valid(value) else _INVALID


def _to_gpu_quotas(option: Option, value: str, airflow_home: str) -> Any:
    return parse_gpu_quotas(value)


def _to_path(option: Option, value: str, airflow_home: str) -> Any:
    return os.path.expanduser(value.replace("{AIRFLOW_HOME}", airflow_home)) if value else _INVALID


def _to_secrets(option: Option, value: str, airflow_home: str) -> Any:
    """A comma-separated list of secrets, each at least ``SECRET_MIN_LENGTH`` characters (never echoed)."""
    items = [item.strip() for item in value.split(",")]
    items = [item for item in items if item]
    short = [f"item {i + 1} has {len(item)}" for i, item in enumerate(items) if len(item) < SECRET_MIN_LENGTH]
    if not short:
        return tuple(items)
    # Never echo a secret: name the item and its length only.
    raise ConfigError(
        f"[effopt] {option.key} is invalid: {', '.join(short)} character(s), each needs at least 16 "
        f"(value not shown; set it in airflow.cfg or AIRFLOW__EFFOPT__{option.key.upper()})"
    )


def _to_secret(option: Option, value: str, airflow_home: str) -> Any:
    """A string option marked ``secret``: empty, or at least ``SECRET_MIN_LENGTH`` characters (never echoed)."""
    if not value or len(value) >= SECRET_MIN_LENGTH:
        return value
    raise ConfigError(
        f"[effopt] {option.key} is invalid: it has {len(value)} character(s), it needs at least "
        f"{SECRET_MIN_LENGTH} (value not shown; set it in airflow.cfg or AIRFLOW__EFFOPT__{option.key.upper()})"
    )


def _to_text(option: Option, value: str, airflow_home: str) -> Any:
    return value.replace("{AIRFLOW_HOME}", airflow_home)


_CONVERTERS: dict[str, Callable[[Option, str, str], Any]] = {
    "bool": _to_bool, "choice": _to_choice, "int": _to_number, "float": _to_number, "schedule": _to_schedule,
    "path": _to_path, "secrets": _to_secrets, "gpu_quotas": _to_gpu_quotas,
}


def _convert(option: Option, raw: str, airflow_home: str) -> Any:
    """``raw`` (stripped) converted by its kind's converter (a string kind: the secret or the text one); a
    value the converter does not accept is a ConfigError naming the option and what it accepts."""
    convert = _CONVERTERS.get(option.kind) or (_to_secret if option.secret else _to_text)
    value = convert(option, raw.strip(), airflow_home)
    if value is not _INVALID:
        return value
    raise ConfigError(
        f"[effopt] {option.key} = {mask_url(raw)!r} is invalid; accepted values: {option.accepted()} "
        f"(set it in airflow.cfg or AIRFLOW__EFFOPT__{option.key.upper()})"
    )


@dataclass(frozen=True)
class Settings:
    """Validated ``[effopt]`` settings."""

    store_url: str
    store_timeout_s: float
    task_usage_listener: bool
    cache_backend: str
    cache_dir: str
    cache_secret: str = field(repr=False)  # never in a repr, a traceback or a log line
    cache_secret_fallbacks: tuple[str, ...] = field(repr=False)
    cache_max_bytes: int
    cache_max_entry_bytes: int
    cache_compress_min_bytes: int
    cache_lock_lease_s: float
    cache_lock_timeout_s: float
    cache_timeout_s: float
    redis_conn_id: str
    prometheus_conn_id: str
    kubernetes_conn_id: str
    aws_conn_id: str
    smtp_conn_id: str
    rightsizing_schedule: str
    waste_report_schedule: str
    report_recipients: str
    airflow_api_conn_id: str
    rate_table: str
    templates_dir: str
    graph_specs_dir: str
    graph_spec_max_bytes: int
    graph_spec_time_budget_s: float
    graph_plan_cache_dir: str
    graph_storage: str
    graph_retention_days: float
    gpu_inventory: str
    gpu_inventory_file: str
    gpu_pool_unit: str
    gpu_quotas: tuple[GpuQuota, ...]
    gpu_policy: str
    gpu_lease_ttl_s: float
    gpu_capacity_poll_s: float
    deployment_id: str
    spot_price_source: str
    spot_unavailable_minutes: float
    spot_interruption_poll_s: float
    spot_capacity_label: str
    spot_pod_grace_period_s: int
    spot_pod_relaunches: int

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any], airflow_home: str) -> Settings:
        """Validate a raw ``[effopt]`` section.

        All invalid keys are reported together; unknown keys are rejected so a
        typo (``cache_backed``) does not silently fall back to a default.
        """
        raw = {str(k).lower(): str(v) for k, v in section.items()}
        errors: list[str] = []
        values: dict[str, Any] = {}
        for option in OPTIONS:
            try:
                values[option.key] = _convert(option, raw.get(option.key, option.default), airflow_home)
            except ConfigError as exc:
                errors.append(str(exc))
        unknown = sorted(set(raw) - set(_BY_KEY))
        for key in unknown:
            errors.append(f"[effopt] {key} is not an effopt option; known options: {', '.join(sorted(_BY_KEY))}")
        if errors:
            raise ConfigError("\n".join(errors))
        return cls(**values)

    def describe(self) -> list[tuple[str, str]]:
        """(key, value) pairs for display, secrets masked."""
        out = []
        for option in OPTIONS:
            value = getattr(self, option.key)
            shown = ", ".join(map(str, value)) if isinstance(value, tuple) else mask_url(str(value))
            out.append((option.key, "***" if option.secret and value else shown))
        return out


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")


def mask_url(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``, however malformed the URL.

    A hand-typed password may hold an unquoted ``/``, ``#``, ``?`` or ``@``, which a URL parser reads as the
    path, the fragment or the host: the user information here runs from ``scheme://`` to the last ``@``
    before the next space, so no part of such a password is left in the text.
    """
    out, pos = [], 0
    for m in _SCHEME.finditer(text):
        if m.start() < pos:
            continue
        rest_end = next((i for i in range(m.end(), len(text)) if text[i].isspace() or text[i] in "'\""), len(text))
        at = text.rfind("@", m.end(), rest_end)
        if at == -1:
            continue
        userinfo = text[m.end():at]
        user, colon, _ = userinfo.partition(":")
        out.append(text[pos:m.end()] + (f"{user}:***" if colon else userinfo))
        pos = at
    out.append(text[pos:])
    return "".join(out)


def markdown_table() -> str:
    """The README's configuration table."""
    lines = ["| key | default | accepted | meaning |", "|---|---|---|---|"]
    for o in OPTIONS:
        default = f"`{o.default}`" if o.default else "(empty)"
        lines.append(f"| `{o.key}` | {default} | {o.accepted()} | {o.help} |")
    return "\n".join(lines)
