"""Kernel tuning with MetaSchedule, and nothing else (the default schedules live in
:mod:`harness.schedules`, the build pipeline in :mod:`harness.build`).

``database``: tuning databases (target check, corrupt-line handling, the records a build reads);
``spaces``: the search spaces; ``search``: ``harness tune`` (:func:`~harness.tune.search.tune_model`);
``conv``: ``harness tune-conv`` (one conv shape as the kernel a model build compiles);
``runners``: local / RPC measurement and the candidates' build function; ``testing``: a canned
runner for tests.

Importing this package does not import TVM; the functions do.
"""

from .conv import ConvShape, ConvShapeError, TuneResult, conv_model, conv_work_dir, emit_source, tune_conv, tuning_result
from .database import (DatabaseTargetError, DatabaseWarning, check_database_target, conv_databases, load_records,
                       open_database, sanitize_database)

__all__ = [
    "ConvShape", "ConvShapeError", "DatabaseTargetError", "DatabaseWarning", "TuneResult", "check_database_target",
    "conv_databases", "conv_model", "conv_work_dir", "emit_source", "load_records", "open_database",
    "sanitize_database", "tune_conv", "tuning_result",
]
