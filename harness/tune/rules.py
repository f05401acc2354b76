"""MetaSchedule search spaces with int8 tensor intrinsics.

MetaSchedule builds a design space by running *schedule rules* over every block of a TIR
function, then *postprocessors* validate / finish each sampled schedule and *mutators* drive
the evolutionary search.  The defaults that TVM 0.27 picks from a target are good for float32,
but for int8 they miss what AutoTVM's 2019 templates did by hand:

* x86: ``MultiLevelTilingWithIntrin`` with a 16x4 VNNI intrinsic -- one ``vpdpbusd`` computes
  16 int32 lanes += 4 u8 x s8 products (AVX512-VNNI).  TVM's own ``dot_16x4_vnni`` does not
  compile with the LLVM inside the 0.27 wheel, so we register a fixed copy
  (:data:`VNNI_INTRIN`, see :func:`vnni_intrinsic`).  TVM's AVX512-BW variant
  (``dot_16x4_avx512``: ``vpmaddubsw`` + ``vpmaddwd``) is not used: ``vpmaddubsw`` saturates
  to int16, which is wrong for full-range u8 x s8 data.
  TVM 0.27 adds a VNNI rule by itself when the LLVM target has VNNI; we build the list
  explicitly so the choice is visible and does not depend on that heuristic.
* CUDA: ``MultiLevelTilingWithIntrin("dp4a_s8s8s32")`` (``__dp4a``: 4-way int8 dot product into
  an int32) -- the default CUDA rules have no dp4a rule at all.  On sm_75+ we also offer int8
  tensor cores (``MultiLevelTilingTensorCore`` with the ``wmma`` s8s8s32 16x16x16 intrinsics);
  both candidates enter the same search through :func:`UnionRule`.  (TVM 0.27 cannot build
  int8 wmma kernels with its storage rewrite on; :mod:`harness.tune.conv` switches it off for
  them.)

float32 keeps MetaSchedule's target defaults.

Public helpers: :func:`normalize_target`, :func:`target_summary`, :func:`space_for`,
:func:`int8_intrinsics_for`, :func:`trace_uses_intrinsic`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "VNNI_INTRIN",
    "vnni_intrinsic",
    "SearchSpace",
    "UnionRule",
    "normalize_target",
    "target_summary",
    "target_has_feature",
    "target_has_vnni",
    "cuda_sm",
    "int8_intrinsics_for",
    "cpu_int8_dots",
    "pmaddwd_intrinsic",
    "cpu_int8_dot_space",
    "cuda_int8_dp4a_space",
    "register_cpu_int8_intrinsics",
    "space_for",
    "int8_space",
    "default_space",
    "trace_uses_intrinsic",
    "load_tensor_intrinsics",
]

# Defaults filled into a CUDA target given as {"kind": "cuda", "arch": ...}: MetaSchedule's
# GPU rules (AutoBind, CrossThreadReduction, VerifyGPUCode) need them.  These are the limits
# every NVIDIA GPU since Kepler has (per block: 1024 threads, 48 KiB static shared memory,
# 64K registers; warps of 32).
_CUDA_DEFAULTS = {
    "max_threads_per_block": 1024,
    "max_num_threads": 1024,
    "thread_warp_size": 32,
    "max_shared_memory_per_block": 49152,
    "registers_per_block": 65536,
}

_INTRIN_LOADED = False


def load_tensor_intrinsics() -> None:
    """Register TVM's tensor intrinsics (imports ``tvm.s_tir.tensor_intrin``).

    The import parses a few hundred TVMScript functions and takes ~15-20 s on this machine;
    it is done once per process.
    """
    global _INTRIN_LOADED  # pylint: disable=global-statement
    if not _INTRIN_LOADED:
        import tvm.s_tir.tensor_intrin  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import

        _INTRIN_LOADED = True


VNNI_INTRIN = "harness_dot_16x4_vnni"
"""Our registration of the 16x4 u8 x s8 -> s32 VNNI dot product (see :func:`vnni_intrinsic`)."""


def _register_vnni_intrinsic() -> None:
    """Register :data:`VNNI_INTRIN`: ``C[0:16] += sum_k u8 A[k] * s8 B[0:16, k]`` via vpdpbusd.

    TVM 0.27 ships ``dot_16x4_vnni`` whose implementation calls
    ``llvm.x86.avx512.vpdpbusd.512`` with ``<16 x i32>`` operands.  LLVM 21 changed that
    intrinsic to take the byte vectors as ``<64 x i8>``; TVM 0.27's wheel is built with a newer
    LLVM, so every kernel using ``dot_16x4_vnni`` fails LLVM's verifier ("Call parameter type
    does not match function signature").  This registers the same computation with the byte
    operands passed as 64 x 8-bit vectors (the broadcast 4 activations, and the 16x4 weights).
    """
    from tvm.s_tir import TensorIntrin  # pylint: disable=import-outside-toplevel
    from tvm.script import tirx as T  # pylint: disable=import-outside-toplevel

    if TensorIntrin.get(VNNI_INTRIN, allow_missing=True) is not None:
        return

    @T.prim_func(s_tir=True)
    def desc(
        a: T.Buffer((4,), "uint8", offset_factor=1),
        b: T.Buffer((16, 4), "int8", offset_factor=1),
        c: T.Buffer((16,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(c[0:16], a[0:4], b[0:16, 0:4])
            T.writes(c[0:16])
            for lane, red in T.grid(16, 4):
                with T.sblock("update"):
                    vl, vr = T.axis.remap("SR", [lane, red])
                    c[vl] = c[vl] + T.cast(a[vr], "int32") * T.cast(b[vl, vr], "int32")

    @T.prim_func(s_tir=True)
    def impl(
        a: T.Buffer((4,), "uint8", offset_factor=1),
        b: T.Buffer((16, 4), "int8", offset_factor=1),
        c: T.Buffer((16,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(c[0:16], a[0:4], b[0:16, 0:4])
            T.writes(c[0:16])
            # the 4 activation bytes, seen as one int32, repeated in all 16 lanes
            a_word = T.reinterpret(a.vload([0], "uint8x4"), dtype="int32")
            a_bytes = T.reinterpret(T.broadcast(a_word, 16), dtype="uint8x64")
            c[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                c.vload([0], dtype="int32x16"),
                a_bytes,
                b.vload([0, 0], dtype="int8x64"),
                dtype="int32x16",
            )

    TensorIntrin.register(VNNI_INTRIN, desc, impl)


def vnni_intrinsic() -> str:
    """Name of a VNNI 16x4 intrinsic that compiles with the LLVM TVM was built with."""
    from tvm.target import codegen  # pylint: disable=import-outside-toplevel

    try:
        major = int(codegen.llvm_version_major())
    except Exception:  # pylint: disable=broad-except
        major = 0
    if major and major < 21:
        load_tensor_intrinsics()
        return "dot_16x4_vnni"  # TVM's own registration matches the old <16 x i32> signature
    _register_vnni_intrinsic()
    return VNNI_INTRIN


_PMADDWD_LLVM = {8: ("llvm.x86.avx2.pmadd.wd", "avx2"), 16: ("llvm.x86.avx512.pmaddw.d.512", "avx512bw")}


def pmaddwd_intrinsic(lanes: int, data_dtype: str) -> str:
    """Register (once) and name ``C[0:lanes] += sum_(k<2) A[k] * B[0:lanes, k]`` with one vpmaddwd.

    A: two 8-bit activations (``uint8`` or ``int8``), B: ``lanes`` x 2 int8 weights, C: int32.
    Both operands are widened to int16 first, so the pairwise sums (at most 2 * 255 * 128) never
    saturate: the result is exact, unlike ``vpmaddubsw``'s.  ``lanes`` 8 is AVX2 (ymm), 16 is
    AVX-512BW (zmm).  This is the 8-bit dot product of x86 CPUs without VNNI.
    """
    from tvm.s_tir import TensorIntrin  # pylint: disable=import-outside-toplevel
    from tvm.script import tirx as T  # pylint: disable=import-outside-toplevel

    llvm_name = _PMADDWD_LLVM[lanes][0]
    name = f"harness_dot_{lanes}x2_{'u8' if data_dtype == 'uint8' else 's8'}_pmaddwd"
    if TensorIntrin.get(name, allow_missing=True) is not None:
        return name
    a_pair, halves, wide = f"{data_dtype}x2", f"int16x{2 * lanes}", f"int32x{lanes}"
    weights = f"int8x{2 * lanes}"

    @T.prim_func(s_tir=True)
    def desc(
        a: T.Buffer((2,), data_dtype, offset_factor=1),
        b: T.Buffer((lanes, 2), "int8", offset_factor=1),
        c: T.Buffer((lanes,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:2], b[0:lanes, 0:2])
            T.writes(c[0:lanes])
            for lane, red in T.grid(lanes, 2):
                with T.sblock("update"):
                    vl, vr = T.axis.remap("SR", [lane, red])
                    c[vl] = c[vl] + T.cast(a[vr], "int32") * T.cast(b[vl, vr], "int32")

    @T.prim_func(s_tir=True)
    def impl(
        a: T.Buffer((2,), data_dtype, offset_factor=1),
        b: T.Buffer((lanes, 2), "int8", offset_factor=1),
        c: T.Buffer((lanes,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:2], b[0:lanes, 0:2])
            T.writes(c[0:lanes])
            # the two activations widened to int16, seen as one int32, repeated in every lane
            a_word = T.reinterpret(T.Cast("int16x2", a.vload([0], a_pair)), dtype="int32")
            a_halves = T.reinterpret(T.broadcast(a_word, lanes), dtype=halves)
            c[T.ramp(T.int32(0), 1, lanes)] = c.vload([0], dtype=wide) + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm_name), a_halves,
                T.Cast(halves, b.vload([0, 0], dtype=weights)), dtype=wide,
            )

    TensorIntrin.register(name, desc, impl)
    return name


def register_cpu_int8_intrinsics() -> None:
    """Register the harness's x86 8-bit dot products (:func:`vnni_intrinsic`, every
    :func:`pmaddwd_intrinsic` variant): database records of kernels that use one name it, and
    replaying such a record needs it registered."""
    vnni_intrinsic()
    for lanes in _PMADDWD_LLVM:
        for data_dtype in ("uint8", "int8"):
            pmaddwd_intrinsic(lanes, data_dtype)


def cpu_int8_dots(target: Any, data_dtype: str) -> list:
    """The exact 8-bit dot products of an llvm target, best first, as ``(intrinsic, lanes,
    reduction)``: VNNI ``vpdpbusd`` (16 x 4, unsigned activations only), then ``vpmaddwd`` on
    AVX-512BW (16 x 2) and on AVX2 (8 x 2).  Empty for other CPUs."""
    tgt = normalize_target(target)
    if tgt.kind.name != "llvm" or data_dtype not in ("uint8", "int8"):
        return []
    found = []
    if data_dtype == "uint8" and target_has_feature(tgt, "avx512vnni"):
        found.append((vnni_intrinsic(), 16, 4))
    for lanes in (16, 8):
        if target_has_feature(tgt, _PMADDWD_LLVM[lanes][1]):
            found.append((pmaddwd_intrinsic(lanes, data_dtype), lanes, 2))
    return found


def normalize_target(target: Any):
    """A ``tvm.target.Target`` from a dict / Target (strings without flags are accepted too).

    CUDA targets get the thread / shared-memory limits MetaSchedule needs when they are missing.
    """
    from tvm.target import Target  # pylint: disable=import-outside-toplevel

    if isinstance(target, Target):
        config = dict(target.export())
    elif isinstance(target, dict):
        config = dict(target)
    elif isinstance(target, str):
        config = dict(Target(target).export())
    else:
        raise TypeError(f"target must be a dict, a string or a tvm Target, got {type(target).__name__}")
    if config.get("kind") == "cuda":
        for key, value in _CUDA_DEFAULTS.items():
            config.setdefault(key, value)
        config.setdefault("arch", "sm_90")
    for key in ("tag", "keys"):
        if key in config and not config[key]:
            config.pop(key)
    if "keys" in config:
        config["keys"] = list(config["keys"])
    return Target(config)


def target_summary(target: Any) -> dict[str, str]:
    """What identifies a target for a tuning database: kind plus ``arch`` (CUDA) / ``mcpu``."""
    tgt = normalize_target(target)
    config = dict(tgt.export())
    summary = {"kind": str(config["kind"])}
    for key in ("arch", "mcpu", "mtriple"):
        if config.get(key):
            summary[key] = str(config[key])
    if summary["kind"] == "llvm" and "mcpu" not in summary:
        summary["mcpu"] = "generic"
    return summary


def target_has_feature(target: Any, feature: str) -> bool:
    """True when LLVM reports CPU `feature` (e.g. ``avx512vnni``) for an llvm target's ``mcpu``."""
    from tvm.target import codegen  # pylint: disable=import-outside-toplevel

    tgt = normalize_target(target)
    if tgt.kind.name != "llvm":
        return False
    try:
        return bool(codegen.target_has_features(feature, tgt))
    except Exception:  # pylint: disable=broad-except
        return False


