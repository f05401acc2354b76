"""Build stage: CUDA code from a CPU-only machine, target resolution."""
import numpy as np
import pytest
import tvm
from tvm import relax

from harness.build import bind_params, compile_module, cuda_source, resolve_target, target_key
from harness.config import TargetConfig
from harness.errors import ConfigError
from harness.frontends.mxnet import from_mxnet


def test_llvm_target_uses_this_cpu():
    t = resolve_target(TargetConfig(kind="llvm"))
    assert t.kind.name == "llvm"
    assert t.attrs["mcpu"] == tvm.target.codegen.llvm_get_system_cpu()
    assert target_key(t) == f"llvm-{t.attrs['mcpu']}"


def test_bad_mcpu_is_clear():
    with pytest.raises(ConfigError, match="target.mcpu: LLVM does not know CPU 'pentium9000'"):
        resolve_target(TargetConfig(kind="llvm", mcpu="pentium9000"))


def test_cuda_target_key():
    assert target_key(resolve_target(TargetConfig(kind="cuda", arch="sm_80"))) == "cuda-sm_80"


def test_small_conv_compiles_to_cuda_source():
    import mxnet as mx

    sym = mx.sym.relu(mx.sym.Convolution(mx.sym.var("data"), kernel=(3, 3), num_filter=8, name="c"))
    params = {"c_weight": np.ones((8, 3, 3, 3), "float32"), "c_bias": np.zeros(8, "float32")}
    mod, p = from_mxnet(sym, params, shape={"data": (1, 3, 16, 16)})
    built = compile_module(bind_params(mod, p), resolve_target(TargetConfig(kind="cuda", arch="sm_90")))
    src = cuda_source(built.executable)
    assert "__global__" in src and "blockIdx.x" in src


def _small_conv():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4, 8, 8), "float32"))
    w = relax.const(np.random.RandomState(0).normal(size=(8, 4, 3, 3)).astype("float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.relu(bb.emit(relax.op.nn.conv2d(x, w, padding=1))))
        bb.emit_func_output(out)
    return bb.get()


def test_build_report_and_fallback(monkeypatch):
    """The report says where each kernel's schedule came from and which families were on; a build
    that fails with the harness's schedules is rebuilt without them and says why (fallback on), or
    is an error naming the failure (fallback off)."""
    from harness.errors import HarnessError
    from harness.schedules import ScheduleOptions
    from harness.schedules.cpu import CPUSchedules

    target = resolve_target(TargetConfig(kind="llvm"))
    mod = _small_conv()
    built = compile_module(mod, target)
    assert built.report.fallback is None and built.report.schedules["cpu_default"] is True
    assert built.report.counts() == {"default:cpu": 1} and built.report.from_database == []
    plain = compile_module(mod, target, schedules=ScheduleOptions.none())
    assert plain.report.schedules == {"cpu_default": False, "cpu_int8_dot": False, "cpu_int8_depthwise": False,
                                      "cpu_int8_amx": False, "cpu_int8_blocked": False, "cpu_int8_winograd": False,
                                      "cpu_int8_winograd_tile": 4, "cuda_int8_dp4a": False, "int8_weight_bits": 8,
                                      "int8_grouped_weight_bits": 8}

    def broken(self, target, scheduled_by=None):
        def fail(mod, _ctx):
            raise RuntimeError("schedule exploded")
        return [tvm.transform.module_pass(fail, opt_level=0, name="Broken")]

    monkeypatch.setattr(CPUSchedules, "schedule_passes", broken)
    rebuilt = compile_module(mod, target)
    assert rebuilt.report.fallback.endswith("schedule exploded")
    assert rebuilt.report.schedules["cpu_default"] is False  # what was built in the end
    x = np.random.RandomState(1).normal(size=(1, 4, 8, 8)).astype("float32")
    outs = [relax.VirtualMachine(b.executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
            for b in (built, rebuilt)]
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    with pytest.raises(HarnessError, match=r"compilation for llvm-.* failed: .*schedule exploded"):
        compile_module(mod, target, fallback=False)


def test_build_switches_are_config_keys(tmp_path):
    from harness.config import load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text("build: {schedules: {cpu_int8_dot: false, cpu_int8_winograd: false, cpu_int8_winograd_tile: 2}, "
                   "fallback: false}\n")
    loaded = load_config(str(cfg))
    assert loaded.build.schedules.options().cpu_int8_dot is False and loaded.build.fallback is False
    assert loaded.build.schedules.options().cpu_int8_winograd is False
    assert loaded.to_dict()["build"]["schedules"] == {"cpu_default": True, "cpu_int8_dot": False,
                                                      "cpu_int8_depthwise": True, "cpu_int8_amx": True,
                                                      "cpu_int8_blocked": True, "cpu_int8_winograd": False,
                                                      "cpu_int8_winograd_tile": 2, "cuda_int8_dp4a": True}
    # the builds also know the weights' bits the quantizer makes (7: vpmaddubsw on CPUs without VNNI)
    assert loaded.schedule_options().int8_weight_bits == 8
    cfg.write_text("quantize: {nbit_weight: 7}\n")
    seven = load_config(str(cfg)).schedule_options()
    assert (seven.int8_weight_bits, seven.int8_grouped_weight_bits) == (7, 7)
    cfg.write_text("build: {schedules: {cpu_int8_dots: false}}\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'build.schedules.cpu_int8_dots' \(did you mean "
                                          r"'cpu_int8_dot'\?\)"):
        load_config(str(cfg))



_THREADS_SCRIPT = """
import os, sys
import numpy as np
import tvm
from harness import bench, build
from harness.targets import llvm_target
from harness.tune import ConvShape, conv_model


def cpu_ticks():  # OS thread -> its user + system CPU time so far
    ticks = {}
    for tid in os.listdir("/proc/self/task"):
        fields = open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()
        ticks[tid] = int(fields[11]) + int(fields[12])
    return ticks


# a conv of ~10 ms on one core: at threads=1 one other thread of the process took 40-60 ms of CPU in all,
# whatever the work (1 ms convs made it half the kernel thread's); beside 30 such runs it stays small
ex = build.compile_module(conv_model(ConvShape.parse("1,256,56,56,256,3,3,1,1"), "float32"),
                          tvm.target.Target(llvm_target())).executable
vm = bench.make_vm(ex, tvm.cpu(), int(sys.argv[1]))
x = [np.ones((1, 256, 56, 56), "float32")]
bench.run_once(vm, tvm.cpu(), x)
before = cpu_ticks()
for _ in range(30):
    bench.run_once(vm, tvm.cpu(), x)
used = [t - before.get(tid, 0) for tid, t in cpu_ticks().items()]
# threads that did a share of the work (a quarter of the busiest one's at least: beside another busy process
# the shares of 2 threads are uneven); a pool thread left idle may still spin a little after it starts
print(sum(1 for u in used if u * 4 >= max(used)))
"""


@pytest.mark.parametrize("threads", [1, 2])
def test_cpu_kernels_run_on_the_threads_asked_for(threads, tmp_path):
    """TVM's runtime alone takes half the logical CPUs on x86 (1 of a 2-vCPU guest's 2 cores); a
    VM the harness makes runs its parallel kernels on `threads`: that many OS threads of the
    process do a share of the work while the model runs (CPU time per thread, from /proc)."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    if threads > (os.cpu_count() or 1):
        pytest.skip(f"{threads} threads on a machine of {os.cpu_count()} CPUs")
    script = tmp_path / "threads.py"
    script.write_text(_THREADS_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(threads)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": ROOT})
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) == threads
