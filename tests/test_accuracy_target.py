"""`quantize.accuracy_target`: the fewest fp32 layers that reach the user's accuracy, recorded in the
calibration table so that re-applying it without data builds the same model."""
import json

import numpy as np
import pytest
import tvm

from harness.bench import make_vm, run_once
from harness.build import compile_module
from harness.config import config_from_dict
from harness.errors import ConfigError
from harness.frontends import load_model
from harness.pipeline import calibration_table, int8_module, run
from harness.quantize import fallback_layers, load_table
from tests.conftest import run_cli

DIGITS = {
    "model": {"name": "digits_cnn"},
    "target": "llvm",
    "quantize": {"calibrate_mode": "kl_divergence", "weight_scale": "channel_max", "skip_conv_layers": [],
                 "skip_dense_layer": False, "calib": {"source": "digits", "num_samples": 256, "batch_size": 128}},
    "accuracy": {"dataset": "digits"},
    "bench": {"number": 1, "repeat": 1, "min_repeat_ms": 0},
}
LAYERS = ["conv2d_0", "conv2d_1", "dense_0", "dense_1"]  # every one int8 in this plan


def _cfg(target=None, **quantize):
    data = json.loads(json.dumps(DIGITS))
    data["quantize"].update(quantize)
    if target is not None:
        data["quantize"]["accuracy_target"] = target
    return config_from_dict(data)


@pytest.fixture(scope="module")
def digits():
    return load_model(_cfg().model)


def _check_search(result, bound):
    """The invariants of the search: one layer more per step, stop at the first step that meets the
    target, never more than the bound."""
    steps = result["steps"]
    assert len(steps) == len(result["fp32_layers"]) + 1 <= bound + 1
    for i, step in enumerate(steps):
        assert step["fp32_layers"] == result["fp32_layers"][:i]
    assert [s["met"] for s in steps[:-1]] == [False] * (len(steps) - 1)  # stopped as soon as it was met
    assert steps[-1]["met"] == result["met"]
    assert set(result["fp32_layers"]) <= set(LAYERS) and len(set(result["fp32_layers"])) == len(result["fp32_layers"])


def _logits(mod, x):
    ex = compile_module(mod, tvm.target.Target("llvm")).executable
    vm = make_vm(ex, tvm.cpu())
    return np.concatenate([run_once(vm, tvm.cpu(), [x[i:i + 1]]) for i in range(len(x))])


def test_cosine_target_on_digits(digits, tmp_path):
    """A target that all-int8 misses: the search keeps layers fp32 until it is met, the record and the
    table list them, and the saved table, re-applied without data, gives bit-identical outputs."""
    target = {"metric": "cosine", "min": 0.99999, "max_fp32_layers": 3}
    cfg = _cfg(target)
    cfg.bench.results_dir = str(tmp_path)
    table_path = str(tmp_path / "calib.json")
    cfg.quantize.table = table_path
    record = run(cfg, model=digits)
    result = record["accuracy_target"]
    _check_search(result, 3)
    assert result["steps"][0]["cosine_mean"] < 0.99999  # all int8 misses it: the loop had work to do
    assert result["met"] and len(result["fp32_layers"]) >= 1
    assert result["reached"]["cosine_mean"] == result["steps"][-1]["cosine_mean"] >= 0.99999
    assert result["dataset"] == "digits (held-out split)" and result["samples"] == 450
    assert record["variants"][1]["quantized_ops"] == 4 - len(result["fp32_layers"])
    # the run's own accuracy (the int8 build for the target) is the one the search reached
    assert record["accuracy"]["cosine_mean"] == pytest.approx(result["reached"]["cosine_mean"], abs=1e-12)

    saved = load_table(table_path)
    assert saved["accuracy_target"]["fp32_layers"] == result["fp32_layers"] == fallback_layers(saved)
    # a re-run without data: no accuracy section, no target; the table's choice applies
    plain = _cfg(calib={"source": "synthetic"})
    plain.quantize.table = table_path
    again = calibration_table(plain, digits, status=lambda m: None)
    from harness.models.digits import load_digits_split

    x = load_digits_split(0)[1][0][:64]
    reapplied = _logits(int8_module(plain, digits, again), x)
    searched = _logits(int8_module(cfg, digits, saved, fp32_layers=result["fp32_layers"]), x)
    np.testing.assert_array_equal(reapplied, searched)
    all_int8 = _logits(int8_module(cfg, digits, saved, fp32_layers=[]), x)
    assert not np.array_equal(all_int8, searched)  # the choice is what makes the difference


def test_bound_is_never_exceeded(digits):
    """cosine 1.0 needs every layer fp32; with a bound of 1 the search stops at one layer and says so."""
    cfg = _cfg({"metric": "cosine", "min": 1.0, "max_fp32_layers": 1})
    table = calibration_table(cfg, digits, status=lambda m: None, recalibrate=True)
    result = table["accuracy_target"]
    _check_search(result, 1)
    assert not result["met"] and len(result["fp32_layers"]) == 1
    assert result["note"] == ("target not met: the bound of 1 fp32 layers was hit; raise "
                              "quantize.accuracy_target.max_fp32_layers, or relax the target")


def test_target_met_by_all_int8_keeps_nothing_fp32(digits):
    cfg = _cfg({"metric": "top1_drop", "max": 0.01})
    result = calibration_table(cfg, digits, status=lambda m: None, recalibrate=True)["accuracy_target"]
    assert result["met"] and result["fp32_layers"] == [] and len(result["steps"]) == 1
    reached = result["reached"]
    assert reached["top1_drop"] == pytest.approx(reached["top1_fp32"] - reached["top1_int8"])
    assert reached["top1_drop"] <= 0.01