def target_has_vnni(target: Any) -> bool:
    """True when LLVM reports AVX512-VNNI for the target's ``mcpu``."""
    return target_has_feature(target, "avx512vnni")


def cuda_sm(target: Any) -> int:
    """Compute capability as an integer (``sm_90a`` -> 90); 0 when unknown."""
    arch = str(dict(normalize_target(target).export()).get("arch", ""))
    match = re.match(r"sm_(\d+)", arch)
    return int(match.group(1)) if match else 0


def int8_intrinsics_for(target: Any, data_dtype: str = "int8") -> list[str]:
    """Names of the int8 intrinsics the int8 rules try for ``target`` (may be empty)."""
    tgt = normalize_target(target)
    kind = tgt.kind.name
    if kind == "llvm":
        # The best exact dot product (VNNI for u8 data, else vpmaddwd on int16-widened
        # operands); the packed tune-conv layout is made for it (workloads.packed_blocks).
        # TVM's "dot_16x4_avx512" (vpmaddubsw + vpmaddwd) is never used: vpmaddubsw saturates
        # its pairwise u8*s8 sums to int16 (255*127*2 > 32767).
        dots = cpu_int8_dots(tgt, data_dtype)
        return [dots[0][0]] if dots else []
    if kind == "cuda":
        names = ["dp4a_u8s8s32" if data_dtype == "uint8" else "dp4a_s8s8s32"]
        if data_dtype == "int8" and cuda_sm(tgt) >= 75:
            names.append("wmma_sync_16x16x16_s8s8s32_trans")
        return names
    return []


