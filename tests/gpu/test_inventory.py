"""GPU inventories: the static file (YAML and the Alibaba CSV), NVML through a stand-in, DCGM metrics in a real
Prometheus, and ``auto``."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from effopt.gpu.inventory import (
    Inventory,
    InventoryError,
    InventoryUnavailable,
    NvmlInventory,
    PrometheusInventory,
    StaticInventory,
    normalize_model,
    read_auto,
)

MIB = 1024 * 1024


# -- static ---------------------------------------------------------------------------------------------------
def test_yaml_counts_lists_mig_slices_and_running_work(tmp_path):
    path = tmp_path / "gpus.yaml"
    path.write_text("""
nodes:
  - name: t4-box
    cpu_milli: 16000
    memory_mib: 65536
    gpus: 2
    model: T4
    gpu_memory_mib: 15360
  - name: a100-0
    gpus:
      - {index: 0, model: A100-SXM4-40GB, memory_mib: 40960, uuid: GPU-aaa}
      - {index: 1, model: A100-SXM4-40GB, memory_mib: 40960, mig: [3g.20gb, 3g.20gb]}
    running:
      - {name: notebook, gpus: [0], gpu_milli: 500}
  - name: cpu-only
    gpus: 0
""")
    inv = StaticInventory(path).read()
    assert [n.name for n in inv.nodes] == ["t4-box", "a100-0"]  # no GPU, not in the inventory
    assert inv.models() == {"A100-SXM4-40GB": 1, "T4": 2, "mig-3g.20gb": 2}
    assert inv.gpu_count == 5
    assert inv.describe() == "5 GPUs on 2 nodes: 1 x A100-SXM4-40GB, 2 x T4, 2 x mig-3g.20gb"
    a100 = inv.node("a100-0")
    assert a100.units() == {"A100-SXM4-40GB": [(0, "GPU-aaa")], "mig-3g.20gb": [(0, ""), (1, "")]}
    assert a100.memory_of("mig-3g.20gb") == 20 * 1024  # from the profile name
    assert a100.running[0].gpus == (0,) and a100.running[0].gpu_milli == 500
    t4 = inv.node("t4-box")
    assert (t4.cpu_milli, t4.memory_mib, t4.gpus[1].memory_total_mib) == (16000, 65536, 15360)
    assert Inventory.from_dict(inv.to_dict()).to_dict() == inv.to_dict()


@pytest.mark.parametrize(("text", "message"), [
    ("nodes:\n  - {name: a, gpus: 2}\n", "node 'a': model must be a non-empty string"),
    ("nodes:\n  - {name: a, gpus: 1, model: T4}\n  - {name: a, gpus: 1, model: T4}\n",
     "node 'a': the name appears twice"),
    ("nodes:\n  - {name: a, gpu: 1, model: T4}\n", "node 'a': unknown key 'gpu'"),
    ("nodes:\n  - {name: a, gpus: -1, model: T4}\n", "node 'a': gpus must be a whole number >= 0, got -1"),
    ("nodes:\n  - {name: a, gpus: [{model: T4, index: 0}, {model: T4, index: 0}]}\n", "GPU index 0 appears twice"),
    ("nodes:\n  - {name: a, gpus: 1, model: T4, running: [{name: x, gpu_milli: 1500}]}\n",
     "node 'a', running 1: gpu_milli is thousandths of one GPU"),
    ("gpus: 3\n", "unknown top-level key 'gpus'"),
])
def test_a_bad_yaml_names_the_node_and_the_key(tmp_path, text, message):
    path = tmp_path / "gpus.yaml"
    path.write_text(text)
    with pytest.raises(InventoryError) as err:
        StaticInventory(path).read()
    assert message in str(err.value) and str(path) in str(err.value)


def test_no_file_is_no_gpus_and_a_missing_file_is_an_error(tmp_path):
    inv = StaticInventory(None).read()
    assert inv.empty and inv.describe() == "no GPUs in the inventory"
    assert inv.detail == "[effopt] gpu_inventory_file is not set"
    with pytest.raises(InventoryError, match="no such file"):
        StaticInventory(tmp_path / "nope.yaml").read()


def test_the_alibaba_node_list_is_a_static_inventory(data_dir):
    inv = StaticInventory(data_dir / "openb_node_list_gpu_node.csv").read()
    assert len(inv.nodes) == 1213 and inv.gpu_count == 6212  # the published cluster


def test_a_small_csv_keeps_its_gpu_nodes_and_a_bad_row_is_named(tmp_path):
    path = tmp_path / "nodes.csv"
    path.write_text("sn,cpu_milli,memory_mib,gpu,model\nn0,64000,262144,2,P100\nn1,32000,131072,0,\n")
    inv = StaticInventory(path).read()
    assert [n.name for n in inv.nodes] == ["n0"] and inv.models() == {"P100": 2}
    path.write_text("sn,cpu_milli,memory_mib,gpu,model\nn0,64000,262144,two,P100\n")
    with pytest.raises(InventoryError, match="row 1, column 'gpu'"):
        StaticInventory(path).read()


def test_model_names_agree_between_the_driver_and_the_node_labels():
    assert normalize_model("NVIDIA A100-SXM4-40GB") == "A100-SXM4-40GB"
    assert normalize_model("NVIDIA-A100-SXM4-40GB") == "A100-SXM4-40GB"
    assert normalize_model(b"Tesla T4") == "Tesla-T4"


# -- NVML -----------------------------------------------------------------------------------------------------
class _Err(Exception):
    pass


def fake_nvml(devices=(), init_error: str | None = None):  # noqa: C901 (one small function per NVML call)
    """A stand-in for the pynvml functions NvmlInventory calls (no driver on this machine): each device is a
    dict with name, uuid, total/used MiB, util, processes and optional MIG slices (name, uuid, total MiB)."""
    calls: list[str] = []
    nv = types.SimpleNamespace(NVMLError=_Err, NVML_DEVICE_MIG_ENABLE=1, calls=calls)
    errors = {n: type(n, (_Err,), {}) for n in ("NVMLError_LibraryNotFound", "NVMLError_NotSupported",
                                                "NVMLError_NotFound", "NVMLError_Unknown")}
    nv.__dict__.update(errors)
    handles = {}
    for i, d in enumerate(devices):
        handles[("gpu", i)] = d
        for j, s in enumerate(d.get("mig", [])):
            handles[("mig", i, j)] = s

    def record(fn):
        def wrapper(*args):
            calls.append(fn.__name__)
            return fn(*args)
        wrapper.__name__ = fn.__name__
        return wrapper

    @record
    def nvmlInit():
        if init_error:
            raise errors[init_error]("NVML Shared Library Not Found")

    @record
    def nvmlShutdown():
        pass

    @record
    def nvmlDeviceGetCount():
        return len(devices)

    @record
    def nvmlDeviceGetHandleByIndex(i):
        return ("gpu", i)

    @record
    def nvmlDeviceGetName(h):
        return handles[h]["name"].encode()

    @record
    def nvmlDeviceGetUUID(h):
        return handles[h]["uuid"]

    @record
    def nvmlDeviceGetMemoryInfo(h):
        d = handles[h]
        return types.SimpleNamespace(total=d["total"] * MIB, used=d.get("used", 0) * MIB, free=0)

    @record
    def nvmlDeviceGetUtilizationRates(h):
        if handles[h].get("util") is None:
            raise errors["NVMLError_NotSupported"]("Not Supported")
        return types.SimpleNamespace(gpu=handles[h]["util"], memory=0)

    @record
    def nvmlDeviceGetComputeRunningProcesses(h):
        return [types.SimpleNamespace(pid=p, usedGpuMemory=m * MIB) for p, m in handles[h].get("processes", [])]

    @record
    def nvmlDeviceGetMigMode(h):
        if "mig" not in handles[h]:
            raise errors["NVMLError_NotSupported"]("Not Supported")
        return [1, 1]

    @record
    def nvmlDeviceGetMaxMigDeviceCount(h):
        return 7

    @record
    def nvmlDeviceGetMigDeviceHandleByIndex(h, j):
        if ("mig", h[1], j) not in handles:
            raise errors["NVMLError_NotFound"]("Not Found")
        return ("mig", h[1], j)

    for fn in (nvmlInit, nvmlShutdown, nvmlDeviceGetCount, nvmlDeviceGetHandleByIndex, nvmlDeviceGetName,
               nvmlDeviceGetUUID, nvmlDeviceGetMemoryInfo, nvmlDeviceGetUtilizationRates,
               nvmlDeviceGetComputeRunningProcesses, nvmlDeviceGetMigMode, nvmlDeviceGetMaxMigDeviceCount,
               nvmlDeviceGetMigDeviceHandleByIndex):
        setattr(nv, fn.__name__, fn)
    return nv


def test_nvml_reads_devices_memory_utilisation_processes_and_mig_slices():
    nv = fake_nvml([
        {"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-1111", "total": 81559, "used": 1024, "util": 37,
         "processes": [(4242, 1000)]},
        {"name": "NVIDIA A100-SXM4-40GB", "uuid": "GPU-2222", "total": 40960, "used": 0, "util": None,
         "mig": [{"name": "NVIDIA A100-SXM4-40GB MIG 3g.20gb", "uuid": "MIG-aaaa", "total": 19968},
                 {"name": "NVIDIA A100-SXM4-40GB MIG 1g.5gb", "uuid": "MIG-bbbb", "total": 4864}]},
    ])
    inv = NvmlInventory(nv, node_name="gpu-host").read()
    node = inv.node("gpu-host")
    h100, a100 = node.gpus
    assert (h100.model, h100.uuid, h100.memory_total_mib, h100.memory_used_mib, h100.utilization_pct) == \
        ("H100-80GB-HBM3", "GPU-1111", 81559, 1024, 37.0)
    assert h100.processes == ((4242, 1000),) and not h100.mig_enabled
    assert a100.mig_enabled and a100.utilization_pct is None
    assert [(s.profile, s.parent, s.uuid, s.memory_total_mib) for s in node.mig] == \
        [("3g.20gb", 1, "MIG-aaaa", 19968), ("1g.5gb", 1, "MIG-bbbb", 4864)]
    assert inv.models() == {"H100-80GB-HBM3": 1, "mig-1g.5gb": 1, "mig-3g.20gb": 1}  # a MIG GPU is leased by slice
    assert nv.calls[0] == "nvmlInit" and nv.calls[-1] == "nvmlShutdown"


def test_nvml_without_a_driver_says_so_and_auto_falls_back_to_the_static_file(tmp_path):
    nv = fake_nvml(init_error="NVMLError_LibraryNotFound")
    with pytest.raises(InventoryUnavailable) as err:
        NvmlInventory(nv, node_name="h").read()
    assert "no NVIDIA driver answers on h (NVMLError_LibraryNotFound" in str(err.value) and not err.value.transient
    path = tmp_path / "gpus.yaml"
    path.write_text("nodes: [{name: box, gpus: 2, model: T4}]\n")
    inv = read_auto(path, nv)
    assert inv.source == "static" and inv.gpu_count == 2
    assert inv.detail.startswith("auto: NVML: no NVIDIA driver answers") and str(path) in inv.detail
    empty = read_auto(None, nv)
    assert empty.empty and "gpu_inventory_file is not set" in empty.detail


def test_auto_uses_nvml_when_a_driver_answers():
    inv = read_auto(None, fake_nvml([{"name": "Tesla T4", "uuid": "GPU-3", "total": 15360, "util": 0}]))
    assert inv.source == "nvml" and inv.models() == {"Tesla-T4": 1}


def test_the_real_pynvml_here_has_no_driver():
    """No GPU machine is lent to this project: the real library must say so, not crash."""
    with pytest.raises(InventoryUnavailable, match="no NVIDIA driver"):
        NvmlInventory(node_name="here").read()


# -- DCGM exporter metrics in Prometheus -----------------------------------------------------------------------
def _dcgm(at: float) -> str:
    lines = []
    series = [
        ('Hostname="node-a",gpu="0",UUID="GPU-a0",modelName="NVIDIA A100-SXM4-80GB"', 1000, 80000, 55),
        ('Hostname="node-a",gpu="1",UUID="GPU-a1",modelName="NVIDIA A100-SXM4-80GB"', 0, 81000, 0),
        ('Hostname="node-b",gpu="0",UUID="GPU-b0",modelName="NVIDIA L4"', 20000, 2000, 93),
        ('Hostname="node-b",gpu="1",UUID="MIG-b1",modelName="NVIDIA A100-SXM4-40GB",GPU_I_PROFILE="3g.20gb",'
         'GPU_I_ID="1"', 100, 19900, None),
    ]
    for metric, column in (("DCGM_FI_DEV_FB_USED", 1), ("DCGM_FI_DEV_FB_FREE", 2), ("DCGM_FI_DEV_GPU_UTIL", 3)):
        lines.append(f"# TYPE {metric} gauge")
        for labels, *values in series:
            value = values[column - 1]
            if value is not None:
                lines.append(f"{metric}{{{labels}}} {value} {at:.0f}")
    return "\n".join(lines) + "\n# EOF\n"


def test_dcgm_metrics_in_a_real_prometheus(prometheus_factory):
    import time

    from effopt.metrics.prometheus import PrometheusSource

    at = time.time() - 7200
    server = prometheus_factory(_dcgm(at))
    inv = PrometheusInventory(PrometheusSource(server.url, start=at - 600, end=at + 30)).read()
    a, b = inv.node("node-a"), inv.node("node-b")
    assert [(g.index, g.model, g.uuid, g.memory_total_mib, g.memory_used_mib, g.utilization_pct) for g in a.gpus] == \
        [(0, "A100-SXM4-80GB", "GPU-a0", 81000, 1000, 55.0), (1, "A100-SXM4-80GB", "GPU-a1", 81000, 0, 0.0)]
    assert [(g.index, g.model, g.mig_enabled) for g in b.gpus] == [(0, "L4", False), (1, "A100-SXM4-40GB", True)]
    assert [(s.profile, s.parent, s.uuid, s.memory_total_mib) for s in b.mig] == [("3g.20gb", 1, "MIG-b1", 20000)]
    assert inv.models() == {"A100-SXM4-80GB": 2, "L4": 1, "mig-3g.20gb": 1}
    selected = PrometheusInventory(PrometheusSource(server.url, start=at - 600, end=at + 30),
                                   selector='Hostname="node-b"').read()
    assert [n.name for n in selected.nodes] == ["node-b"]


def test_an_unreachable_prometheus_is_transient():
    from effopt.metrics.prometheus import PrometheusSource
    from tests.services import free_port

    with pytest.raises(InventoryUnavailable) as err:
        PrometheusInventory(PrometheusSource(f"http://127.0.0.1:{free_port()}", timeout_s=2)).read()
    assert err.value.transient


def test_inventory_files_need_no_airflow():
    """The inventory package is plain Python (tests/test_architecture.py checks the imports)."""
    assert (Path(__file__).resolve().parents[2] / "plugins" / "effopt" / "gpu" / "inventory" / "__init__.py").is_file()
