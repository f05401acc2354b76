"""The harness: int8 quantization, tuning and benchmarking of CNNs on Apache TVM 0.27."""

__version__ = "0.1.0"

import os as _os

# MXNet's oneDNN subgraph pass logs one line per graph it binds ("Subgraph backend MKLDNN is
# activated"); the peers bind many. Quiet unless the user asked for it.
_os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")
