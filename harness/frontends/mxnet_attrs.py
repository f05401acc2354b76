"""MXNet symbol attributes and Reshape codes, read without TVM: shared by the MXNet frontend
(:mod:`harness.frontends.mxnet`) and the torch peers' graph interpreter
(:mod:`harness.peers.mxnet_torch`), which also runs where only the TVM runtime is installed
(`harness bench-bundle`)."""
from __future__ import annotations

import ast
from typing import List, Sequence, Tuple


def _attr_tuple(attrs: dict, key: str, default: Sequence[int]) -> Tuple[int, ...]:
    raw = attrs.get(key)
    if raw is None or raw in ("()", "[]", "None"):
        return tuple(default)
    value = ast.literal_eval(raw)
    if isinstance(value, int):
        value = (value,) * len(default)
    return tuple(int(v) for v in value)


def _attr_int(attrs: dict, key: str, default: int) -> int:
    raw = attrs.get(key)
    return default if raw is None or raw == "None" else int(float(raw))


def _attr_float(attrs: dict, key: str, default: float) -> float:
    raw = attrs.get(key)
    return default if raw is None or raw == "None" else float(raw)


def _attr_bool(attrs: dict, key: str, default: bool) -> bool:
    raw = attrs.get(key)
    if raw is None:
        return default
    return str(raw).strip().lower() in ("true", "1")


def _attr_str(attrs: dict, key: str, default: str) -> str:
    raw = attrs.get(key)
    return default if raw is None else str(raw)


def mxnet_reshape_shape(in_shape: Sequence[int], spec: Sequence[int]) -> List[int]:
    """MXNet Reshape's special codes (0 copy, -1 infer, -2 rest, -3 merge two, -4 split one)."""
    out: List[int] = []
    i = j = 0
    while j < len(spec):
        s = spec[j]
        if s == 0:
            out.append(in_shape[i]); i += 1
        elif s == -1:
            out.append(-1); i += 1
        elif s == -2:
            out.extend(in_shape[i:]); i = len(in_shape)
        elif s == -3:
            out.append(in_shape[i] * in_shape[i + 1]); i += 2
        elif s == -4:
            a, b = spec[j + 1], spec[j + 2]
            if a == -1:
                a = in_shape[i] // b
            if b == -1:
                b = in_shape[i] // a
            out.extend([a, b]); i += 1; j += 2
        else:
            out.append(s); i += 1
        j += 1
    return out