@dataclass
class SearchSpace:
    """Rules, postprocessors and mutators for one task, plus what they were chosen for."""

    sch_rules: list = field(default_factory=list)
    postprocs: list = field(default_factory=list)
    mutator_probs: dict = field(default_factory=dict)
    intrinsics: list[str] = field(default_factory=list)
    description: str = ""
    schedule_fn: Any = None  # a whole-kernel schedule with sampled decisions, instead of the rules
    search_opts: dict = field(default_factory=dict)  # EvolutionarySearch options fitting the space

    def space_generator(self):
        """A ``PostOrderApply`` space generator with these rules (a ``ScheduleFn`` one for a
        space given as :attr:`schedule_fn`)."""
        from tvm.s_tir import meta_schedule as ms  # pylint: disable=import-outside-toplevel

        if self.schedule_fn is not None:
            return ms.space_generator.ScheduleFn(
                self.schedule_fn, sch_rules=[], postprocs=list(self.postprocs),
                mutator_probs=dict(self.mutator_probs))
        return ms.space_generator.PostOrderApply(
            sch_rules=list(self.sch_rules),
            postprocs=list(self.postprocs),
            mutator_probs=dict(self.mutator_probs),
        )


_UNION_CLASS = None


def _union_rule_class():
    """The ``PyScheduleRule`` subclass behind :func:`UnionRule` (built once, on first use)."""
    global _UNION_CLASS  # pylint: disable=global-statement
    if _UNION_CLASS is not None:
        return _UNION_CLASS
    from tvm.ir.utils import derived_object  # pylint: disable=import-outside-toplevel
    from tvm.s_tir.meta_schedule.schedule_rule import PyScheduleRule  # pylint: disable=import-outside-toplevel

    @derived_object
    class _Union(PyScheduleRule):
        def __init__(self, members: list, label: str) -> None:
            super().__init__()
            self.members = list(members)
            self.label = label

        def _initialize_with_tune_context(self, context) -> None:
            for member in self.members:
                _init_rule(member, context)

        def apply(self, sch, block):
            results = []
            before = len(sch.trace.insts)
            for member in self.members:
                copy = sch.copy()
                copy.seed(sch.fork_seed())
                try:
                    # Block random variables stay valid in a copy: copies share the symbol table.
                    outs = list(member.apply(copy, block))
                except Exception:  # pylint: disable=broad-except
                    continue
                results += [out for out in outs if len(out.trace.insts) != before]
            return results or [sch]

        def clone(self):
            return _Union([m.clone() for m in self.members], self.label)

        def __str__(self) -> str:
            return f"{self.label}({', '.join(str(m) for m in self.members)})"

    _UNION_CLASS = _Union
    return _Union


