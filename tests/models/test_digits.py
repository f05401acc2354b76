"""Tests of the scikit-learn digits CNN (harness.models.digits)."""
import json

import mxnet as mx
import numpy as np
import pytest

from harness.models.digits import (
    DIGITS_INPUT_SHAPE, digits_accuracy, digits_predict, load_digits_split, train_digits_cnn,
)


@pytest.fixture(scope="module")
def two_trainings():
    return train_digits_cnn(seed=0), train_digits_cnn(seed=0)


def test_split_is_stratified_and_scaled():
    (x_tr, y_tr), (x_te, y_te) = load_digits_split(seed=0)
    assert x_tr.shape == (1347, 1, 8, 8) and x_te.shape == (450, 1, 8, 8)
    assert x_tr.dtype == np.float32 and 0 <= x_tr.min() and x_tr.max() <= 1
    assert set(np.unique(y_te)) == set(range(10))
    assert np.bincount(y_te).min() >= 40  # every class represented in proportion


def test_digits_cnn_is_accurate(two_trainings):
    net, (x_tr, y_tr), (x_te, y_te) = two_trainings[0]
    acc = digits_accuracy(digits_predict(net, x_te), y_te)
    assert acc >= 0.95, acc


def test_digits_cnn_training_is_deterministic(two_trainings):
    (a, _, test_a), (b, _, test_b) = two_trainings
    np.testing.assert_array_equal(test_a[0], test_b[0])
    pa, pb = a.collect_params(), b.collect_params()
    assert list(pa.keys()) == list(pb.keys())
    for name in pa.keys():
        np.testing.assert_array_equal(pa[name].data().asnumpy(), pb[name].data().asnumpy(), err_msg=name)


def test_digits_cnn_exports_to_symbol(two_trainings):
    net = two_trainings[0][0]
    sym = net(mx.sym.var("data"))
    ops = [n["op"] for n in json.loads(sym.tojson())["nodes"]]
    assert ops.count("Convolution") >= 2
    assert set(ops) <= {"null", "Convolution", "BatchNorm", "Activation", "Pooling", "Flatten", "FullyConnected"}
    assert sym.infer_shape(data=DIGITS_INPUT_SHAPE)[1] == [(1, 10)]


def test_digits_accuracy():
    logits = np.array([[0.1, 2.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    assert digits_accuracy(logits, np.array([1, 0, 2, 2])) == 0.75
    with pytest.raises(ValueError):
        digits_accuracy(logits, np.array([1, 0]))
