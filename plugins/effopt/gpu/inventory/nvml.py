"""This host's GPUs through NVML (nvidia-ml-py), the library ``nvidia-smi`` uses.

Calls, in order: ``nvmlInit``; ``nvmlDeviceGetCount``; per device ``nvmlDeviceGetHandleByIndex``,
``nvmlDeviceGetName``, ``nvmlDeviceGetUUID``, ``nvmlDeviceGetMemoryInfo`` (``.total`` / ``.used`` bytes),
``nvmlDeviceGetUtilizationRates`` (``.gpu`` percent), ``nvmlDeviceGetComputeRunningProcesses`` (``.pid``,
``.usedGpuMemory``) and ``nvmlDeviceGetMigMode``; for a GPU in MIG mode ``nvmlDeviceGetMaxMigDeviceCount``
and ``nvmlDeviceGetMigDeviceHandleByIndex`` with each slice's name (``... MIG 3g.20gb``), UUID and memory;
``nvmlShutdown``. A host without a driver raises :class:`InventoryUnavailable` saying so
(``NVMLError_LibraryNotFound``, ``NVMLError_DriverNotLoaded``), which ``gpu_inventory = auto`` takes as "no
NVML here". Compute processes are listed with their GPU (they are not reserved: a task's own process is one).

No machine here has a driver: the tests run this module against a stand-in for those ``pynvml`` functions.
"""

from __future__ import annotations

import os
import re
import socket
from typing import Any

from effopt.gpu.inventory.base import (
    GpuDevice,
    Inventory,
    InventoryNode,
    InventorySource,
    InventoryUnavailable,
    MigSlice,
    normalize_model,
)

MIB = 1024 * 1024
_NO_DRIVER = ("NVMLError_LibraryNotFound", "NVMLError_DriverNotLoaded", "NVMLError_NoPermission")
_MIG_PROFILE = re.compile(r"MIG\s+(\S+)")


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def host_memory_mib() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MIB
    except (ValueError, OSError):
        return 0


class NvmlInventory(InventorySource):
    kind = "nvml"

    def __init__(self, nvml: Any = None, node_name: str | None = None) -> None:
        self._nvml = nvml
        self.node_name = node_name or socket.gethostname()

    def _module(self) -> Any:
        if self._nvml is None:
            try:
                import pynvml
            except ImportError as exc:  # nvidia-ml-py is a runtime requirement; a trimmed install may lack it
                raise InventoryUnavailable(f"NVML: nvidia-ml-py is not installed ({exc})", transient=False) from exc
            self._nvml = pynvml
        return self._nvml

    def read(self) -> Inventory:
        nv = self._module()
        try:
            nv.nvmlInit()
        except nv.NVMLError as exc:
            name = type(exc).__name__
            if name in _NO_DRIVER:
                raise InventoryUnavailable(f"NVML: no NVIDIA driver answers on {self.node_name} ({name}: {exc})",
                                           transient=False) from exc
            raise InventoryUnavailable(f"NVML could not start on {self.node_name} ({name}: {exc})",
                                       transient=True) from exc
        try:
            version = self._optional(nv, nv.nvmlSystemGetDriverVersion) if hasattr(nv, "nvmlSystemGetDriverVersion") \
                else None
            gpus, mig = [], []
            for i in range(nv.nvmlDeviceGetCount()):
                device, slices = self._device(nv, i)
                gpus.append(device)
                mig += slices
        except nv.NVMLError as exc:
            raise InventoryUnavailable(f"NVML failed on {self.node_name}: {type(exc).__name__}: {exc}",
                                       transient=True) from exc
        finally:
            try:
                nv.nvmlShutdown()
            except nv.NVMLError:
                pass
        node = InventoryNode(self.node_name, tuple(gpus), tuple(mig), cpu_milli=(os.cpu_count() or 0) * 1000,
                             memory_mib=host_memory_mib())
        detail = f"NVML on {self.node_name}" + (f", driver {_text(version)}" if version else "")
        return Inventory.of([node], self.kind, detail)

    @staticmethod
    def _optional(nv: Any, fn: Any, *args: Any) -> Any:
        """A query some GPUs do not support (``NVMLError_NotSupported``): None then."""
        try:
            return fn(*args)
        except nv.NVMLError:
            return None

    def _device(self, nv: Any, i: int) -> tuple[GpuDevice, list[MigSlice]]:
        handle = nv.nvmlDeviceGetHandleByIndex(i)
        model = normalize_model(nv.nvmlDeviceGetName(handle))
        uuid = _text(nv.nvmlDeviceGetUUID(handle))
        mem = nv.nvmlDeviceGetMemoryInfo(handle)
        util = self._optional(nv, nv.nvmlDeviceGetUtilizationRates, handle)
        procs = self._optional(nv, nv.nvmlDeviceGetComputeRunningProcesses, handle) or []
        processes = tuple((int(p.pid), int((p.usedGpuMemory or 0) // MIB)) for p in procs)
        mode = self._optional(nv, nv.nvmlDeviceGetMigMode, handle)
        enabled = bool(mode) and int(mode[0]) == int(getattr(nv, "NVML_DEVICE_MIG_ENABLE", 1))
        slices = []
        if enabled:
            for j in range(nv.nvmlDeviceGetMaxMigDeviceCount(handle)):
                try:
                    mh = nv.nvmlDeviceGetMigDeviceHandleByIndex(handle, j)
                except nv.NVMLError:  # NVMLError_NotFound: no slice at this position
                    continue
                name = _text(nv.nvmlDeviceGetName(mh))
                m = _MIG_PROFILE.search(name)
                profile = m.group(1) if m else name
                slices.append(MigSlice(profile, i, _text(nv.nvmlDeviceGetUUID(mh)),
                                       int(nv.nvmlDeviceGetMemoryInfo(mh).total // MIB)))
        device = GpuDevice(i, model, uuid, int(mem.total // MIB), int(mem.used // MIB),
                           None if util is None else float(util.gpu), enabled, processes)
        return device, slices
