"""`harness report`: the suite table, its formats, the figure and the regression check (synthetic records)."""
import csv
import io
import json
import re

import pytest

from harness.cli import main
from harness.errors import HarnessError, HarnessWarning
from harness.record import SCHEMA_VERSION
from harness.report import (compare, compare_cells, load_records, parse_fraction, plot_suite, suite_rows,
                            suite_table)


def latency(ms_per_image, batch):
    mean = ms_per_image * batch
    return {"mean_ms": mean, "median_ms": mean, "std_ms": 0.01, "min_ms": mean, "max_ms": mean,
            "images_per_s": 1e3 / ms_per_image, "batch": batch, "number": 10, "repeat": 3, "min_repeat_ms": 100,
            "samples_ms": [mean] * 3, "ms_per_image": ms_per_image}


def record(model, batch, systems, created="2024-05-01T10:00:00+00:00", target="cuda-sm_61"):
    """systems: {name: ms/image, or a string (the n/a reason)}."""
    variants = []
    for name, v in systems.items():
        if isinstance(v, str):
            variants.append({"variant": name, "target": target, "latency": None, "note": v})
        else:
            variants.append({"variant": name, "target": target, "latency": latency(v, batch)})
    return {"schema_version": SCHEMA_VERSION, "kind": "run", "created": created,
            "machine": {"cpu": "Test CPU", "gpu": "GeForce GTX 1080"}, "software": {"tvm": "0.27.0"},
            "git": {}, "config": {}, "run_key": f"{model}-B{batch}",
            "model": {"name": model, "batch": batch}, "target": {"key": target}, "variants": variants}


def write(path, rec):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))
    return str(path)


SUITE = [
    record("resnet50_v1", 1, {"mxnet-fp32": 5.49, "tvm-fp32": 2.9, "tvm-int8": 1.43, "tensorrt-int8": 1.47}),
    record("vgg19", 1, {"tvm-fp32": 6.0, "tvm-int8": 3.0, "mxnet-fp32": "mxnet not installed"}),
    record("resnet50_v1", 16, {"tvm-fp32": 1.2, "tvm-int8": 0.6}),
]


