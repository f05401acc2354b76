"""Bad inputs and file-system faults: each is one line `error: ...` with exit status 2 (or a
`warning:` line where something is skipped and the rest kept), before any work where it can be
found before, and nothing measured is lost where it can only be found after.

Most tests run the command in this process (`harness.cli.main`) and stop before a model loads;
the ones that build, time or get killed are marked slow.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from harness.cli import main
from tests.conftest import ROOT

DIGITS = """model: {{name: digits_cnn}}
target: llvm
bench: {{number: 1, repeat: 1, min_repeat_ms: 0, warmup: 0, results_dir: {results}}}
"""


def _config(tmp_path, text: str, name: str = "c.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _error(capsys) -> str:
    """The one line a failed command printed (stderr), checked to be one `error:` line."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def _tree(path) -> list:
    return sorted(os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs)


# ----------------------------------------------------------------------------- results folder


@pytest.mark.parametrize("case", ["file", "below a file", "under /proc"])
def test_run_refuses_a_results_folder_it_cannot_write_before_any_work(tmp_path, capsys, case):
    afile = tmp_path / "afile"
    afile.write_text("x")
    results = {"file": str(afile), "below a file": str(afile / "res"), "under /proc": "/proc/harness-results"}[case]
    cfg = _config(tmp_path, DIGITS.format(results=results))
    assert main(["run", cfg, "--quiet"]) == 2
    err = _error(capsys)
    expected = {
        "file": f"error: bench.results_dir: {afile} is a file, not a folder; give a folder for the records",
        "below a file": f"error: bench.results_dir: {afile / 'res'} lies below the file {afile}, not a folder; "
                        "give a folder for the records",
        "under /proc": "error: bench.results_dir: cannot write records into /proc/harness-results (No such file "
                       "or directory); give a folder you can write",
    }[case]
    assert err == expected
    assert _tree(tmp_path) == ["afile", "c.yaml"] and afile.read_text() == "x"


def _as_nobody(argv) -> list:
    """`argv` as a user that is not root: itself when this is not root, else under setpriv as uid
    65534 (keeping only CAP_DAC_READ_SEARCH, so that it can read the interpreter and the tests'
    files wherever they are, but not write where others may not); None where that cannot be done."""
    if os.geteuid() != 0:
        return list(argv)
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    cmd = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=+dac_read_search",
           "--ambient-caps=+dac_read_search", *argv]
    probe = subprocess.run(cmd[:-len(argv)] + [sys.executable, "-c", "import os; print(os.geteuid())"],
                           capture_output=True, text=True, timeout=120)
    return cmd if probe.returncode == 0 and probe.stdout.strip() == "65534" else None


def test_run_refuses_a_read_only_results_folder_as_a_user(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    cfg = _config(tmp_path, DIGITS.format(results=ro))
    cmd = _as_nobody([sys.executable, "-m", "harness", "run", cfg, "--quiet"])
    if cmd is None:
        pytest.skip("cannot run a command as a user other than root here (no setpriv, or it failed)")
    os.chmod(tmp_path, 0o755)
    os.chmod(ro, 0o555)
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                           env=dict(os.environ, PYTHONPATH=ROOT, HOME=str(tmp_path)))
    finally:
        os.chmod(ro, 0o755)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == (f"error: bench.results_dir: cannot write records into {ro} (Permission denied); "
                                "give a folder you can write")
    assert os.listdir(ro) == []


@pytest.mark.slow
def test_record_goes_elsewhere_when_the_folder_fails_at_the_end(tmp_path, capsys, monkeypatch):
    """The folder was fine at the start and refuses the record at the end: the table is printed,
    the record is written to the fallback folder, the error line says where; exit status 2."""
    from harness import record as hrecord

    results, fallback = tmp_path / "res", tmp_path / "fallback"
    write = hrecord.write_record

    def refuse_results(record, results_dir, run_key):
        if os.path.abspath(results_dir) == str(results):
            raise PermissionError(13, "Permission denied")
        return write(record, results_dir, run_key)

    monkeypatch.setattr(hrecord, "write_record", refuse_results)
    monkeypatch.setattr(hrecord, "fallback_results_dir", lambda: str(fallback))
    cfg = _config(tmp_path, DIGITS.format(results=results))
    assert main(["run", cfg, "--quiet"]) == 2
    out, err = capsys.readouterr()
    saved = _tree(fallback)
    assert len(saved) == 1 and saved[0].endswith("-digits_cnn-B1-float32.json")
    path = fallback / saved[0]
    assert err.strip() == (f"error: bench.results_dir: could not write the record into {results} "
                           f"(Permission denied); it was written to {path} instead")
    rec = hrecord.load_record(str(path))
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["model", "batch", "variant"]
    row = lines[2].split()
    assert row[:3] == ["digits_cnn", "1", "tvm-fp32"]
    assert float(row[4]) == pytest.approx(rec["variants"][0]["latency"]["mean_ms"], abs=1e-3)
    assert rec["variants"][0]["threads"] == os.cpu_count()  # target.num_cores' default: TVM ran on all CPUs
    assert not results.exists()


