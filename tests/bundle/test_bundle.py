"""`harness bundle` / `harness bench-bundle`: build here, run with the TVM runtime alone.

The llvm bundle of the digits CNN is run in a subprocess that has only a runtime-only copy of TVM
(no libtvm_compiler.so), numpy, tvm_ffi and the harness (`python -S`: no MXNet, ONNX, torch); its
outputs must equal those of the harness's own in-process build of the same weights.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from harness.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: The digits config with fewer calibration samples (the bundle's int8 modules: calibrated on these).
DIGITS_CONFIG = """
model: {name: digits_cnn, batch: 2}
target: llvm
quantize:
  calibrate_mode: kl_divergence
  weight_scale: channel_max
  skip_conv_layers: []
  calib: {source: digits, num_samples: 128, batch_size: 64}
bench: {number: 5, repeat: 3, min_repeat_ms: 0}
"""


def _site_dir(path):
    spec = importlib.util.find_spec(path)
    return os.path.dirname(list(spec.submodule_search_locations)[0]) if spec.submodule_search_locations \
        else os.path.dirname(spec.origin)


def runtime_only_site(dest):
    """A sys.path entry with the runtime-only TVM copy and only what it needs (tvm_ffi, numpy)."""
    from harness.bundle.runtime import copy_runtime

    copy_runtime(dest)
    site = _site_dir("numpy")
    for name in ("tvm_ffi", "numpy", "numpy.libs", "typing_extensions.py"):
        if os.path.exists(os.path.join(site, name)):
            os.symlink(os.path.join(site, name), os.path.join(dest, name))
    assert not os.path.exists(os.path.join(dest, "tvm", "lib", "libtvm_compiler.so"))
    return dest


def run_runtime_only(site, *args, cwd):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(TVM_USE_RUNTIME_LIB="1", PYTHONPATH=os.pathsep.join([site, ROOT]))
    return subprocess.run([sys.executable, "-S", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def digits_bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bundle")
    config = tmp / "digits.yaml"
    config.write_text(DIGITS_CONFIG)
    assert main(["bundle", str(config), "--target", "llvm", "--reference", str(config), "--out", str(tmp / "b"),
                 "--quiet"]) == 0
    manifest = json.loads((tmp / "b" / "manifest.json").read_text())
    return str(tmp / "b"), str(config), manifest


RUNNER = """
import json, sys
import numpy as np
from harness.bundle.manifest import load_manifest, seeded_weights
from harness.bundle.runner import _Library, _input, _device
bundle, out = sys.argv[1], sys.argv[2]
m = load_manifest(bundle)
dev = _device(m, None, bundle)
case = m["cases"][0]
outs = {e["variant"]: _Library(bundle, e, dev, seeded_weights(e["weights"], case["weight_seed"])).run(_input(case))
        for e in case["variants"]}
np.savez(out, **outs)
heavy = sorted(k for k in sys.modules if k.split(".")[0] in ("mxnet", "onnx", "onnxruntime", "torch", "yaml")
               or k.startswith(("tvm.relax", "tvm.s_tir", "tvm.meta_schedule")))
