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
