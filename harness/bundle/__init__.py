"""Build here, run there: a bundle of exported libraries that runs with the TVM runtime alone.

``harness bundle CONFIG|SUITE --target cuda|llvm --out DIR`` (:mod:`harness.bundle.build`, needs
the TVM compiler; nvcc for CUDA, no GPU) compiles every model x batch x variant with the model's
weights as parameters: their packing (the int8 convs' weight layouts, BatchNorm folding) is lifted by
``relax.transform.LiftTransformParams`` into ``main_transform_params``, which runs once at load. Weights
do not travel: the runner makes seeded weights of the shapes and dtypes the manifest lists (latency does
not depend on their values). One small reference case (the trained digits CNN, int8) keeps its real
weights and the CPU's int8 output on a fixed input, so that the target's int8 kernels are checked.

``harness bench-bundle DIR`` (:mod:`harness.bundle.runner`) needs only the TVM runtime and numpy
(``TVM_USE_RUNTIME_LIB=1`` and a ``tvm`` package without ``libtvm_compiler.so`` is enough): it checks
the reference case, times every variant with ``time_evaluator`` like ``harness run``, times the torch
peers where torch is installed, and writes the result records ``harness report`` merges.

Layout of a bundle::

    DIR/manifest.json                      what was built, for what, by which harness (manifest.py)
    DIR/cases/<model>-B<batch>/<variant>.so
    DIR/reference/<variant>.so, weights.npz, input.npy, expected.npy
    DIR/peers/<model>.json                 the MXNet graph the torch peers run (no weights)

Importing this package imports neither TVM nor any framework.
"""
from .manifest import BUNDLE_FORMAT, MANIFEST, VARIANTS, BundleError, load_manifest

__all__ = ["BUNDLE_FORMAT", "MANIFEST", "VARIANTS", "BundleError", "load_manifest"]