def UnionRule(rules: list, name: str = "UnionRule"):  # pylint: disable=invalid-name
    """A schedule rule whose candidates are the union of several rules' candidates.

    MetaSchedule applies rules one after another, and the first rule that tiles a block wins.
    To let the search choose between e.g. int8 tensor cores and dp4a for the same conv, this
    rule applies each member to its own copy of the schedule and returns every result that
    changed the schedule (or the untouched schedule when none did).
    """
    return _union_rule_class()(rules, name)


def _init_rule(rule, context) -> None:
    from tvm.s_tir.meta_schedule import _ffi_api  # pylint: disable=import-outside-toplevel

    _ffi_api.ScheduleRuleInitializeWithTuneContext(rule, context)  # type: ignore  # pylint: disable=no-member


def _x86_space(target, intrinsics: list[str]) -> SearchSpace:
    from tvm.s_tir import meta_schedule as ms  # pylint: disable=import-outside-toplevel

    rule = ms.schedule_rule
    rules: list = [
        rule.ApplyCustomRule(),
        rule.InlineConstantScalars(),
        rule.AutoInline(
            into_producer=False,
            into_consumer=True,
            inline_const_tensor=True,
            disallow_if_then_else=True,
            require_injective=True,
            require_ordered=True,
            disallow_op=["tirx.exp"],
        ),
        rule.AddRFactor(max_jobs_per_core=16, max_innermost_factor=64),
    ]
    for name in intrinsics:
        # Same tiling structure as the float rule: S(outer) S R S R S(inner), the intrinsic
        # replacing the innermost (16 outputs x 4 reductions) tile; the output tile may be
        # accumulated in a register-resident local buffer.
        rules.append(
            rule.MultiLevelTilingWithIntrin(
                name,
                structure="SSRSRS",
                tile_binds=None,
                max_innermost_factor=64,
                vector_load_lens=None,
                reuse_read=None,
                reuse_write=rule.ReuseType(req="may", levels=[1, 2], scope="global"),
            )
        )
    rules += [
        rule.MultiLevelTiling(
            structure="SSRSRS",
            tile_binds=None,
            max_innermost_factor=64,
            vector_load_lens=None,
            reuse_read=None,
            reuse_write=rule.ReuseType(req="may", levels=[1, 2], scope="global"),
        ),
        rule.ParallelizeVectorizeUnroll(
            max_jobs_per_core=16,
            max_vectorize_extent=64,
            unroll_max_steps=[0, 16, 64, 512],
            unroll_explicit=True,
        ),
        rule.RandomComputeLocation(),
    ]
    post = ms.postproc
    postprocs = [
        post.DisallowDynamicLoop(),
        post.RewriteParallelVectorizeUnroll(),
        post.RewriteReductionBlock(),
        post.RewriteTensorize(vectorize_init_loop=True),
        post.RewriteLayout(),
    ]
    mutators = dict(ms.Mutator.create("llvm"))
    return SearchSpace(rules, postprocs, mutators, list(intrinsics), "llvm-int8:" + ",".join(intrinsics))