print(json.dumps(heavy))
"""


@pytest.mark.slow
def test_llvm_bundle_runs_with_the_runtime_alone(digits_bundle, tmp_path):
    """Outputs equal the harness's in-process build of the same seeded weights; no compiler is imported;
    `bench-bundle` writes a record that `harness report` reads, with the reference case passed."""
    import tvm
    from tvm import relax

    from harness import bench, build
    from harness.bundle.build import _variant_modules
    from harness.bundle.manifest import seeded_weights
    from harness.bundle.runner import _input
    from harness.config import load_config
    from harness.frontends import load_model

    bundle, config, manifest = digits_bundle
    site = runtime_only_site(str(tmp_path / "site"))
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    proc = run_runtime_only(site, str(script), bundle, str(tmp_path / "out.npz"), cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []  # nothing of the compiler or a framework
    got = np.load(tmp_path / "out.npz")

    cfg = load_config(config)
    model = load_model(cfg.model)
    case = manifest["cases"][0]
    x = _input(case)
    target = build.resolve_target(cfg.target)
    for variant, mod, _, _ in _variant_modules(cfg, model, ["tvm-int8", "tvm-fp32"], lambda m: None):
        entry = next(e for e in case["variants"] if e["variant"] == variant)
        values = seeded_weights(entry["weights"], case["weight_seed"])
        bound = relax.transform.BindParams("main", {w["name"]: tvm.runtime.tensor(v)
                                                    for w, v in zip(entry["weights"], values)})(mod)
        ex = build.compile_module(bound, target).executable
        want = bench.run_once(bench.make_vm(ex, tvm.cpu(0)), tvm.cpu(0), [x])
        np.testing.assert_array_equal(got[variant], want, err_msg=variant)

    results = tmp_path / "results"
    proc = run_runtime_only(site, "-m", "harness", "bench-bundle", bundle, "--out", str(results), "--quiet",
                            cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "reference digits_cnn tvm-int8: max rel err 0 vs the CPU's int8 output" in proc.stdout
    files = sorted(results.glob("*.json"))
    assert len(files) == 1
    rec = json.loads(files[0].read_text())
    assert rec["run_key"] == "digits_cnn-B2-int8" and rec["model"]["batch"] == 2
    assert [v["variant"] for v in rec["variants"]] == ["tvm-int8", "tvm-fp32"]
    assert all(v["latency"]["ms_per_image"] > 0 and v["output_finite"] for v in rec["variants"])
    assert rec["variants"][0]["reference_check"]["passed"] is True
    assert rec["bundle"]["reference"]["passed"] is True
    assert rec["git"] == manifest["harness_git"]
    table = tmp_path / "table.csv"
    assert main(["report", str(results), "--output", str(table)]) == 0
    lines = table.read_text().splitlines()
    assert lines[0].startswith("model,batch,tvm-int8,tvm-fp32")
    assert lines[1].startswith("digits_cnn,2,")


@pytest.mark.slow
def test_bench_rounds_alternate_the_libraries(digits_bundle, tmp_path):
    """A case whose config has `bench.rounds: 3`: its libraries are timed in 3 alternating rounds,
    and each record's latency holds the samples of all three (as `harness run` records them)."""
    bundle, _, _ = digits_bundle
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["cases"][0]["config"]["bench"].update(rounds=3, repeat=2)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    messages = []
    from harness.bundle.runner import bench_bundle

    [rec] = bench_bundle(str(copy), str(tmp_path / "results"), peers=False, status=messages.append)
    assert "digits_cnn B2: timing tvm-int8, tvm-fp32 in 3 alternating rounds (number=5, repeat=2, " \
           "min_repeat_ms=0 each per round)" in messages
    assert not any(": timing (" in m for m in messages)  # nothing timed on its own
    for v in rec["variants"]:
        lat = v["latency"]
        assert (lat["rounds"], lat["repeat"], len(lat["samples_ms"])) == (3, 6, 6), v["variant"]
    saved = json.loads(open(rec["path"]).read())
    assert saved["config"]["bench"]["rounds"] == 3


@pytest.mark.slow
def test_manifest_lists_inputs_weights_and_switches(digits_bundle):
    bundle, _, manifest = digits_bundle
    from harness import __version__

    assert manifest["harness_version"] == __version__ and manifest["bundle_format"] == 1
    assert manifest["target"]["kind"] == "llvm" and manifest["target"]["key"].startswith("llvm-")
    assert manifest["functions"] == {"transform": "main_transform_params", "main": "main"}
    case = manifest["cases"][0]
    assert case["input"] == {"name": "data", "shape": [2, 1, 8, 8], "dtype": "float32", "seed": 0}
    int8, fp32 = case["variants"]
    # int8: the two conv and two dense weights are parameters (per-channel scales stay constants)
    assert [(w["shape"], w["dtype"]) for w in int8["weights"]] == [
        ([16, 1, 3, 3], "int8"), ([32, 16, 3, 3], "int8"), ([512, 64], "float32"), ([64, 10], "float32")]
    assert [w["name"] for w in fp32["weights"]] == [
        "digits_conv0_weight", "digits_conv0_bias", "digits_conv1_weight", "digits_conv1_bias",
        "digits_dense0_weight", "digits_dense0_bias", "digits_dense1_weight", "digits_dense1_bias"]
    for v in case["variants"] + manifest["reference"]["variants"]:
        assert os.path.getsize(os.path.join(bundle, v["library"])) == v["bytes"]
    assert manifest["bytes"] < 2 * 2**20


