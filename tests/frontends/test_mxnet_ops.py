"""Op-level agreement of the MXNet converter with MXNet's own executor, and its errors."""
import json

import mxnet as mx
import numpy as np
import pytest
import tvm

from harness.bench import make_vm, run_once
from harness.build import bind_params, compile_module
from harness.errors import InputShapeError, UnsupportedOpError
from harness.frontends.mxnet import from_mxnet
from tests.helpers import rel_err


def _mxnet_forward(sym, params, x):
    arg_names = sym.list_arguments()
    aux_names = sym.list_auxiliary_states()
    args = {n: mx.nd.array(params[n]) for n in arg_names if n != "data"}
    args["data"] = mx.nd.array(x)
    aux = {n: mx.nd.array(params[n]) for n in aux_names}
    exe = sym.bind(mx.cpu(), args=args, aux_states=aux, grad_req="null")
    return exe.forward(is_train=False)[0].asnumpy()


def _random_params(sym, data_shape, seed=0):
    rng = np.random.RandomState(seed)
    arg_shapes, _, aux_shapes = sym.infer_shape(data=data_shape)
    params = {}
    for name, shp in zip(sym.list_arguments(), arg_shapes):
        if name != "data":
            params[name] = rng.normal(0, 0.5, shp).astype("float32")
    for name, shp in zip(sym.list_auxiliary_states(), aux_shapes):
        params[name] = (rng.uniform(0.5, 1.5, shp) if "var" in name else rng.normal(0, 0.1, shp)).astype("float32")
    return params


def _check(sym, data_shape, llvm_target, tol=1e-5, params=None):
    params = params or _random_params(sym, data_shape)
    x = np.random.RandomState(1).normal(0, 1, data_shape).astype("float32")
    expected = _mxnet_forward(sym, params, x)
    mod, p = from_mxnet(sym, params, shape={"data": data_shape})
    built = compile_module(bind_params(mod, p), llvm_target)
    actual = run_once(make_vm(built.executable, tvm.cpu()), tvm.cpu(), [x])
    assert actual.shape == expected.shape
    assert rel_err(actual, expected) <= tol
    return mod


data = mx.sym.var("data")


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kernel=(3, 3), num_filter=8, pad=(1, 1)),
        dict(kernel=(3, 3), num_filter=8, stride=(2, 2), pad=(1, 1), no_bias=True),
        dict(kernel=(3, 3), num_filter=8, num_group=4, pad=(2, 2), dilate=(2, 2)),  # grouped + dilated
        dict(kernel=(3, 3), num_filter=8, num_group=8, pad=(1, 1)),  # depthwise
        dict(kernel=(1, 5), num_filter=4, pad=(0, 2)),
    ],
)
def test_convolution(kwargs, llvm_target):
    _check(mx.sym.Convolution(data, name="conv", **kwargs), (2, 8, 10, 10), llvm_target)


def test_conv_batchnorm_folded(llvm_target):
    conv = mx.sym.Convolution(data, kernel=(3, 3), num_filter=6, pad=(1, 1), name="c")
    sym = mx.sym.BatchNorm(conv, fix_gamma=False, eps=1e-3, name="bn")
    mod = _check(sym, (1, 3, 8, 8), llvm_target)
    text = mod.script()
    assert "batch_norm" not in text and "multiply" not in text  # folded into the conv weights


def test_batchnorm_not_after_conv(llvm_target):
    sym = mx.sym.BatchNorm(mx.sym.relu(data), fix_gamma=True, name="bn")  # fix_gamma ignores gamma
    _check(sym, (2, 4, 5, 5), llvm_target)


def test_deformable_convolution(llvm_target):
    offset = mx.sym.Convolution(data, kernel=(3, 3), num_filter=18, pad=(1, 1), name="off")
    sym = mx.sym.contrib.DeformableConvolution(data, offset, kernel=(3, 3), num_filter=6, pad=(1, 1), name="dcn")
    _check(sym, (1, 4, 9, 9), llvm_target, tol=1e-4)


