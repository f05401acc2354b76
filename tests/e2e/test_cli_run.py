"""End to end through the command line: the README's main job, models listing, CUDA compile-only."""
import glob
import json
import os

import pytest

from tests.conftest import ROOT, run_cli


def test_models_lists_registry():
    r = run_cli("models", timeout=120)
    assert r.returncode == 0, r.stderr
    for name in ("resnet18_v1", "resnet50_v1", "inception_v3", "drn_c_26", "dcn_resnet101", "efficientnet_lite0"):
        assert name in r.stdout
    assert "3x299x299" in r.stdout  # inception's input


@pytest.mark.parametrize("sub", ["run", "models"])
def test_help(sub):
    r = run_cli(sub, "--help", timeout=120)
    assert r.returncode == 0 and "usage: harness" in r.stdout


@pytest.mark.slow
def test_main_job_default_config(tmp_path):
    """The README's main command: default config on the CPU prints the table and writes the record."""
    cfg = tmp_path / "default.yaml"
    text = open(os.path.join(ROOT, "configs", "default.yaml")).read()
    cfg.write_text(text + f"  results_dir: {tmp_path / 'results'}\n")
    r = run_cli("run", str(cfg))
    assert r.returncode == 0, r.stderr
    header = r.stdout.splitlines()[0].split()
    assert header[:4] == ["model", "batch", "variant", "target"]
    row = r.stdout.splitlines()[2].split()
    assert row[:3] == ["resnet18_v1", "1", "tvm-fp32"] and row[3].startswith("llvm-")
    records = glob.glob(str(tmp_path / "results" / "*.json"))
    assert len(records) == 1
    rec = json.load(open(records[0]))
    assert rec["schema_version"] == 1 and rec["run_key"] == "resnet18_v1-B1-float32"
    lat = rec["variants"][0]["latency"]
    assert lat["repeat"] == 3 and len(lat["samples_ms"]) == 3
    assert lat["min_ms"] <= lat["median_ms"] <= lat["max_ms"]
    assert float(row[4]) == pytest.approx(lat["mean_ms"], abs=1e-3)  # the table is the record
    assert rec["variants"][0]["output_shape"] == [1, 1000] and rec["variants"][0]["output_finite"]
    for key in ("machine", "software", "git", "config"):
        assert key in rec
    assert rec["software"]["tvm"].startswith("0.27")
    assert rec["config"]["model"]["name"] == "resnet18_v1"


@pytest.mark.slow
def test_cuda_compile_only_without_gpu(tmp_path):
    """resnet18_v1 fp32 builds for sm_90 on a machine without a GPU (nvcc), and exports a library."""
    cfg = tmp_path / "c.yaml"
    so = tmp_path / "r18_cuda.so"
    cfg.write_text(f"model: {{name: resnet18_v1}}\nbuild: {{export: {so}}}\n"
                   f"bench: {{results_dir: {tmp_path / 'res'}}}\n")
    r = run_cli("run", str(cfg), "--target", "cuda", "--compile-only")
    assert r.returncode == 0, r.stderr
    assert "cuda-sm_" in r.stdout and "compile only" in r.stdout
    assert so.exists() and so.stat().st_size > 100_000