def md_rows(text):
    """The Markdown table's rows as dicts (header -> cell)."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    split = lambda ln: [c.strip() for c in ln.strip("|").split("|")]  # noqa: E731
    headers = split(lines[0])
    assert set(lines[1]) <= set("|-: ")
    return [dict(zip(headers, split(ln))) for ln in lines[2:]]


def test_md_numbers_relative_and_notes():
    text = suite_table(SUITE, "md")
    rows = md_rows(text)
    headers = list(rows[0])
    assert headers == ["model", "batch", "tvm-int8", "tvm-fp32", "mxnet-fp32", "tensorrt-int8", "Relative"]
    assert [(r["model"], r["batch"]) for r in rows] == [("resnet50_v1", "1"), ("resnet50_v1", "16"), ("vgg19", "1")]
    for rec in SUITE:
        row = next(r for r in rows if r["model"] == rec["model"]["name"] and r["batch"] == str(rec["model"]["batch"]))
        for v in rec["variants"]:
            if v["latency"] is None:
                assert row[v["variant"]] == "n/a"
            else:
                assert float(row[v["variant"]]) == pytest.approx(v["latency"]["ms_per_image"], abs=5e-4)
    r1 = rows[0]
    assert r1["Relative"] == "1.00 / 2.03 / 3.84 / 1.03"  # 1.43 fastest; 2.9/1.43, 5.49/1.43, 1.47/1.43
    assert rows[1]["Relative"] == "1.00 / 2.00 / - / -"
    assert rows[2]["Relative"] == "1.00 / 2.00 / - / -"
    assert "- mxnet-fp32, vgg19, batch 1: mxnet not installed" in text.splitlines()
    assert "tensorrt-int8, vgg19, batch 1: not in any record" in text
    assert "GeForce GTX 1080" in text and "TVM 0.27.0" in text and "2024-05-01" in text


def test_text_and_json_formats():
    text = suite_table(SUITE, "text")
    assert "1.430" in text and "1.00 / 2.03 / 3.84 / 1.03" in text
    assert "mxnet-fp32, vgg19, batch 1: mxnet not installed" in text
    rows = json.loads(suite_table(SUITE, "json"))
    assert rows[0]["model"] == "resnet50_v1" and rows[0]["tvm-int8"] == 1.43
    assert rows[0]["relative"]["tvm-int8"] == 1.0
    assert rows[2]["mxnet-fp32"] is None and rows[2]["notes"] == {"mxnet-fp32": "mxnet not installed"}
    with pytest.raises(HarnessError):
        suite_table(SUITE, "html")


def test_csv_parses_with_unrounded_numbers():
    recs = [record("m", 2, {"tvm-int8": 1.23456789, "tvm-fp32": "compile only"})]
    rows = list(csv.DictReader(io.StringIO(suite_table(recs, "csv"))))
    assert len(rows) == 1
    assert float(rows[0]["tvm-int8"]) == 1.23456789
    assert rows[0]["tvm-fp32"] == ""
    assert rows[0]["notes"] == "tvm-fp32: compile only"
    assert rows[0]["Relative"] == "1.00 / -"
    assert rows[0]["batch"] == "2"


def test_newest_record_wins():
    old = record("m", 1, {"tvm-int8": 2.0, "tvm-fp32": 4.0}, created="2024-05-02T10:00:00+00:00")
    new = record("m", 1, {"tvm-int8": 1.5}, created="2024-05-03T09:00:00+00:00")
    for order in ([old, new], [new, old]):
        rows = suite_rows(order)
        cells = rows[("m", 1)]
        assert cells["tvm-int8"].ms == 1.5
        assert cells["tvm-fp32"].ms == 4.0  # only in the older record: kept
        assert rows.systems == ["tvm-int8", "tvm-fp32"]
    assert "2024-05-02 .. 2024-05-03" in suite_table([old, new], "md")


def test_load_records_directory_recursive_and_errors(tmp_path):
    write(tmp_path / "a" / "2.json", SUITE[1])
    write(tmp_path / "1.json", SUITE[0])
    (tmp_path / "notes.txt").write_text("not json")
    recs = load_records([str(tmp_path)])
    assert [r["model"]["name"] for r in recs] == ["resnet50_v1", "vgg19"]
    bad = dict(SUITE[0], schema_version=SCHEMA_VERSION + 1)
    write(tmp_path / "b" / "old.json", bad)
    with pytest.warns(HarnessWarning, match="skipped .*old.json: record schema version"):  # found in a folder
        assert len(load_records([str(tmp_path)])) == 2
    with pytest.raises(HarnessError, match="old.json.*schema version"):  # named
        load_records([str(tmp_path / "b" / "old.json")])
    with pytest.raises(HarnessError, match="no such file"):
        load_records([str(tmp_path / "missing.json")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(HarnessError, match="no \\*.json"):
        load_records([str(tmp_path / "empty")])


def test_cli_directory_with_non_record_json(tmp_path, capsys):
    write(tmp_path / "res" / "r.json", SUITE[0])
    write(tmp_path / "res" / "sub" / "calibration.json", {"tensors": []})
    assert main(["report", str(tmp_path / "res")]) == 0  # skipped, with one line naming it
    out, err = capsys.readouterr()
    assert err.strip() == (f"warning: skipped {tmp_path / 'res' / 'sub' / 'calibration.json'}: not a result "
                           "record (no schema_version)")
    assert "resnet50_v1" in out
    assert main(["report", str(tmp_path / "res" / "sub" / "calibration.json")]) == 2  # named: an error
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert "calibration.json" in err


def test_cli_prints_and_writes(tmp_path, capsys):
    res = [write(tmp_path / f"r{i}.json", r) for i, r in enumerate(SUITE)]
    assert main(["report", *res, "--format", "md"]) == 0
    assert md_rows(capsys.readouterr().out)[0]["tvm-int8"] == "1.430"
    out = tmp_path / "t.csv"
    assert main(["report", str(tmp_path), "--output", str(out)]) == 0  # format from the extension
    rows = list(csv.DictReader(out.open(newline="")))
    assert [r["model"] for r in rows] == ["resnet50_v1", "resnet50_v1", "vgg19"]


def test_plot_writes_png(tmp_path, capsys):
    png = tmp_path / "fig.png"
    res = [write(tmp_path / "res" / f"r{i}.json", r) for i, r in enumerate(SUITE)]
    assert main(["report", *res, "--plot", str(png)]) == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert plot_suite(SUITE[:1], str(tmp_path / "one.png")).endswith("one.png")


def test_compare_cli_regression_and_equal(tmp_path, capsys):
    base = record("m", 1, {"tvm-int8": 1.0, "tvm-fp32": 2.0, "mxnet-fp32": 5.0})
    slow = record("m", 1, {"tvm-int8": 1.1, "tvm-fp32": 2.0, "torch-fp32": 3.0},  # int8 10% slower
                  created="2024-05-02T10:00:00+00:00")
    b = write(tmp_path / "base" / "b.json", base)
    s = write(tmp_path / "now" / "slow.json", slow)
    e = write(tmp_path / "eq" / "same.json", dict(base, created="2024-05-02T10:00:00+00:00"))

    assert main(["report", s, "--compare", str(tmp_path / "base"), "--fail-over", "5%"]) == 1
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "tvm-int8" in ln and "regression" in ln)
    assert "1.000" in line and "1.100" in line and "+10.0%" in line
    assert re.search(r"mxnet-fp32.*not compared \(not in the results\)", out)
    assert re.search(r"torch-fp32.*not compared \(not in the baseline\)", out)
    assert "2 compared, 1 regression over +5%, 2 not compared" in out

    assert main(["report", e, "--compare", b, "--fail-over", "0.05"]) == 0
    assert "+0.0%" in capsys.readouterr().out
    assert main(["report", s, "--compare", b, "--fail-over", "15%"]) == 0  # within the allowance
    capsys.readouterr()

    regs = compare([slow], [base], fail_over=0.05)
    assert [(c.system, round(c.change, 3)) for c in regs] == [("tvm-int8", 0.1)]
    assert compare([slow], [base], fail_over=0.2) == []


def test_compare_matches_target_and_na():
    base = record("m", 1, {"tvm-int8": 1.0}, target="cuda-sm_61")
    other = record("m", 1, {"tvm-int8": 9.0}, target="llvm-znver5")
    na = record("m", 1, {"tvm-int8": "compile only"}, target="cuda-sm_61")
    assert compare([other], [base]) == []  # different target key: not the same cell
    cells = compare_cells([other], [base])
    assert {c.status for c in cells} == {"not compared"} and len(cells) == 2
    (cell,) = compare_cells([na], [base])
    assert cell.status == "not compared" and "now n/a: compile only" in cell.reason


@pytest.mark.parametrize("bad", ["five", "5%%", "-1%", "nan", "5"])
def test_bad_fail_over_is_one_line_error(tmp_path, capsys, bad):
    r = write(tmp_path / "r.json", SUITE[0])
    assert main(["report", r, "--compare", r, f"--fail-over={bad}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: --fail-over")


def test_parse_fraction():
    assert parse_fraction("5%") == pytest.approx(0.05)
    assert parse_fraction("0.05") == 0.05
    assert parse_fraction(" 12.5% ") == pytest.approx(0.125)
    assert parse_fraction("0") == 0.0


def test_markdown_table_for_the_readme():
    from harness.report import markdown_table

    assert markdown_table(["model", "ms"], [["resnet50_v1", "26.1"], ["digits", None]]).splitlines() == [
        "| model | ms |", "| --- | --- |", "| resnet50_v1 | 26.1 |", "| digits |  |"]
