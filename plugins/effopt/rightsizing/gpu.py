"""Which GPU, or MIG slice of one, holds a container's GPU memory.

Sizes are NVIDIA's published memory per device and per MIG profile (the
``nvidia.com/mig-<profile>`` resource names of the Kubernetes device plugin).
"""

from __future__ import annotations

from dataclasses import dataclass

from effopt.units import GIB


@dataclass(frozen=True)
class GpuOption:
    """A whole GPU or a MIG slice: ``name`` as a person reads it, ``resource`` as Kubernetes requests it."""

    name: str
    resource: str
    memory_bytes: int
    device: str
    mig: bool


def _mig(device: str, profile: str, gib: float) -> GpuOption:
    return GpuOption(f"{device} MIG {profile}", f"nvidia.com/mig-{profile}", int(gib * GIB), device, True)


def _whole(device: str, gib: float) -> GpuOption:
    return GpuOption(device, "nvidia.com/gpu", int(gib * GIB), device, False)


#: Smallest first within each device; memory per MIG profile from NVIDIA's MIG user guide.
GPU_OPTIONS: tuple[GpuOption, ...] = (
    _mig("A100 40GB", "1g.5gb", 4.75), _mig("A100 40GB", "2g.10gb", 9.75), _mig("A100 40GB", "3g.20gb", 19.62),
    _mig("A100 40GB", "4g.20gb", 19.62), _mig("A100 40GB", "7g.40gb", 39.25),
    _mig("A100 80GB", "1g.10gb", 9.5), _mig("A100 80GB", "2g.20gb", 19.5), _mig("A100 80GB", "3g.40gb", 39.25),
    _mig("A100 80GB", "4g.40gb", 39.25), _mig("A100 80GB", "7g.80gb", 79.25),
    _mig("H100 80GB", "1g.10gb", 9.75), _mig("H100 80GB", "1g.20gb", 19.62), _mig("H100 80GB", "2g.20gb", 19.62),
    _mig("H100 80GB", "3g.40gb", 39.5), _mig("H100 80GB", "4g.40gb", 39.5), _mig("H100 80GB", "7g.80gb", 79.25),
    _whole("T4 16GB", 15.0), _whole("L4 24GB", 22.0), _whole("A10G 24GB", 22.0), _whole("A100 40GB", 40.0),
    _whole("A100 80GB", 80.0), _whole("H100 80GB", 80.0), _whole("H200 141GB", 141.0),
)


@dataclass(frozen=True)
class GpuFit:
    """The smallest MIG slice and the smallest whole GPU that hold ``needed_bytes``."""

    needed_bytes: float
    smallest_slice: GpuOption | None
    smallest_gpu: GpuOption | None

    def as_dict(self) -> dict[str, object]:
        def opt(o: GpuOption | None) -> dict[str, object] | None:
            return None if o is None else {"name": o.name, "resource": o.resource, "memory_bytes": o.memory_bytes}

        return {"needed_bytes": self.needed_bytes, "smallest_slice": opt(self.smallest_slice),
                "smallest_gpu": opt(self.smallest_gpu)}


def whole_card(option: GpuOption) -> bool:
    """A MIG profile with all seven compute slices (``7g.*``) takes the whole card: it is no slice of it."""
    return option.mig and option.resource.split("-", 1)[1].startswith("7g.")


def gpu_fit(needed_bytes: float, options: tuple[GpuOption, ...] = GPU_OPTIONS) -> GpuFit:
    """Smallest slice / GPU whose memory is at least ``needed_bytes`` (None when nothing is big enough).

    A slice is a MIG profile that leaves part of its card to others; a ``7g`` profile, which takes the
    whole card, is never offered as one (the whole GPU is).
    """
    if not needed_bytes >= 0:
        raise ValueError(f"GPU memory needed must be a non-negative number, got {needed_bytes!r}")
    fitting = sorted((o for o in options if o.memory_bytes >= needed_bytes), key=lambda o: (o.memory_bytes, o.name))
    return GpuFit(
        needed_bytes,
        next((o for o in fitting if o.mig and not whole_card(o)), None),
        next((o for o in fitting if not o.mig), None),
    )
