"""`harness suite`: a mini suite end to end, the cell that fails, and suite file mistakes."""
import csv
import glob
import json
import os

import pytest

from tests.conftest import ROOT, run_cli


def _write(path, text):
    path.write_text(text)
    return str(path)


MINI = """
name: mini
models: [resnet18_v1, mobilenet1.0]
batches: [1]
image_size: 32
variants: [tvm-int8, tvm-fp32]
peers: {{cpu: [{peers}], cuda: []}}
run:
  target: llvm
  quantize: {{calibrate_mode: kl_divergence, weight_scale: channel_max,
             calib: {{source: synthetic, num_samples: 8, batch_size: 4}}}}
  tuning: {{apply: false}}
  bench: {{number: 1, repeat: 3, min_repeat_ms: 0}}
"""


@pytest.mark.slow
def test_mini_suite_records_table_csv_png(tmp_path):
    """Two models, one batch, int8 + fp32 + peers: records, table.md, table.csv, figure.png agree."""
    cfg = _write(tmp_path / "mini.yaml", MINI.format(peers="mxnet-fp32, onnxruntime-int8"))
    out = tmp_path / "out"
    r = run_cli("suite", cfg, "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    records = [json.load(open(p)) for p in sorted(glob.glob(str(out / "*.json")))]
    assert sorted(rec["model"]["name"] for rec in records) == ["mobilenet1.0", "resnet18_v1"]
    for name in ("table.md", "table.csv", "figure.png"):
        assert (out / name).stat().st_size > 0, name
    assert open(out / "figure.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"

    # every system of every cell is in the record, timed or with its reason
    ms = {}
    for rec in records:
        assert rec["model"]["input_shape"] == [1, 3, 32, 32]
        got = {v["variant"]: v for v in rec["variants"]}
        assert list(got) == ["tvm-fp32", "tvm-int8", "mxnet-fp32", "onnxruntime-int8"]
        assert got["tvm-fp32"]["latency"] and got["tvm-int8"]["latency"]
        for peer in ("mxnet-fp32", "onnxruntime-int8"):
            assert got[peer]["latency"] is not None or got[peer]["note"], peer
        assert got["mxnet-fp32"]["latency"] is not None, got["mxnet-fp32"]["note"]
        assert got["mxnet-fp32"]["agreement"]["max_rel_err"] <= 1e-3  # equal work before it was timed
        for name, v in got.items():
            if v["latency"]:
                ms[(rec["model"]["name"], name)] = v["latency"]["ms_per_image"]

    # the CSV's numbers are the records' numbers
    rows = list(csv.DictReader(open(out / "table.csv")))
    assert len(rows) == 2
    for row in rows:
        assert row["batch"] == "1"
        for (model, system), value in ms.items():
            if model == row["model"]:
                assert float(row[system]) == pytest.approx(value, rel=1e-9), (model, system)
    md = open(out / "table.md").read()
    assert "| resnet18_v1 |" in md.replace("  ", " ") or "resnet18_v1" in md
    assert "tvm-int8" in r.stdout and "Relative" in r.stdout


@pytest.mark.slow
def test_failing_cell_is_recorded_and_suite_goes_on(tmp_path):
    """digits_cnn cannot take a 32x32 input: its cell becomes n/a with the reason; the next cell runs."""
    text = MINI.format(peers="").replace("[resnet18_v1, mobilenet1.0]", "[digits_cnn, mobilenet1.0]")
    text = text.replace("variants: [tvm-int8, tvm-fp32]", "variants: [tvm-fp32]")
    out = tmp_path / "out"
    r = run_cli("suite", _write(tmp_path / "s.yaml", text), "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    recs = {json.load(open(p))["model"]["name"]: json.load(open(p)) for p in glob.glob(str(out / "*.json"))}
    bad = recs["digits_cnn"]["variants"][0]
    assert bad["latency"] is None and bad["note"].startswith("failed:")
    assert recs["mobilenet1.0"]["variants"][0]["latency"]["ms_per_image"] > 0
    assert [v["variant"] for v in recs["mobilenet1.0"]["variants"]] == ["tvm-fp32"]  # no int8, no peers
    assert "failed:" in open(out / "table.md").read()


@pytest.mark.parametrize("args, text, message", [
    (["--models", "resnet18_v1,resnet_50"], MINI.format(peers=""), "unknown model 'resnet_50'"),
    (["--peers", "tensorrt-int8"], MINI.format(peers=""), "unknown peer 'tensorrt-int8'"),
    (["--batches", "1,x"], MINI.format(peers=""), "comma-separated list of ints"),
    ([], MINI.format(peers="").replace("image_size: 32", "image_size: 32\nbatch: [1]"), "unknown config key 'batch'"),
    ([], MINI.format(peers="") + "  model: {name: vgg16}\n", "run.model: name, batch and input_shape"),
    ([], MINI.format(peers="").replace("target: llvm", "target: tpu"), "run: target.kind: invalid value 'tpu'"),
])
def test_suite_file_mistakes_are_one_line(tmp_path, args, text, message):
    r = run_cli("suite", _write(tmp_path / "s.yaml", text), "--out", str(tmp_path / "o"), *args, timeout=300)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()  # nothing ran


def test_shipped_suite_loads_with_every_cell():
    from harness.suite import cells, load_suite

    scfg = load_suite(os.path.join(ROOT, "configs", "suites", "tvm_cuda_int8.yaml"))
    got = [(c.model, c.batch) for c in cells(scfg)]
    assert len(got) == 12 and ("dcn_resnet101", 16) in got and ("vgg19", 1) in got
    assert all(c.config.quantize.calibrate_mode == "kl_divergence" for c in cells(scfg))