def _cuda_space(target, intrinsics: list[str]) -> SearchSpace:
    from tvm.s_tir import meta_schedule as ms  # pylint: disable=import-outside-toplevel
    from tvm.s_tir.tensor_intrin.cuda import get_wmma_intrin_group  # pylint: disable=import-outside-toplevel

    rule = ms.schedule_rule
    dp4a = [n for n in intrinsics if n.startswith("dp4a")]
    wmma = [n for n in intrinsics if n.startswith("wmma")]
    int8_rules = []
    for name in dp4a:
        # The 2019 dp4a template in MetaSchedule terms: blocks x virtual threads x threads over
        # the outputs, two reduction levels, data and weights staged in shared memory (the dp4a
        # description reads its operands from shared memory), accumulators in registers.
        int8_rules.append(
            rule.MultiLevelTilingWithIntrin(
                name,
                structure="SSSRRSRS",
                tile_binds=["blockIdx.x", "vthread.x", "threadIdx.x"],
                max_innermost_factor=64,
                vector_load_lens=[1, 2, 3, 4],
                reuse_read=rule.ReuseType(req="must", levels=[4], scope="shared"),
                reuse_write=rule.ReuseType(req="must", levels=[3], scope="local"),
            )
        )
    if wmma:
        groups = [
            get_wmma_intrin_group(
                load_scope="shared",
                store_scope="shared",
                in_dtype="int8",
                out_dtype="int32",
                trans_b=True,
            ),
            get_wmma_intrin_group(
                load_scope="shared",
                store_scope="shared",
                in_dtype="int8",
                out_dtype="int32",
                trans_b=False,
            ),
        ]
        int8_rules.append(
            rule.MultiLevelTilingTensorCore(
                intrin_groups=groups,
                structure="SSSRRSRS",
                tile_binds=["blockIdx.y", "blockIdx.x", "threadIdx.y"],
                max_innermost_factor=4,
                # The int32 result goes back through shared memory with the same vector
                # lengths; CUDA has no vector type for more than 4 int32 lanes.
                vector_load_lens=[1, 2, 3, 4],
                reuse_read=rule.ReuseType(req="must", levels=[4], scope="shared"),
                reuse_write=rule.ReuseType(req="must", levels=[2], scope="shared"),
                use_software_pipeline=False,
            )
        )
    rules: list = [rule.ApplyCustomRule()]
    if len(int8_rules) > 1:
        rules.append(UnionRule(int8_rules, "Int8Union"))
    else:
        rules += int8_rules
    rules += [
        rule.MultiLevelTiling(
            structure="SSSRRSRS",
            tile_binds=["blockIdx.x", "vthread.x", "threadIdx.x"],
            max_innermost_factor=64,
            vector_load_lens=[1, 2, 3, 4, 8, 16],
            reuse_read=rule.ReuseType(req="must", levels=[4], scope="shared"),
            reuse_write=rule.ReuseType(req="must", levels=[3], scope="local"),
        ),
        rule.InlineConstantScalars(),
        rule.AutoInline(
            into_producer=True,
            into_consumer=True,
            inline_const_tensor=True,
            disallow_if_then_else=False,
            require_injective=False,
            require_ordered=False,
            disallow_op=None,
        ),
        rule.CrossThreadReduction(thread_extents=[4, 8, 16, 32, 64, 128, 256, 512]),
        rule.ParallelizeVectorizeUnroll(
            max_jobs_per_core=-1,
            max_vectorize_extent=-1,
            unroll_max_steps=[0, 16, 64, 512, 1024],
            unroll_explicit=True,
        ),
        rule.AutoBind(),
    ]
    post = ms.postproc
    postprocs = [
        post.DisallowDynamicLoop(),
        post.RewriteCooperativeFetch(),
        post.RewriteUnboundBlock(),
        post.RewriteParallelVectorizeUnroll(),
        post.RewriteReductionBlock(),
        post.VerifyGPUCode(),
        post.RewriteTensorize(),
    ]
    mutators = dict(ms.Mutator.create("cuda"))
    return SearchSpace(rules, postprocs, mutators, list(intrinsics), "cuda-int8:" + ",".join(intrinsics))


