"""A small CNN trained on scikit-learn's `digits`, for accuracy tests of the quantizer.

The data set (1797 labelled 8x8 grayscale digits, 10 classes) ships inside
scikit-learn, so nothing is downloaded. The net trains on CPU in a few seconds
to ~98% held-out top-1 and is fully deterministic for a given seed: it gives a
real, trained model whose int8 accuracy can be checked against its fp32 accuracy
and the true labels.

Architecture (MXNet ops: Convolution, Activation relu, Pooling, Flatten,
FullyConnected, all of which the harness's MXNet converter handles)::

    data (N,1,8,8) -> conv 16 3x3 pad 1 -> relu -> conv 32 3x3 pad 1 -> relu
    -> maxpool 2x2 -> flatten -> dense 64 -> relu -> dense 10 (logits)

Inputs are the pixel values divided by 16 (0..1): in ModelSpec terms mean 0, std 1.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

#: Shape of one batch-1 input and the number of classes.
DIGITS_INPUT_SHAPE = (1, 1, 8, 8)
DIGITS_NUM_CLASSES = 10
#: Fixed parameter prefix, so that exported symbols and parameter names are stable.
DIGITS_PREFIX = "digits_"

Split = Tuple[np.ndarray, np.ndarray]


def load_digits_split(seed: int = 0, test_fraction: float = 0.25) -> Tuple[Split, Split]:
    """Stratified, seeded split of scikit-learn's digits.

    Returns ((x_train, y_train), (x_test, y_test)); x float32 (N,1,8,8) in 0..1
    (pixel / 16), y int32 class labels.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, stratify=y, random_state=seed)
    return (np.ascontiguousarray(x_tr), y_tr), (np.ascontiguousarray(x_te), y_te)


def digits_cnn():
    """The (uninitialised) Gluon network described in the module docstring."""
    from mxnet.gluon import nn

    net = nn.HybridSequential(prefix=DIGITS_PREFIX)
    with net.name_scope():
        net.add(
            nn.Conv2D(16, kernel_size=3, padding=1, in_channels=1, activation="relu"),
            nn.Conv2D(32, kernel_size=3, padding=1, in_channels=16, activation="relu"),
            nn.MaxPool2D(pool_size=2, strides=2),
            nn.Flatten(),
            nn.Dense(64, in_units=32 * 4 * 4, activation="relu"),
            nn.Dense(DIGITS_NUM_CLASSES, in_units=64),
        )
    return net


def train_digits_cnn(seed: int = 0, epochs: int = 12, batch_size: int = 32, learning_rate: float = 2e-3):
    """Train the digits CNN; returns (net, (x_train, y_train), (x_test, y_test)).

    The net is hybridized (``net(mx.sym.var('data'))`` gives its symbol) and
    its logits are the outputs (no softmax). Training is deterministic for a
    given seed: the split, the initialisation (mx.random), and the order of the
    mini-batches (numpy RandomState) all derive from it, and Adam without
    weight decay or dropout has no other randomness; two runs give bit-identical
    weights on the same machine.
    """
    import mxnet as mx
    from mxnet import autograd, gluon

    (x_tr, y_tr), (x_te, y_te) = load_digits_split(seed)

    mx.random.seed(seed)
    np.random.seed(seed)
    net = digits_cnn()
    net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2), ctx=mx.cpu())
    net.hybridize(static_alloc=True, static_shape=True)
    trainer = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": learning_rate},
                            kvstore=None, update_on_kvstore=False)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()

    # Keep every batch the same size (drop the remainder) so the static graph is reused.
    order_rng = np.random.RandomState(seed)
    n_batches = len(x_tr) // batch_size
    x_all, y_all = mx.nd.array(x_tr), mx.nd.array(y_tr)
    for _ in range(epochs):
        perm = mx.nd.array(order_rng.permutation(len(x_tr))[: n_batches * batch_size], dtype="int64")
        xs, ys = x_all.take(perm), y_all.take(perm)
        for b in range(n_batches):
            xb = xs[b * batch_size:(b + 1) * batch_size]
            yb = ys[b * batch_size:(b + 1) * batch_size]
            with autograd.record():
                loss = loss_fn(net(xb), yb)
            loss.backward()
            trainer.step(batch_size)
    mx.nd.waitall()
    return net, (x_tr, y_tr), (x_te, y_te)


def digits_predict(net, x: np.ndarray) -> np.ndarray:
    """Logits (N, 10) of `net` on inputs x (N,1,8,8), as numpy float32."""
    import mxnet as mx

    return net(mx.nd.array(x)).asnumpy()


def digits_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy (0..1) of logits (N, classes) against integer labels (N,)."""
    logits, labels = np.asarray(logits), np.asarray(labels).reshape(-1)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"logits of shape {logits.shape} do not fit {labels.shape[0]} labels")
    return float(np.mean(np.argmax(logits, axis=1) == labels))
