"""The harness's default schedules: what every kernel no tuning database covers is built with.

``analysis``: the block analysis and helpers the schedules share; ``int8_conv``: the analysis and
operand packing of the 8-bit convs; ``intrinsics``: the tensor intrinsics (VNNI, vpmaddwd, dp4a)
and which a target has; ``cpu``: the llvm family (register-tiled conv / dense / pool, vectorized
elementwise kernels, 8-bit convs on the CPU's exact dot product); ``cuda``: the dp4a schedule of
the int8 convs on CUDA.

A *schedule family* (:class:`ScheduleFamily`) is what the build pipeline and the search need of
one: which targets it serves, a kernel's default schedule (and the name of the rule that made
it), the sampled version that is its search space, and its module passes. :func:`schedule_family`
picks the family for a target from the config's ``build.schedules`` switches
(:class:`ScheduleOptions`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Protocol


@dataclass(frozen=True)
class ScheduleOptions:
    """Which of the harness's schedule families a build uses (the config's ``build.schedules``)."""

    cpu_default: bool = True  # llvm: default CPU schedules (off: TVM's own llvm pipeline, scalar loops)
    cpu_int8_dot: bool = True  # llvm: 8-bit convs on the CPU's exact dot product (off: the plain schedule)
    cpu_int8_depthwise: bool = True  # llvm: 8-bit depthwise convs vectorized across channels (off: the plain one)
    cpu_int8_amx: bool = True  # llvm with amx-int8: 8-bit convs on AMX tiles (off: the dot product / plain)
    cpu_int8_blocked: bool = True  # llvm without AMX: 8-bit tensors between int8 convs stored NCHW8c (off: NCHW)
    cpu_int8_winograd: bool = True  # llvm without VNNI, blocked: 8-bit 3x3 stride-1 convs as exact integer Winograd
    cpu_int8_winograd_tile: int = 4  # its outputs per tile side: F(4x4, 3x3) or F(2x2, 3x3)
    cuda_int8_dp4a: bool = True  # cuda: 8-bit convs on __dp4a (off: TVM's GPU schedules)
    # not switches: the most bits of the module's int8 weights of ungrouped and of grouped convs
    # (the quantizer's, set by the build: RunConfig.schedule_options); 7 or fewer lets CPUs
    # without VNNI multiply uint8 data on vpmaddubsw (exact then)
    int8_weight_bits: int = 8
    int8_grouped_weight_bits: int = 8

    @classmethod
    def none(cls) -> "ScheduleOptions":
        """Every family off: what a build falls back to when one with the families fails."""
        return cls(**{f.name: False for f in dataclasses.fields(cls) if f.type in (bool, "bool")})

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def weight_bits(self):
        """The weight bits per kind of conv (:class:`harness.schedules.intrinsics.WeightBits`)."""
        from .intrinsics import WeightBits  # pylint: disable=import-outside-toplevel

        return WeightBits(dense=self.int8_weight_bits, grouped=self.int8_grouped_weight_bits)


class ScheduleFamily(Protocol):  # pylint: disable=too-few-public-methods
    """What the build pipeline and the search use of a family of default schedules."""

    name: str

    def applies_to(self, target) -> bool: ...

    def graph_passes(self, target) -> list:
        """Relax passes the build runs before legalizing, for this family's schedules."""

    def default_schedule(self, func, target, name: str = "func"):
        """``(Schedule, kind)`` of a kernel, or ``(None, None)`` where the family has none."""

    def sample_schedule(self, sch, target):
        """The default schedule with its tile sizes sampled (a MetaSchedule ``ScheduleFn``: `sch`
        in place and None, or a list of design spaces)."""

    def schedule_passes(self, target, scheduled_by: Optional[dict] = None) -> list: ...


def schedule_family(target, options: Optional[ScheduleOptions] = None) -> Optional[ScheduleFamily]:
    """The family of default schedules that serves `target` with `options` (default: all on):
    :class:`~harness.schedules.cpu.CPUSchedules` on llvm, :class:`~harness.schedules.cuda.CUDASchedules`
    on CUDA; None where the family is switched off or the target has none."""
    from .cpu import CPUSchedules  # pylint: disable=import-outside-toplevel
    from .cuda import CUDASchedules  # pylint: disable=import-outside-toplevel

    options = options or ScheduleOptions()
    if target is None:
        return None
    kind = target.kind.name
    if kind == "llvm" and options.cpu_default:
        return CPUSchedules(int8_dot=options.cpu_int8_dot, int8_depthwise=options.cpu_int8_depthwise,
                            int8_amx=options.cpu_int8_amx, weight_bits=options.weight_bits(),
                            int8_blocked=options.cpu_int8_blocked, int8_winograd=options.cpu_int8_winograd,
                            int8_winograd_tile=options.cpu_int8_winograd_tile)
    if kind == "cuda" and options.cuda_int8_dp4a:
        return CUDASchedules()
    return None


__all__ = ["ScheduleFamily", "ScheduleOptions", "schedule_family"]