def int8_space(target: Any, data_dtype: str = "int8", *, tensor_cores: bool | None = None) -> SearchSpace:
    """Search space with the int8 intrinsic rules for ``target``.

    ``tensor_cores`` (CUDA only): None = offer int8 wmma on sm_75+, False = dp4a only,
    True = require sm_75+ and offer them.
    """
    load_tensor_intrinsics()
    tgt = normalize_target(target)
    names = int8_intrinsics_for(tgt, data_dtype)
    kind = tgt.kind.name
    if kind == "cuda":
        if tensor_cores is False:
            names = [n for n in names if not n.startswith("wmma")]
        elif tensor_cores and not any(n.startswith("wmma") for n in names):
            raise ValueError(
                f"int8 tensor cores need sm_75+ and int8 activations; target arch is "
                f"sm_{cuda_sm(tgt)}, activations {data_dtype}"
            )
        return _cuda_space(tgt, names)
    if kind == "llvm":
        return _x86_space(tgt, names)
    return default_space(tgt)


def cpu_int8_dot_space(target: Any) -> SearchSpace:
    """Search space of a fused 8-bit conv kernel (model-level tuning) that the default CPU
    schedule puts on the dot product (:func:`harness.tune.cpu_default.schedule_int8_dot_conv`):
    that schedule with its register tile sampled, the search mutating the tile sizes.

    MetaSchedule's own intrinsic rule does not apply to these kernels: their data and weights
    are plain NCHW / OIHW, packed inside the kernel by the schedule.
    """
    from tvm.s_tir import meta_schedule as ms  # pylint: disable=import-outside-toplevel

    from .cpu_default import sample_int8_dot  # pylint: disable=import-outside-toplevel

    tgt = normalize_target(target)
    names = sorted({name for name, _, _ in cpu_int8_dots(tgt, "uint8") + cpu_int8_dots(tgt, "int8")})
    return SearchSpace(
        [], [], {ms.mutator.MutateTileSize(): 1.0}, names, "llvm-int8-dot:" + ",".join(names),
        schedule_fn=lambda sch: sample_int8_dot(sch, tgt),
        # three tile sizes, a few dozen points: a small population covers them, and every
        # candidate is a replay of the whole schedule (packing, tensorize), costly to make
        search_opts={"population_size": 64, "init_min_unmeasured": 16, "genetic_num_iters": 2},
    )