@pytest.mark.parametrize(
    "make",
    [
        lambda d: mx.sym.Activation(d, act_type="relu"),
        lambda d: mx.sym.Activation(d, act_type="sigmoid"),
        lambda d: mx.sym.Activation(d, act_type="tanh"),
        lambda d: mx.sym.Activation(d, act_type="softrelu"),
        lambda d: mx.sym.LeakyReLU(d, act_type="leaky", slope=0.1),
        lambda d: mx.sym.LeakyReLU(d, act_type="elu", slope=0.3),
        lambda d: mx.sym.clip(d, 0, 6),
        lambda d: mx.sym.clip(d, -0.5, 0.5),
        lambda d: mx.sym.Pooling(d, kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="max"),
        lambda d: mx.sym.Pooling(d, kernel=(3, 3), stride=(2, 2), pool_type="max", pooling_convention="full"),
        lambda d: mx.sym.Pooling(d, kernel=(3, 3), stride=(1, 1), pad=(1, 1), pool_type="avg"),
        lambda d: mx.sym.Pooling(d, kernel=(3, 3), stride=(1, 1), pad=(1, 1), pool_type="avg",
                                 count_include_pad=False),
        lambda d: mx.sym.Pooling(d, kernel=(1, 1), global_pool=True, pool_type="avg"),
        lambda d: mx.sym.Pooling(d, kernel=(1, 1), global_pool=True, pool_type="max"),
        lambda d: mx.sym.FullyConnected(d, num_hidden=7, name="fc"),
        lambda d: mx.sym.FullyConnected(mx.sym.Flatten(d), num_hidden=7, no_bias=True, name="fc"),
        lambda d: mx.sym.softmax(mx.sym.FullyConnected(d, num_hidden=5, name="fc")),
        lambda d: mx.sym.SoftmaxOutput(mx.sym.FullyConnected(d, num_hidden=5, name="fc"), name="softmax"),
        lambda d: mx.sym.Dropout(d, p=0.5) + d,
        lambda d: mx.sym.elemwise_add(d, d * 2.0) - 1.0,
        lambda d: mx.sym.broadcast_mul(d, mx.sym.Pooling(d, kernel=(1, 1), global_pool=True, pool_type="avg")),
        lambda d: mx.sym.Concat(d, mx.sym.relu(d), dim=1),
        lambda d: mx.sym.Reshape(d, shape=(0, -1)),
        lambda d: mx.sym.Reshape(d, shape=(-3, -2)),
        lambda d: mx.sym.Reshape(d, shape=(0, -4, 2, -1, -2)),
    ],
)
def test_elementwise_and_pooling_ops(make, llvm_target):
    _check(make(data), (2, 4, 7, 7), llvm_target)


def test_symbol_json_and_params_files(tmp_path, llvm_target):
    sym = mx.sym.Activation(mx.sym.Convolution(data, kernel=(3, 3), num_filter=4, name="c"), act_type="relu")
    params = _random_params(sym, (1, 3, 6, 6))
    sym.save(str(tmp_path / "m-symbol.json"))
    mx.nd.save(str(tmp_path / "m-0000.params"), {f"arg:{k}": mx.nd.array(v) for k, v in params.items()})
    x = np.random.RandomState(0).normal(size=(1, 3, 6, 6)).astype("float32")
    mod, p = from_mxnet(str(tmp_path / "m-symbol.json"), str(tmp_path / "m-0000.params"), shape={"data": (1, 3, 6, 6)})
    built = compile_module(bind_params(mod, p), llvm_target)
    actual = run_once(make_vm(built.executable, tvm.cpu()), tvm.cpu(), [x])
    assert rel_err(actual, _mxnet_forward(sym, params, x)) <= 1e-5


def test_unsupported_op_names_op_and_node():
    sym = mx.sym.topk(mx.sym.relu(data), k=2, name="my_topk")
    with pytest.raises(UnsupportedOpError) as e:
        from_mxnet(sym, {}, shape={"data": (1, 10)})
    assert str(e.value) == "unsupported MXNet op 'topk' at node 'my_topk'"


def test_wrong_input_shape_is_clear():
    sym = mx.sym.Convolution(data, kernel=(3, 3), num_filter=4, name="conv1")
    params = _random_params(sym, (1, 3, 8, 8))
    with pytest.raises(InputShapeError) as e:
        from_mxnet(sym, params, shape={"data": (1, 5, 8, 8)})  # 5 channels, weights want 3
    msg = str(e.value)
    assert msg.startswith("input shape data=(1, 5, 8, 8) does not fit the model at node 'conv1' (Convolution)")


def test_wrong_input_name_lists_inputs():
    sym = mx.sym.relu(data)
    with pytest.raises(InputShapeError, match="input 'image' is not an input of the model; its inputs are: data"):
        from_mxnet(sym, {}, shape={"image": (1, 3)})
