"""The harness: int8 quantization, tuning and benchmarking of CNNs on Apache TVM 0.27."""

__version__ = "0.1.0"