def cuda_int8_dp4a_space(target: Any) -> SearchSpace:
    """Search space of a fused 8-bit conv kernel (model-level tuning) on CUDA: the dp4a schedule
    of :func:`harness.tune.cuda_default.schedule_int8_dp4a_conv` with every tile size sampled
    (channels per block / thread group / thread, pixels per thread, input channels per shared
    stage), the search mutating them; candidates over the GPU's limits (threads, shared memory)
    are dropped by ``VerifyGPUCode``."""
    from tvm.s_tir import meta_schedule as ms  # pylint: disable=import-outside-toplevel

    from .cuda_default import dp4a_intrinsic, sample_int8_dp4a  # pylint: disable=import-outside-toplevel

    tgt = normalize_target(target)
    names = [dp4a_intrinsic("uint8"), dp4a_intrinsic("int8")]
    post = ms.postproc
    return SearchSpace(
        [], [post.DisallowDynamicLoop(), post.RewriteCooperativeFetch(), post.VerifyGPUCode()],
        {ms.mutator.MutateTileSize(): 1.0},
        names, "cuda-int8-dp4a:" + ",".join(names),
        schedule_fn=lambda sch: sample_int8_dp4a(sch, tgt),
        search_opts={"population_size": 128, "init_min_unmeasured": 32, "genetic_num_iters": 3},
    )


def default_space(target: Any) -> SearchSpace:
    """MetaSchedule's own rules for the target (used for float32)."""
    from tvm.s_tir import meta_schedule as ms  # pylint: disable=import-outside-toplevel

    tgt = normalize_target(target)
    kind = tgt.kind.name
    if kind not in ("llvm", "cuda"):
        raise ValueError(f"unsupported target kind {kind!r}; valid: llvm, cuda")
    return SearchSpace(
        list(ms.ScheduleRule.create(kind)),
        list(ms.Postproc.create(kind)),
        dict(ms.Mutator.create(kind)),
        [],
        f"{kind}-default",
    )


def space_for(dtype: str, target: Any, data_dtype: str | None = None, **kwargs) -> SearchSpace:
    """The search space the harness uses for a conv of ``dtype`` on ``target``."""
    if dtype == "float32":
        return default_space(target)
    if dtype != "int8":
        raise ValueError(f"dtype {dtype!r} is not supported; valid: int8, float32")
    if data_dtype is None:
        data_dtype = "uint8" if normalize_target(target).kind.name == "llvm" else "int8"
    return int8_space(target, data_dtype, **kwargs)


def trace_uses_intrinsic(trace: Any, intrinsics: list[str] | None = None) -> str | None:
    """Name of the tensor intrinsic a schedule trace tensorizes with, or None.

    Looks for ``tensorize`` instructions and for the ``meta_schedule.auto_tensorize``
    annotations the intrinsic rules leave for the ``RewriteTensorize`` postprocessor.
    """
    text = str(trace)
    names = list(intrinsics) if intrinsics else []
    found = re.findall(r'"((?:harness_dot_|dot_16x4|dp4a|wmma_sync|mma_)[A-Za-z0-9_]*)"', text)
    for name in found:
        if not names or name in names:
            return name
    return None