def test_cli_quantize_says_which_layers(tmp_path):
    cfg = tmp_path / "d.yaml"
    cfg.write_text(json.dumps({**DIGITS, "quantize": {**DIGITS["quantize"], "accuracy_target": {
        "metric": "top1_agreement", "min": 1.0, "max_fp32_layers": 2}}}))
    out = tmp_path / "calib.json"
    r = run_cli("quantize", str(cfg), "--table", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    result = json.load(open(out))["accuracy_target"]
    _check_search(result, 2)
    first = r.stdout.splitlines()[0]
    assert first.startswith("accuracy target top1_agreement min 1 on digits (held-out split): ")
    assert f"layer(s) kept fp32 (bound 2): {', '.join(result['fp32_layers']) or 'none'}" in first
    assert "reached: cosine " in r.stdout and r.stderr == ""  # --quiet: no bars, no status lines


@pytest.mark.parametrize("target, message", [
    ({"metric": "cosine"}, "quantize.accuracy_target: metric cosine needs `min:`, e.g. {metric: cosine, min: 0.995}"),
    ({"metric": "top1_drop", "min": 0.9}, "quantize.accuracy_target: metric top1_drop takes `max:`, not `min:`"),
    ({"metric": "cosine", "min": 1.5}, "quantize.accuracy_target.min: must be in (0, 1], got 1.5"),
    ({"metric": "cosine", "min": 0.99, "max_fp32_layers": 0},
     "quantize.accuracy_target.max_fp32_layers: must be >= 1, got 0"),
    ({"metric": "loss", "min": 0.9},
     "quantize.accuracy_target.metric: invalid value 'loss'; valid: cosine, top1_agreement, top1_drop"),
])
def test_target_config_errors(target, message):
    with pytest.raises(ConfigError) as e:
        _cfg(target)
    assert str(e.value) == message


def test_target_needs_accuracy_data_and_labels():
    data = json.loads(json.dumps(DIGITS))
    data["quantize"]["accuracy_target"] = {"metric": "cosine", "min": 0.99}
    del data["accuracy"]
    with pytest.raises(ConfigError, match=r"^quantize.accuracy_target: needs an `accuracy:` section"):
        config_from_dict(data)
    data["accuracy"] = {"dataset": "photos"}
    data["quantize"]["accuracy_target"] = {"metric": "top1_drop", "max": 0.01}
    with pytest.raises(ConfigError, match=r"^quantize.accuracy_target: metric top1_drop needs labels; "
                                          r"accuracy.dataset photos has none \(valid: digits, or images"):
        config_from_dict(data)
    data["accuracy"] = {"dataset": "photos", "labels": "l.yaml"}
    with pytest.raises(ConfigError, match=r"^accuracy.labels: only for dataset images"):
        config_from_dict(data)


@pytest.mark.slow
def test_efficientnet_lite0_cosine_target(tmp_path):
    """Real weights, 16 scikit-image photos, 64 calibration views: cosine 0.995 with at most 3 layers
    fp32 (besides conv2d_0, skipped by default). One search (`harness quantize`), then the saved
    table re-applied reproduces the cosine the search reached, to the last bit."""
    from harness.accuracy import compare, predict
    from harness.build import bind_params, resolve_target
    from harness.config import load_config
    from harness.data import load_photos
    from harness.models import MODELS

    cfg_path = tmp_path / "e.yaml"
    table_path = tmp_path / "calib.json"
    cfg_path.write_text(open("configs/efficientnet_lite0_int8.yaml").read().replace(
        "  calib: {source: photos, num_samples: 64, batch_size: 16}\n",
        "  calib: {source: photos, num_samples: 64, batch_size: 16}\n"
        f"  table: {table_path}\n  accuracy_target: {{metric: cosine, min: 0.995, max_fp32_layers: 3}}\n"
        # 8-bit weights on every host (reduce_range: auto gives AVX2-only ones 7 bits: 0.9949 there)
        "  reduce_range: false\n"))
    r = run_cli("quantize", str(cfg_path), "--quiet", timeout=3600)
    assert r.returncode == 0, r.stderr
    result = json.load(open(table_path))["accuracy_target"]
    steps = result["steps"]
    assert len(steps) == len(result["fp32_layers"]) + 1 <= 4
    assert [s["met"] for s in steps[:-1]] == [False] * (len(steps) - 1)
    assert result["met"], r.stdout  # reached 0.995 within 3 fp32 layers
    assert result["reached"]["cosine_mean"] >= 0.995

    cfg = load_config(str(cfg_path))
    model = load_model(cfg.model)
    spec = MODELS["efficientnet_lite0"]
    x = load_photos(224, spec.mean, spec.std)
    target = resolve_target(cfg.target)  # the search's target (this CPU's mcpu): the same code, bit for bit

    def logits(mod):
        vm = make_vm(compile_module(mod, target).executable, tvm.cpu())
        return predict(lambda b: run_once(vm, tvm.cpu(), [b]), x, 1)

    fp32 = logits(bind_params(model.mod, model.params))
    table = calibration_table(cfg, model, status=lambda m: None)  # the saved table, its recorded choice
    assert fallback_layers(table) == result["fp32_layers"]
    again = compare(fp32, logits(int8_module(cfg, model, table)))
    assert again["cosine_mean"] == result["reached"]["cosine_mean"]
    assert again["top1_agreement"] == result["reached"]["top1_agreement"]
