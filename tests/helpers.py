"""Shared test helpers."""
import numpy as np


def rel_err(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |a - e| / max |e|: the relative error used for logits."""
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12))


def int8_convs(mod) -> list:
    """(groups, data dtype, largest |weight code|) of each int8 conv of `mod`'s main, in graph order."""
    import tvm  # pylint: disable=import-outside-toplevel
    from tvm import relax  # pylint: disable=import-outside-toplevel

    found = []
    for blk in mod["main"].body.blocks:
        for b in blk.bindings:
            v = b.value
            if isinstance(v, relax.Call) and v.op.name == "relax.nn.conv2d" and isinstance(v.args[1], tvm.ir.expr.Constant):
                w = v.args[1].value.numpy()
                if w.dtype == np.int8:
                    found.append((int(v.attrs.groups), str(v.args[0].ty.dtype), int(np.abs(w).max())))
    return found


def calibrated_resnet18(side: int, seed: int, samples: int):
    """resnet18_v1 at a small `side` x `side` input: see :func:`calibrated_model`."""
    return calibrated_model("resnet18_v1", side, seed, samples)


def calibrated_model(name: str, side: int, seed: int, samples: int):
    """A registry model at a small `side` x `side` input (weights bound) and its calibration table
    (max thresholds, per-channel weights) from `samples` seeded normal inputs:
    (module, table, calibration inputs)."""
    from harness.build import bind_params
    from harness.config import ModelConfig
    from harness.frontends import load_model
    from harness.quantize import calibrate, qconfig

    model = load_model(ModelConfig(name=name, input_shape=[1, 3, side, side]))
    mod = bind_params(model.mod, model.params)
    rng = np.random.RandomState(seed)
    calib = [{"data": rng.normal(size=(1, 3, side, side)).astype("float32")} for _ in range(samples)]
    with qconfig(calibrate_mode="max", weight_scale="channel_max") as cfg:
        table = calibrate(mod, None, calib, config=cfg)
    return mod, table, calib


def dot_space_sample(task, target, seed: int):
    """One schedule drawn from the dot-product search space of `task` (harness tune's, for int8 convs)."""
    from tvm.s_tir import meta_schedule as ms

    from harness.tune.spaces import cpu_int8_dot_space

    ctx = ms.TuneContext(mod=task.dispatched[0], target=target, task_name=task.task_name, rand_state=seed,
                         space_generator=cpu_int8_dot_space(target).space_generator(), num_threads=1)
    [sch] = ctx.generate_design_space()
    return sch


def run_with_record(mod, x, target, task, sch, work_dir: str, schedules) -> np.ndarray:
    """`mod` built with `sch` (a schedule of `task`'s kernel) as the one record of a database in
    `work_dir`, run on `x`; asserts that the build took the record for that kernel."""
    import tvm
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    from harness.build import compile_module
    from harness.tune.database import load_records, open_database

    database = open_database(work_dir, target, create=True)
    database.commit_tuning_record(ms.database.TuningRecord(
        sch.trace, database.commit_workload(task.dispatched[0]), [1e-3], target,
        ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True)))
    built = compile_module(mod, target, records=load_records([("db", work_dir)], target), schedules=schedules)
    assert built.report.from_database == [task.task_name]
    return relax.VirtualMachine(built.executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
