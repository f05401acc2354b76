"""MetaSchedule search spaces the harness tunes with.

* the int8 convs that a default schedule puts on a dot product are searched in that schedule's own
  space (:func:`cpu_int8_dot_space`, :func:`cuda_int8_dp4a_space`): the same packing and
  instruction, the tile sizes sampled and mutated;
* other int8 kernels: MetaSchedule's rules with the target's int8 intrinsics
  (:func:`int8_space`: x86 ``MultiLevelTilingWithIntrin`` with the exact dot product; CUDA dp4a and,
  on sm_75+, int8 tensor cores, both offered through :func:`UnionRule`);
* float32: MetaSchedule's target defaults (:func:`default_space`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from ..schedules.intrinsics import WeightBits, cpu_int8_dots, int8_intrinsics_for, load_tensor_intrinsics
from ..targets import cuda_sm, normalize_target


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


def cpu_int8_dot_space(target: Any, weight_bits: Optional[WeightBits] = None, *, amx: bool = False) -> SearchSpace:
    """Search space of a fused 8-bit conv kernel (model-level tuning) that the default CPU
    schedule puts on the dot product (:func:`harness.schedules.cpu.schedule_int8_dot_conv`):
    that schedule with its register tile sampled, the search mutating the tile sizes. ``amx``
    (build.schedules.cpu_int8_amx on a target with amx-int8): a stride-1 conv's space is its AMX
    kernel instead, one design space per tile plan (:func:`harness.schedules.amx.amx_channel_spaces`).

    MetaSchedule's own intrinsic rule does not apply to these kernels: their data and weights
    are plain NCHW / OIHW, packed inside the kernel by the schedule.
    """
    from tvm.s_tir import meta_schedule as ms  # pylint: disable=import-outside-toplevel

    from ..schedules.cpu import sample_int8_dot  # pylint: disable=import-outside-toplevel

    tgt = normalize_target(target)
    weight_bits = weight_bits or WeightBits()
    names = sorted({name for bits in {weight_bits.dense, weight_bits.grouped}
                    for name, _, _ in cpu_int8_dots(tgt, "uint8", bits) + cpu_int8_dots(tgt, "int8")})
    return SearchSpace(
        [], [], {ms.mutator.MutateTileSize(): 1.0}, names, "llvm-int8-dot:" + ",".join(names),
        schedule_fn=lambda sch: sample_int8_dot(sch, tgt, weight_bits, amx=amx),
        # three tile sizes, a few dozen points: a small population covers them, and every
        # candidate is a replay of the whole schedule (packing, tensorize), costly to make
        search_opts={"population_size": 64, "init_min_unmeasured": 16, "genetic_num_iters": 2},
    )


def cuda_int8_dp4a_space(target: Any) -> SearchSpace:
    """Search space of a fused 8-bit conv kernel (model-level tuning) on CUDA: the dp4a schedule
    of :func:`harness.schedules.cuda.schedule_int8_dp4a_conv` with every tile size sampled
    (channels per block / thread group / thread, pixels per thread, input channels per shared
    stage), the search mutating them; candidates over the GPU's limits (threads, shared memory)
    are dropped by ``VerifyGPUCode``."""
    from tvm.s_tir import meta_schedule as ms  # pylint: disable=import-outside-toplevel

    from ..schedules.cuda import sample_int8_dp4a  # pylint: disable=import-outside-toplevel
    from ..schedules.intrinsics import dp4a_intrinsic  # pylint: disable=import-outside-toplevel

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
