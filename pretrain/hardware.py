"""GPU figures both benchmarks use, in one place: dense bf16 peaks, memory bandwidth, and how much
slower Kaggle's L4 is than the GPU a measurement was taken on.

The figures are the vendors' data-sheet numbers (bf16 tensor-core rate without sparsity; memory
bandwidth). A GPU is recognised from its device name and, for an H100 whose name does not say
which, from its number of streaming multiprocessors (132 on SXM5 and NVL, 114 on PCIe).

Projecting a measured time to an L4: a run limited by arithmetic scales with the ratio of bf16
rates (an H100 SXM is about 8x an L4), one limited by memory bandwidth with the ratio of
bandwidths (about 11x). Eager PyTorch at this model's size moves more bytes than it computes, so
``kaggle_projection`` takes the larger of the two ratios: a projection that errs long, not short.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from pretrain.kaggle_facts import KAGGLE_GPUS, KAGGLE_TASKS


@dataclass(frozen=True)
class GpuSpec:
    name: str
    bf16_tflops: float  # dense bf16 tensor-core peak, TFLOP/s
    bandwidth_gbs: float  # memory bandwidth, GB/s


H100_SXM = GpuSpec("H100 SXM", 989.0, 3350.0)
H100_PCIE = GpuSpec("H100 PCIe", 756.0, 2000.0)
L4 = GpuSpec("L4", 121.0, 300.0)

# Matched in order against torch.cuda.get_device_name(); the first pattern that matches wins.
GPU_SPECS: tuple[tuple[str, GpuSpec], ...] = (
    (r"H100.*PCIe", H100_PCIE),
    (r"H100.*NVL", GpuSpec("H100 NVL", 835.0, 3900.0)),
    (r"H100", H100_SXM),  # "NVIDIA H100 80GB HBM3" is the SXM part (see gpu_spec for the SM check)
    (r"H200", GpuSpec("H200", 989.0, 4800.0)),
    (r"A100.*80GB", GpuSpec("A100 80GB", 312.0, 2039.0)),
    (r"A100", GpuSpec("A100 40GB", 312.0, 1555.0)),
    (r"\bL4\b", L4),  # not L40 / L40S
)
H100_PCIE_SMS = 114


def spec_for_name(device_name: str, multiprocessors: int | None = None) -> GpuSpec | None:
    """The data-sheet figures of a GPU from its name (and SM count, for an H100); None if unknown."""
    for pattern, spec in GPU_SPECS:
        if re.search(pattern, device_name):
            if spec is H100_SXM and multiprocessors == H100_PCIE_SMS:
                return H100_PCIE
            return spec
    return None


def gpu_spec(device: torch.device) -> GpuSpec | None:
    """The figures of a CUDA device (None on a CPU or an unknown GPU)."""
    if device.type != "cuda":
        return None
    properties = torch.cuda.get_device_properties(device)
    return spec_for_name(properties.name, properties.multi_processor_count)


def peak_tflops_for(device_name: str) -> float | None:
    """Dense bf16 peak of a GPU by name, for MFU."""
    spec = spec_for_name(device_name)
    return spec.bf16_tflops if spec else None


def l4_ratios(spec: GpuSpec) -> dict[str, float]:
    """How many times slower an L4 is than ``spec``: by compute, by bandwidth, and the larger."""
    compute = spec.bf16_tflops / L4.bf16_tflops
    bandwidth = spec.bandwidth_gbs / L4.bandwidth_gbs
    return {"compute": compute, "bandwidth": bandwidth, "used": max(compute, bandwidth)}


def kaggle_hours(seconds_per_task: float, slowdown: float) -> float:
    """Hours for Kaggle's hidden tasks on its L4s, from seconds per task on a measured GPU."""
    return seconds_per_task * slowdown * KAGGLE_TASKS / KAGGLE_GPUS / 3600


def kaggle_projection(spec: GpuSpec, seconds_per_task: float) -> dict[str, float]:
    """Kaggle's hidden tasks on its L4s from seconds per task measured on ``spec``: the hours, and
    the slowdowns by compute and by bandwidth (the larger one is ``used``)."""
    ratios = l4_ratios(spec)
    return {"hours": kaggle_hours(seconds_per_task, ratios["used"]), "seconds_per_task": seconds_per_task, **ratios}
