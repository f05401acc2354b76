"""The thin ONNX and PyTorch frontends: TVM fp32 equals the framework's own output."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import tvm
from onnx import TensorProto, helper, numpy_helper

from harness.bench import make_vm, run_once
from harness.build import bind_params, compile_module
from harness.config import ModelConfig
from harness.errors import ConfigError
from harness.frontends import load_model
from tests.helpers import rel_err


def _small_onnx(path):
    rng = np.random.RandomState(0)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype("float32"), "w")
    b = numpy_helper.from_array(rng.normal(0, 0.1, (8,)).astype("float32"), "b")
    fc = numpy_helper.from_array(rng.normal(0, 0.3, (8, 5)).astype("float32"), "fc")
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["out"]),
    ]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 5])], [w, b, fc])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)


def _tvm(model, x, target):
    built = compile_module(bind_params(model.mod, model.params), target)
    return run_once(make_vm(built.executable, tvm.cpu()), tvm.cpu(), [x])


def test_onnx_frontend_matches_onnxruntime(tmp_path, llvm_target):
    path = str(tmp_path / "small.onnx")
    _small_onnx(path)
    model = load_model(ModelConfig(name="small", frontend="onnx", onnx=path, input_name="input",
                                   input_shape=[1, 3, 16, 16]))
    assert set(model.params) == {"w", "b", "fc"}  # weights detached as params, like the MXNet path
    x = np.random.RandomState(1).normal(size=(1, 3, 16, 16)).astype("float32")
    expected = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert rel_err(_tvm(model, x, llvm_target), expected) <= 1e-5


def test_onnx_wrong_input_name(tmp_path):
    path = str(tmp_path / "small.onnx")
    _small_onnx(path)
    with pytest.raises(ConfigError, match="model.input_name: 'data' is not an input of .*; its inputs: input"):
        load_model(ModelConfig(name="small", frontend="onnx", onnx=path, input_shape=[1, 3, 16, 16]))


@pytest.mark.slow
def test_pytorch_frontend_efficientnet_matches_torch(llvm_target):
    model = load_model(ModelConfig(name="efficientnet_lite0", frontend="pytorch"))
    x = np.random.RandomState(2).normal(size=(1, 3, 224, 224)).astype("float32")
    with torch.no_grad():
        expected = model.extra["torch_module"](torch.from_numpy(x)).numpy()
    assert rel_err(_tvm(model, x, llvm_target), expected) <= 1e-4
