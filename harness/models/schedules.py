"""VCQ codebook-size schedules and the information-capacity bounds of the VCQ paper (Sec. 2-3).

``K_t = round(K_min + (K_max - K_min) * f(t / (T - 1)))`` for t = 0..T-1 with f linear ``s``, cosine
``1 - cos(pi s / 2)`` or power ``s ** p``; ``constant`` is K_t = K_max (forms assumed, checked
against the paper's Table 2 averages). A training set of N samples holds at most log2 N bits, so a
constant codebook of size K exhausts it after t* = ceil(log2 N / log2 K) positions; for a variable
schedule t* is the first position at which the cumulative capacity sum_t log2 K_t reaches log2 N.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("constant", "linear", "cosine", "power")


def codebook_schedule(kind: str, k_min: int, k_max: int, length: int, power: float = 2.5) -> tuple[int, ...]:
    if kind not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, not {kind!r}")
    if not 2 <= k_min <= k_max:
        raise ValueError(f"need 2 <= k_min <= k_max (got {k_min}, {k_max})")
    if kind == "constant":
        return (k_max,) * length
    f = {"linear": lambda s: s, "cosine": lambda s: 1 - math.cos(math.pi * s / 2),
         "power": lambda s: s ** power}[kind]
    return tuple(int(round(k_min + (k_max - k_min) * f(t / max(1, length - 1)))) for t in range(length))


def constant_cliff(dataset_size: int, codebook_size: int) -> int:
    """t* = ceil(log2 N / log2 K): positions after which a constant codebook has no data entropy left."""
    return math.ceil(math.log2(dataset_size) / math.log2(codebook_size))


def capacity_cliff(sizes: tuple[int, ...], dataset_size: int) -> int | None:
    """First (1-based) position where sum_t log2 K_t >= log2 N; None if the sequence never gets there."""
    budget, total = math.log2(dataset_size), 0.0
    for t, k in enumerate(sizes, 1):
        total += math.log2(k)
        if total >= budget - 1e-12:
            return t
    return None


@dataclass(frozen=True)
class ScheduleStats:
    average_codebook_size: float
    bits_per_image: float
    bits_per_pixel: float
    capacity_cliff: int | None      # t* for the dataset size, when given


def schedule_stats(sizes: tuple[int, ...], image_size: int, dataset_size: int | None = None) -> ScheduleStats:
    bits = sum(math.log2(k) for k in sizes)
    return ScheduleStats(sum(sizes) / len(sizes), bits, bits / (image_size * image_size),
                         capacity_cliff(sizes, dataset_size) if dataset_size else None)


# VCQ paper, Table 2 (K_min 2, K_max 16384, T = 256, ImageNet-1k's N = 1,281,167; Cosine-L: K_max 11264):
# its t* column. Prop. 1's capacity bound (``capacity_cliff``) reproduces the constant and linear rows but
# gives 9 and 12 for cosine and power (and 9 for Cosine-L), though the schedules' average K and bits per
# pixel equal the table's; the paper does not say how those rows were computed.
TABLE2_T_STAR = {"constant": 2, "linear": 4, "cosine": 5, "power": 6}
TABLE2_SETTING = {"k_min": 2, "k_max": (16384, 11264), "length": 256, "dataset_size": 1281167}
