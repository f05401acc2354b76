"""EfficientNet-Lite0's architecture table, shared by the PyTorch and the Gluon definitions
(this module imports neither framework)."""

#: One row per stage: (repeats, kernel, stride of first block, expand ratio, in, out channels).
BLOCK_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)

STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPS = 1e-3
DROPOUT = 0.2
