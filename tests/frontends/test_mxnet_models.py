"""Every registry model: TVM fp32 output equals MXNet's own forward on the same seeded input."""
import mxnet as mx
import numpy as np
import pytest
import tvm

from harness.bench import make_vm, run_once
from harness.build import bind_params, compile_module
from harness.frontends.mxnet import from_mxnet
from harness.models import MODELS, gluon_model, input_data
from tests.helpers import rel_err

MXNET_MODELS = [n for n, s in MODELS.items() if "mxnet" in s.frontends]


@pytest.mark.slow
@pytest.mark.parametrize("name", MXNET_MODELS)
def test_tvm_matches_mxnet(name, llvm_target):
    spec = MODELS[name]
    shape = spec.input_shape(1)
    block = gluon_model(name, seed=0)
    x = input_data(shape, seed=0)
    expected = block(mx.nd.array(x)).asnumpy()
    mod, params = from_mxnet(block, shape={"data": shape})
    built = compile_module(bind_params(mod, params), llvm_target)
    actual = run_once(make_vm(built.executable, tvm.cpu()), tvm.cpu(), [x])
    assert actual.shape == expected.shape == (1, spec.num_classes)
    assert np.isfinite(expected).all() and expected.std() > 0
    assert rel_err(actual, expected) <= 1e-4
