"""Kernel tuning with MetaSchedule and int8 tensor intrinsics.

``workloads``: :class:`ConvShape` and the conv2d TIR workloads (int8 packed layouts).
``rules``: search spaces with the VNNI / dp4a / int8-tensor-core rules.
``conv``: :func:`tune_conv`, :func:`emit_source`, :func:`apply_database` and the database
helpers (target check, corrupt-line handling, resume without duplicates).

Importing this package does not import TVM; the functions do.
"""

from .conv import (
    ApplyReport,
    CannedRunner,
    DatabaseTargetError,
    DatabaseWarning,
    TuneResult,
    apply_database,
    check_database_target,
    emit_source,
    open_database,
    sanitize_database,
    target_key,
    tune_conv,
    tuning_result,
)
from .rules import normalize_target, space_for, target_summary
from .workloads import ConvShape, ConvShapeError, ConvWorkload, conv_relax_module, conv_workload

__all__ = [
    "ApplyReport",
    "CannedRunner",
    "ConvShape",
    "ConvShapeError",
    "ConvWorkload",
    "DatabaseTargetError",
    "DatabaseWarning",
    "TuneResult",
    "apply_database",
    "check_database_target",
    "conv_relax_module",
    "conv_workload",
    "emit_source",
    "normalize_target",
    "open_database",
    "sanitize_database",
    "space_for",
    "target_key",
    "target_summary",
    "tune_conv",
    "tuning_result",
]
