"""Config loading: typed values, and one clear line for each mistake."""
import glob
import os

import pytest
import yaml

from harness.config import RunConfig, load_config
from harness.errors import ConfigError
from tests.conftest import ROOT, run_cli


def _write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_defaults_and_shorthand(tmp_path):
    cfg = load_config(_write(tmp_path, "model: {name: resnet50_v1, batch: 4}\ntarget: llvm\n"))
    assert isinstance(cfg, RunConfig)
    assert cfg.model.name == "resnet50_v1" and cfg.model.batch == 4
    assert cfg.target.kind == "llvm" and cfg.build.opt_level == 3
    assert (cfg.bench.number, cfg.bench.repeat, cfg.bench.min_repeat_ms) == (10, 5, 200)


def test_overrides_apply_over_shorthand(tmp_path):
    cfg = load_config(_write(tmp_path, "target: llvm\n"), {"target": {"kind": "cuda"}})
    assert cfg.target.kind == "cuda"


def test_unknown_key_names_key_and_valid_ones(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, "bench:\n  numbr: 3\n"))
    assert str(e.value) == (
        "unknown config key 'bench.numbr' (did you mean 'number'?); valid keys in bench: "
        "number, repeat, min_repeat_ms, warmup, rounds, results_dir"
    )


def test_unknown_section(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'benchmark' \(did you mean 'bench'\?\)"):
        load_config(_write(tmp_path, "benchmark: {}\n"))


def test_wrong_type_and_choice(tmp_path):
    with pytest.raises(ConfigError, match=r"^model.batch: expected an integer, got 'one'$"):
        load_config(_write(tmp_path, "model: {batch: one}\n"))
    with pytest.raises(ConfigError, match=r"^target.kind: invalid value 'tpu'; valid: auto, llvm, cuda$"):
        load_config(_write(tmp_path, "target: tpu\n"))
    with pytest.raises(ConfigError, match=r"^build.schedules.cpu_int8_winograd_tile: invalid value 3; valid: 2, 4$"):
        load_config(_write(tmp_path, "build: {schedules: {cpu_int8_winograd_tile: 3}}\n"))


def test_unknown_model_lists_known(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, "model: {name: resnet51_v1}\n"))
    msg = str(e.value)
    assert msg.startswith("unknown model 'resnet51_v1' (did you mean 'resnet50_v1'?); known models: resnet18_v1,")
    assert "dcn_resnet101" in msg


def test_missing_model_file(tmp_path):
    with pytest.raises(ConfigError, match=r"^model.symbol: file not found: nothere-symbol.json$"):
        load_config(_write(tmp_path, "model: {symbol: nothere-symbol.json, params: x.params}\n"))


def test_missing_config_file():
    with pytest.raises(ConfigError, match="config file not found: /no/such.yaml"):
        load_config("/no/such.yaml")


def test_shipped_configs_load():
    paths = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))
    assert len(paths) >= 13
    for p in paths:
        load_config(p)


def test_template_documents_every_key():
    """configs/TEMPLATE.yaml names every key the loader accepts, and loads."""
    import dataclasses
    import typing

    with open(os.path.join(ROOT, "configs", "TEMPLATE.yaml")) as f:
        data = yaml.safe_load(f)

    def check(cls, values, where):
        hints = typing.get_type_hints(cls)
        assert set(values) == {f.name for f in dataclasses.fields(cls)}, where
        for name, tp in hints.items():
            inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)] or [tp]
            if dataclasses.is_dataclass(inner[0]):
                check(inner[0], values[name], f"{where}.{name}")

    check(RunConfig, data, "config")
    cfg = load_config(os.path.join(ROOT, "configs", "TEMPLATE.yaml"))
    assert cfg.quantize is not None and cfg.accuracy is not None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("bench: {numbr: 3}\n", "error: unknown config key 'bench.numbr'"),
        ("model: {name: nosuchnet}\n", "error: unknown model 'nosuchnet'"),
        ("model: {onnx: missing.onnx, frontend: onnx}\n", "error: model.onnx: file not found: missing.onnx"),
    ],
)
def test_cli_config_errors_are_one_line(tmp_path, text, expected):
    r = run_cli("run", _write(tmp_path, text), "--quiet", timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), r.stderr
    assert "Traceback" not in r.stderr


def test_cli_missing_config_file():
    r = run_cli("run", "/no/such/config.yaml", timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == "error: config file not found: /no/such/config.yaml"