# ----------------------------------------------------------------------------- bad input


@pytest.fixture
def fake_bundle(tmp_path):
    """A manifest and placeholder libraries: enough for the checks that come before loading them."""
    from harness import __version__

    bundle = tmp_path / "b"
    (bundle / "cases" / "m-B1").mkdir(parents=True)
    (bundle / "cases" / "m-B1" / "tvm-int8.so").write_bytes(b"not a library")
    manifest = {"bundle_format": 1, "harness_version": __version__, "created": "2026-12-02T00:00:00+00:00",
                "target": {"kind": "cuda", "key": "cuda-sm_90", "target": "cuda -arch=sm_90"}, "reference": None,
                "cases": [{"model": "m", "batch": 1, "variants": [{"variant": "tvm-int8",
                                                                   "library": "cases/m-B1/tvm-int8.so"}]}]}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle, manifest


def _error_line(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    return err[0]


def test_bundle_of_another_harness_version(fake_bundle, capsys):
    bundle, manifest = fake_bundle
    manifest["harness_version"] = "0.0.1"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    from harness import __version__

    line = _error_line(capsys, ["bench-bundle", str(bundle)])
    assert line == (f"error: {bundle}: built by harness 0.0.1 (bundle format 1); this is harness {__version__} "
                    "(bundle format 1): rebuild it with `harness bundle`")


def test_bundle_with_a_missing_library(fake_bundle, capsys):
    bundle, _ = fake_bundle
    os.remove(bundle / "cases" / "m-B1" / "tvm-int8.so")
    line = _error_line(capsys, ["bench-bundle", str(bundle)])
    assert line == (f"error: {bundle}: library cases/m-B1/tvm-int8.so is missing (listed in manifest.json); copy "
                    "the whole bundle directory, or rebuild it with `harness bundle`")


def test_bundle_on_a_device_of_another_kind(fake_bundle, capsys):
    bundle, _ = fake_bundle
    line = _error_line(capsys, ["bench-bundle", str(bundle), "--device", "cpu"])
    assert line == (f"error: {bundle}: its libraries are for cuda-sm_90 and run on the cuda device; --device cpu "
                    "cannot run them (valid: cuda; or build a bundle with --target llvm)")


def test_cuda_bundle_without_a_gpu(fake_bundle, capsys):
    from harness.build import gpu_visible

    if gpu_visible():
        pytest.skip("a CUDA GPU is visible here: the bundle would run")
    bundle, _ = fake_bundle
    line = _error_line(capsys, ["bench-bundle", str(bundle)])
    # (why TVM's CUDA runtime did not load, e.g. no libcuda.so.1, is said in parentheses)
    assert line.startswith(f"error: {bundle}: built for cuda-sm_90, but no CUDA GPU is visible here")
    assert line.endswith("; run it on a machine with one, or build a bundle with --target llvm")


def test_not_a_bundle(tmp_path, capsys):
    line = _error_line(capsys, ["bench-bundle", str(tmp_path)])
    assert line == f"error: {tmp_path}: not a bundle (no manifest.json; make one with `harness bundle`)"


def test_dlight_variant_is_cuda_only(tmp_path, capsys):
    config = tmp_path / "digits.yaml"
    config.write_text(DIGITS_CONFIG)
    line = _error_line(capsys, ["bundle", str(config), "--target", "llvm", "--variants", "tvm-int8-dlight",
                                "--out", str(tmp_path / "b")])
    assert line == ("error: variant tvm-int8-dlight: CUDA targets only (TVM's GPU default schedules); valid for "
                    "llvm: tvm-int8, tvm-fp32")


def test_unknown_variant(tmp_path, capsys):
    config = tmp_path / "digits.yaml"
    config.write_text(DIGITS_CONFIG)
    line = _error_line(capsys, ["bundle", str(config), "--target", "llvm", "--variants", "tvm-int4",
                                "--out", str(tmp_path / "b")])
    assert line == "error: --variants: unknown 'tvm-int4'; valid: tvm-int8, tvm-int8-dlight, tvm-fp32"


# ----------------------------------------------------------------------------- CUDA, without a GPU


@pytest.mark.slow
def test_cuda_bundle_of_resnet18_builds_without_a_gpu(tmp_path):
    """resnet18_v1 int8 for sm_90 on a machine with nvcc only: dp4a kernels in the library, a complete
    manifest, the torch peers' graph without weights, and a size that travels."""
    from harness.bundle.build import build_bundle, bundle_configs
    from harness.bundle.runtime import copy_runtime, tree_bytes

    configs = bundle_configs(os.path.join(ROOT, "configs", "resnet18_v1_int8.yaml"), target_kind="cuda",
                             arch="sm_90", batches=[1])
    out = tmp_path / "b"
    manifest = build_bundle(configs, str(out), variants=["tvm-int8"], reference=None)

    assert manifest["target"]["kind"] == "cuda" and manifest["target"]["key"] == "cuda-sm_90"
    assert manifest["target"]["arch"] == "sm_90"
    assert manifest["switches"]["variants"] == ["tvm-int8"] and manifest["switches"]["schedules"][0]["cuda_int8_dp4a"] is True
    assert manifest["switches"]["peers"] == ["torch-fp32", "torch-fp16"]
    case = manifest["cases"][0]
    assert case["run_key"] == "resnet18_v1-B1-int8"
    assert case["input"] == {"name": "data", "shape": [1, 3, 224, 224], "dtype": "float32", "seed": 0}
    (v,) = case["variants"]
    lib = out / v["library"]
    assert lib.stat().st_size == v["bytes"]
    # 20 convs: the first stays fp32 (skip_conv_layers [0]), the other 19 are int8 (weights [K, C, R, S]
    # int8); their kernels call __dp4a (counted in the CUDA source: 18 kernels on 2026-12-02, convs of
    # the same shape and epilogue share one; 17 since `requantize: folded`, whose epilogue constants are
    # parameters, so that convs whose float epilogues differed only in a scale share one too)
    convs = [w for w in v["weights"] if len(w["shape"]) == 4]
    assert len(convs) == 20 and sum(w["dtype"] == "int8" for w in convs) == 19
    assert v["dp4a_kernels"] >= 17
    assert b"__dp4a" in lib.read_bytes()
    graph = json.loads((out / case["peers"]["graph"]).read_text())
    names = {n["name"] for n in graph["nodes"] if n["op"] == "null"}
    assert {w["name"] for w in case["peers"]["weights"]} == names - {"data"}
    assert not any(f.endswith((".params", ".npz")) for _, _, fs in os.walk(out) for f in fs)  # no weights travel

    runtime = copy_runtime(str(tmp_path / "rt"))
    wheel = 4 * 2**20  # the apache-tvm-ffi cp312 wheel is 3.2 MB
    assert manifest["bytes"] + tree_bytes(runtime) + wheel < 60 * 2**20


def test_seeded_weights_are_per_name_and_seed():
    """The runner's weights: the same tensor for the same name and seed whatever the order (so TVM fp32
    and the torch peers can share them by name), in the dtype's range, BatchNorm variances positive."""
    from harness.bundle.manifest import seeded_weight, seeded_weights

    specs = [{"name": "conv0_weight", "shape": [64, 3, 7, 7], "dtype": "float32"},
             {"name": "bn0_running_var", "shape": [64], "dtype": "float32"},
             {"name": "w3", "shape": [128, 64, 3, 3], "dtype": "int8"}]
    a = seeded_weights(specs, 7)
    b = seeded_weights(specs[::-1], 7)[::-1]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], seeded_weight("conv0_weight", [64, 3, 7, 7], "float32", 8))
    assert a[0].dtype == np.float32 and abs(float(a[0].std()) - np.sqrt(2 / 147)) < 0.01  # He-normal, fan-in 147
    assert a[1].min() >= 0.5 and a[1].max() <= 1.5
    assert a[2].dtype == np.int8 and a[2].min() >= -127 and a[2].max() <= 127
    # a build whose kernels are for 7-bit weights (reduce_range) lists them with bits: 7
    seven = seeded_weights([{**specs[2], "bits": 7}], 7)[0]
    assert seven.min() == -63 and seven.max() == 63
