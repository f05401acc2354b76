"""`bench.rounds`: every system of a run (TVM's variants and the peers) timed in alternating
rounds, so that a noisy machine's slow minutes fall on all of them alike."""
import pytest

from harness import bench
from harness.config import config_from_dict
from harness.errors import ConfigError


def _stats(ms, repeat=2):
    return bench.LatencyStats.from_samples([ms / 1e3] * repeat, batch=1, number=3, repeat=repeat, min_repeat_ms=0)


def test_rounds_alternate_systems_and_pool_their_samples():
    calls, rests = [], []

    def measure_of(name, ms):
        def measure(first):
            calls.append((name, first))
            return _stats(ms)
        return measure

    def failing(first):
        calls.append(("broken", first))
        return None  # (a peer whose run failed: dropped)

    got = bench.time_in_rounds({"a": measure_of("a", 1.0), "broken": failing, "b": measure_of("b", 2.0)}, 3,
                               settle_s=0.5, sleep=rests.append)
    # round by round, in order, the warm-up (first=True) on the first round only; the failed one once
    assert calls == [("a", True), ("broken", True), ("b", True), ("a", False), ("b", False),
                     ("a", False), ("b", False)]
    assert rests == [0.5] * len(calls)  # a rest before every measurement
    assert sorted(got) == ["a", "b"]
    for name, ms in (("a", 1.0), ("b", 2.0)):
        s = got[name]
        assert s.rounds == 3 and s.repeat == 6 and len(s.samples_ms) == 6 and s.number == 3
        assert s.median_ms == pytest.approx(ms)
        assert s.to_dict()["rounds"] == 3


def test_rounds_must_be_positive():
    with pytest.raises(ConfigError, match="rounds must be >= 1"):
        config_from_dict({"model": {"name": "digits_cnn"}, "bench": {"rounds": 0}})
    assert config_from_dict({"model": {"name": "digits_cnn"}}).bench.rounds == 1


@pytest.mark.slow
def test_a_run_times_tvm_and_peers_in_rounds(tmp_path):
    """The int8 digits CNN with two peers, 2 rounds of 2 samples: every timed system has 4 samples
    from 2 rounds; the peers were checked against TVM fp32 before."""
    from harness.pipeline import run

    cfg = config_from_dict({
        "model": {"name": "digits_cnn"}, "target": "llvm",
        "quantize": {"calibrate_mode": "max", "skip_conv_layers": [],
                     "calib": {"source": "digits", "num_samples": 64, "batch_size": 32}},
        "bench": {"number": 1, "repeat": 2, "min_repeat_ms": 0, "rounds": 2, "results_dir": str(tmp_path)}})
    rec = run(cfg, peers=["onnxruntime-fp32", "mxnet-fp32"])
    got = {v["variant"]: v for v in rec["variants"]}
    assert list(got) == ["tvm-fp32", "tvm-int8", "onnxruntime-fp32", "mxnet-fp32"]
    for name, v in got.items():
        assert v["latency"] is not None, (name, v.get("note"))
        assert v["latency"]["rounds"] == 2 and len(v["latency"]["samples_ms"]) == 4, name
    for peer in ("onnxruntime-fp32", "mxnet-fp32"):
        assert got[peer]["agreement"]["max_rel_err"] <= 1e-3
    assert rec["config"]["bench"]["rounds"] == 2
    assert got["tvm-int8"]["speedup_vs_fp32"] > 0