def test_suite_refuses_an_out_folder_it_cannot_write(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    suite = _config(tmp_path, "models: [digits_cnn]\nbatches: [1]\nvariants: [tvm-fp32]\n"
                              "peers: {cpu: [], cuda: []}\nrun: {target: llvm}\n", "s.yaml")
    assert main(["suite", suite, "--out", str(afile), "--quiet"]) == 2
    assert _error(capsys) == (f"error: suite results folder: {afile} is a file, not a folder; give a folder "
                              "for the records")
    assert _tree(tmp_path) == ["afile", "s.yaml"]


# ----------------------------------------------------------------------------- tuning logs


def test_tune_refuses_tuning_logs_that_is_a_file(tmp_path, capsys):
    logs = tmp_path / "logs"
    logs.write_text("x")
    cfg = _config(tmp_path, DIGITS.format(results=tmp_path / "res") + f"tuning: {{logs: {logs}}}\n")
    assert main(["tune", cfg, "--quiet"]) == 2
    assert _error(capsys) == (f"error: tuning.logs: {logs} is a file, not a folder; give a folder for the "
                              "tuning databases")
    assert logs.read_text() == "x"


def test_tune_conv_refuses_logs_below_a_file(tmp_path, capsys):
    logs = tmp_path / "logs"
    logs.write_text("x")
    assert main(["tune-conv", "--shape", "1,16,10,10,32,3,3,1,1", "--trials", "2", "--logs", str(logs)]) == 2
    err = _error(capsys)
    assert err.startswith(f"error: --logs: {logs}/") and err.endswith(
        f" lies below the file {logs}, not a folder; give a folder for the tuning databases")


@pytest.mark.parametrize("trials", ["-3", "-1"])
def test_negative_trials_are_refused(tmp_path, capsys, trials):
    assert main(["tune-conv", "--shape", "1,16,10,10,32,3,3,1,1", "--trials", trials,
                 "--logs", str(tmp_path / "logs")]) == 2
    assert _error(capsys) == f"error: --trials: must be >= 0 (0: no tuning), got {trials}"
    cfg = _config(tmp_path, DIGITS.format(results=tmp_path / "res"))
    assert main(["tune", cfg, "--trials", trials]) == 2
    assert _error(capsys) == f"error: --trials: must be >= 0 (search trials wanted in the database), got {trials}"
    assert not (tmp_path / "logs").exists()


def test_tune_conv_zero_trials_says_what_it_did(tmp_path, capsys):
    logs = tmp_path / "logs"
    assert main(["tune-conv", "--shape", "1,16,10,10,32,3,3,1,1", "--trials", "0", "--logs", str(logs)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith("--trials 0: nothing tuned and nothing emitted (database ")
    assert out.rstrip().endswith("left as it was); give --trials N to tune, --emit-source FILE to write the "
                                 "kernel source")
    assert not logs.exists()


# ----------------------------------------------------------------------------- calibration tables

QUANT = DIGITS + """quantize:
  calibrate_mode: {mode}
  weight_scale: {weight_scale}
  skip_conv_layers: []
  calib: {{source: digits, num_samples: 16, batch_size: 8}}
"""


def test_quantize_table_that_is_a_folder(tmp_path, capsys):
    folder = tmp_path / "tables"
    folder.mkdir()
    cfg = _config(tmp_path, QUANT.format(results=tmp_path / "res", mode="max", weight_scale="max"))
    assert main(["quantize", cfg, "--table", str(folder), "--quiet"]) == 2
    assert _error(capsys) == f"error: --table: {folder} is a folder; give a calibration table file path"
    assert _tree(tmp_path) == ["c.yaml"]  # no .tmp beside it
    cfg = _config(tmp_path, QUANT.format(results=tmp_path / "res", mode="max", weight_scale="max")
                  + f"  table: {folder}\n")
    assert main(["run", cfg, "--quiet"]) == 2
    assert _error(capsys) == (f"error: quantize.table: {folder} is a folder; give a calibration table file "
                              "(read if it exists, written if not)")


@pytest.mark.parametrize("content", ["model: {name: resnet18_v1}\n", '{"version": 1, "results": []}\n'])
def test_quantize_does_not_overwrite_what_is_not_a_table(tmp_path, capsys, content):
    other = tmp_path / "precious.yaml"
    other.write_text(content)
    cfg = _config(tmp_path, QUANT.format(results=tmp_path / "res", mode="max", weight_scale="max"))
    assert main(["quantize", cfg, "--table", str(other), "--quiet"]) == 2
    assert _error(capsys) == (f"error: --table: {other} exists and is not a calibration table; not overwriting "
                              "it (give another path, or --force to replace it)")
    assert other.read_text() == content
    from harness.quantize import check_table_path

    assert check_table_path(str(other), force=True) == str(other)  # --force: allowed


def _digits_table(tmp_path, **qconfig) -> str:
    from harness.config import ModelConfig
    from harness.frontends import load_model
    from harness.quantize import QConfig, calibrate, save_table

    model = load_model(ModelConfig(name="digits_cnn"))
    table = calibrate(model.mod, model.params, None, model_name="digits_cnn",
                      config=QConfig(calibrate_mode="global_scale", **qconfig))
    return save_table(table, str(tmp_path / "table.json"))


def test_table_of_another_qconfig_is_refused(tmp_path, capsys):
    """A table calibrated with another calibrate_mode and skip list: one line naming both keys."""
    table = _digits_table(tmp_path, skip_conv_layers=[0])
    cfg = _config(tmp_path, QUANT.format(results=tmp_path / "res", mode="max", weight_scale="max")
                  + f"  table: {table}\n")
    assert main(["run", cfg, "--compile-only", "--quiet"]) == 2
    assert _error(capsys) == (
        f"error: {table}: calibration table made with another qconfig (skip_conv_layers: table [0], config []; "
        "calibrate_mode: table 'global_scale', config 'max'): recalibrate (harness quantize CONFIG --table PATH "
        "--force) or set the config's quantize keys as the table has them")
    assert not (tmp_path / "res").exists()


@pytest.mark.slow
def test_record_describes_what_was_built_with_a_table(tmp_path, capsys):
    """weight_scale is applied when the module is built: the config's is used, said, and recorded."""
    from harness.record import load_record

    # reduce_range and signed_data_offset "auto" as a config's table has them (the build resolves
    # them, and says nothing of them)
    table = _digits_table(tmp_path, skip_conv_layers=[], weight_scale="power2", reduce_range="auto",
                          signed_data_offset="auto")
    cfg = _config(tmp_path, QUANT.format(results=tmp_path / "res", mode="global_scale", weight_scale="channel_max")
                  + f"  table: {table}\n")
    assert main(["run", cfg, "--compile-only"]) == 0
    out, err = capsys.readouterr()
    assert (f"[harness] using calibration table {table}, building with the config's weight_scale 'channel_max' "
            "(table: 'power2')") in err.splitlines()
    rec = load_record(out.strip().splitlines()[-1].split("record: ", 1)[1])
    assert rec["calibration"]["qconfig"]["weight_scale"] == "channel_max"
    assert rec["calibration"]["table"] == table and rec["calibration"]["table_qconfig"]["weight_scale"] == "power2"
    assert rec["variants"][1]["calibrate_mode"] == "global_scale" and rec["variants"][1]["quantized_ops"] == 2


@pytest.mark.slow
def test_calibration_killed_leaves_no_table_and_the_next_run_works(tmp_path):
    """kill -9 during `harness quantize`: no table and no .tmp; a .tmp left by a kill while saving
    does not stop the next run, which writes the table whole."""
    cfg = _config(tmp_path, """model: {name: digits_cnn}
target: llvm
quantize:
  skip_conv_layers: []
  calibrate_chunk_by: 1
  calib: {source: digits, num_samples: 1347, batch_size: 1}
""")
    table = tmp_path / "t.json"
    cmd = [sys.executable, "-m", "harness", "quantize", cfg, "--table", str(table)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        for line in proc.stderr:  # killed as soon as calibration starts
            if line.startswith("[harness] calibrating"):
                os.killpg(proc.pid, signal.SIGKILL)
                break
    finally:
        if proc.poll() is None:
            time.sleep(0.5)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert _tree(tmp_path) == ["c.yaml"]
    (tmp_path / "t.json.tmp").write_text('{"version": 1, "tens')  # what a kill while saving leaves
    r = subprocess.run(cmd + ["--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    assert _tree(tmp_path) == ["c.yaml", "t.json"]
    with open(table) as f:
        assert [t["enabled"] for t in json.load(f)["tensors"]] == [True, True, False, False]  # dense kept fp32


# ----------------------------------------------------------------------------- report outputs


def _records(tmp_path):
    from tests.test_report import SUITE, write

    write(tmp_path / "res" / "a.json", SUITE[0])
    write(tmp_path / "res" / "b.json", SUITE[1])
    return str(tmp_path / "res")


def test_report_output_that_is_a_folder(tmp_path, capsys):
    res = _records(tmp_path)
    assert main(["report", res, "--output", res]) == 2
    assert _error(capsys) == f"error: --output: {res} is a folder; give a table file path"


def test_report_plot_below_a_file(tmp_path, capsys):
    res = _records(tmp_path)
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["report", res, "--plot", str(afile / "fig.png")]) == 2
    assert _error(capsys) == (f"error: --plot: {afile / 'fig.png'} lies below the file {afile}; give a PNG file "
                              "path in a folder")
    assert afile.read_text() == "x"


def test_report_skips_corrupt_and_foreign_json_in_a_folder(tmp_path, capsys):
    res = _records(tmp_path)
    (tmp_path / "res" / "cut.json").write_text('{"schema_version": 1, "mod')
    (tmp_path / "res" / "sub").mkdir()
    (tmp_path / "res" / "sub" / "table.json").write_text('{"version": 1, "tensors": []}')
    assert main(["report", res]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        f"warning: skipped {res}/cut.json: not JSON (Unterminated string starting at: line 1 column 23 (char 22))",
        f"warning: skipped {res}/sub/table.json: not a result record (no schema_version)",
    ]
    assert "resnet50_v1" in out and "vgg19" in out
    for name in ("a.json", "b.json"):
        os.remove(os.path.join(res, name))
    assert main(["report", res]) == 2
    assert _error(capsys) == (f"error: no result records: {res}/cut.json: not JSON (Unterminated string starting "
                              "at: line 1 column 23 (char 22)) (and 1 more file(s) that are not records)")


# ----------------------------------------------------------------------------- config and data files


@pytest.mark.parametrize("command", ["run", "suite"])
@pytest.mark.parametrize("content, words", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a text file (byte 0 is not UTF-8)"),
    ("model: {name: r\u00e9snet}\n".encode("latin-1"), "not a text file (byte 15 is not UTF-8)"),
    (b"model:\x00 {}\n", "not a text file (it contains NUL bytes)"),
])
def test_binary_or_non_utf8_config(tmp_path, capsys, command, content, words):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    assert main([command, str(path)]) == 2
    what = "suite" if command == "suite" else "config"
    assert _error(capsys) == f"error: {path}: {words}; a {what} file is UTF-8 YAML"


@pytest.mark.parametrize("content", ["", "\n\n", "# nothing but a comment\n"])
def test_empty_config_and_suite_are_errors(tmp_path, capsys, content):
    path = tmp_path / "empty.yaml"
    path.write_text(content)
    assert main(["run", str(path)]) == 2
    assert _error(capsys) == (f"error: {path}: the config file is empty: name a model at least, e.g. "
                              "`model: {name: resnet18_v1}` (every key: configs/TEMPLATE.yaml)")
    assert main(["suite", str(path)]) == 2
    assert _error(capsys) == (f"error: {path}: the suite file is empty: name its models at least, e.g. "
                              "`models: [resnet18_v1]` (examples: configs/suites/)")


def test_garbage_params_file_says_why_in_words(tmp_path, capsys):
    (tmp_path / "tiny-symbol.json").write_text(json.dumps({
        "nodes": [{"op": "null", "name": "data", "inputs": []}, {"op": "Flatten", "name": "flat", "inputs": [[0, 0, 0]]}],
        "arg_nodes": [0], "heads": [[1, 0, 0]], "attrs": {"mxnet_version": ["int", 10901]}}))
    params = tmp_path / "tiny.params"
    params.write_bytes(bytes(range(256)) * 8)
    cfg = _config(tmp_path, "model: {name: tiny, symbol: tiny-symbol.json, params: tiny.params, "
                            "input_shape: [1, 3, 8, 8]}\ntarget: llvm\n"
                            f"bench: {{results_dir: {tmp_path / 'res'}}}\n")
    assert main(["run", cfg, "--quiet"]) == 2
    assert _error(capsys) == f"error: {params}: not an MXNet .params file (Invalid NDArray file format)"
    params.write_bytes(b"")
    assert main(["run", cfg, "--quiet"]) == 2
    assert _error(capsys) == f"error: {params}: not an MXNet .params file (Invalid NDArray file format)"
