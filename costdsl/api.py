"""The Python API: load a .arch file, get its graphs, analyse it on a hardware file.

    >>> import costdsl
    >>> m = costdsl.load("models/llama-2-7b.arch")
    >>> a = m.analyze("nvidia-a6000", batch=1, seq=2048)
    >>> a.stages["decode"].total.time_s
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Mapping

import networkx as nx
import sympy

from .analysis.capacity import Fit, fit, max_batch
from .analysis.compare import Comparison, compare
from .analysis.crossover import (CrossoverAnswer, quantization_crossover, solvable_symbol,
                                 variant_crossover,
                                 stage_crossover, stage_crossovers)
from .analysis.formulas import FormulaTable, formula_table
from .analysis.latency import Encoder, Latency, request_latency
from .analysis.memory import StageMemory, memory_numbers, request_memory, stage_memory
from .analysis.numbers import LazyMemory
from .analysis.params import OpParams, active_params, op_params, total_params
from .analysis.plan import OBJECTIVES, PlanResult, evaluate_plan, layouts as plan_layouts
from .analysis.plan import has_experts, layout_name, layout_passes, rank
from .analysis.export import crossover_records, memory_record, memory_trees, stage_record
from .analysis.programs import AnalysisProgram
from .serving.iteration import IterationCost, cost_record, iteration_cost
from .analysis.compiled import Unsupported, cached_functions, to_tree
from .analysis.evaluate import GridFunctions, total_expression
from .analysis.memory import memory_rows
from .serving.executor import Executor
from .serving.ratesweep import largest_rate, simulate_record
from .serving.fleet import simulate_fleet
from .serving.requests import Stream, synthetic
from .serving.search import (SLO as SearchSLO, SearchResult, Space as SearchSpace, Workload,
                             search as search_deployments)
from .serving.simulate import (Config as SimConfig, KVPool, Speculative, Summary, Trace,
                                server_record, simulate, summarise)
from .analysis.records import Analysis, Settings, check_stages, devices_of, stage_result
from .analysis.roofline import StageRoofline, kernel_type, roofline
from .analysis.sensitivity import Sensitivity, sensitivity
from .analysis.sparsity import SPARSITY, SparsityAnswer, sparsity_answers
from .analysis.compression import CompressionAnswer, low_rank_answers, target_answers
from .analysis.offloading import OffloadAnswer, offload_answers
from .analysis.speculative import (Speculation, best_draft_length, lookahead, speculate,
                                   speculation_grid, stop_paying_batch)
from .errors import CostDSLError, EvaluationError, at
from .names import did_you_mean
from .graph.lower import STAGES, STEP_STAGES, lower
from .graph.costs import CHUNK, expands
from .graph.passes import apply_passes
from .graph.passes.registry import resolve_args
from .graph.schema import check as check_graph, nodes
from .hardware import Hardware, figures_key, load_hardware
from .language import ast
from .language.decoding import Decoding, DecodingError, decoding_of, parse_decoding
from .language.design import Design
from .language.elaborate import elaborate, parse_overrides
from .language.library import Library, load_library
from .language.parser import parse_passes
from .limits import COMPRESSION_ARGS
from . import progress
from .report import notebook as _notebook
from .report.units import si
from . import symbols as S


FUSING_PASSES = ("fuse", "fuse_all", "fuse_serving", "fuse_qkv", "fuse_linear_act",
                 "fuse_norm_linear", "fuse_residual", "fuse_gate_up", "fuse_add_norm", "fuse_rope",
                 "flash_attention")
"""Passes that merge ops into one kernel: parallelism passes go before them (with_layout)."""



LIVE_BITS = (4, 8, 16)
"""The bitwidths a live report offers for weights, activations and the KV cache."""


class Model:
    """A compiled model: its design and, lazily, one op graph per stage."""

    def __init__(self, design: Design, library: Library | None = None,
                 overrides: Mapping[str, ast.Expr] | None = None,
                 extra_passes: tuple[ast.PassCall, ...] = ()):
        self.design = design
        self.library = library
        self.overrides = dict(overrides or {})
        self.extra_passes = tuple(extra_passes)
        self._rooflines: dict[tuple, StageRoofline] = {}
        self._programs: dict[tuple, AnalysisProgram] = {}   # by stages, hardware, kernels
        self._asked: dict[tuple, AnalysisProgram] = {}      # ... by the bitwidths asked
        self._bits_keys: dict[tuple, tuple] = {}

    @property
    def passes(self) -> tuple[ast.PassCall, ...]:
        """The pass pipeline: the file's passes, then those added with `with_passes`."""
        return self.design.passes + self.extra_passes

    def with_passes(self, passes: Iterable[str | ast.PassCall]) -> "Model":
        """The same model with more passes appended: pass text as on the command line
        (`"quantize(weights=4); flash_attention()"`) or parsed calls."""
        calls = list(self.extra_passes)
        for i, p in enumerate(passes, 1):
            calls += [p] if isinstance(p, ast.PassCall) else list(parse_passes(p, f"--pass[{i}]"))
        return Model(self.design, self.library, self.overrides, tuple(calls))

    def with_layout(self, passes: Iterable[str]) -> "Model":
        """The same model split by parallelism passes placed before the first fusion in its
        pipeline: a split is defined on the layers as written (q, k and v apart; a fused
        kernel has no split), and fusing the split layers gives the per-device kernels."""
        calls = [c for i, p in enumerate(passes, 1) for c in parse_passes(p, f"layout[{i}]")]
        pipeline = list(self.passes)
        at = next((i for i, c in enumerate(pipeline) if c.name in FUSING_PASSES), len(pipeline))
        return Model(replace(self.design, passes=()), self.library, self.overrides,
                     tuple(pipeline[:at] + calls + pipeline[at:]))

    def without_passes(self) -> "Model":
        """The model as its layers describe it: no pass applied (the baseline of `compare`)."""
        return Model(replace(self.design, passes=()), self.library, self.overrides)

    def keeping_free(self, names: Iterable[str]) -> "Model":
        """The same model with the named parameters left free (for formula tables)."""
        names = list(names)
        if not names:
            return self
        free = {n: ast.Free(ast.Pos("--keep", 1, 1)) for n in names}
        overrides = {**self.overrides, **free}
        return Model(elaborate(self.library, self.design.name, overrides), self.library, overrides,
                     self.extra_passes)

    @property
    def name(self) -> str:
        return self.design.name

    @property
    def free_names(self) -> tuple[str, ...]:
        """The model's parameters left free, and the parallel degrees passes leave free
        (`tensor_parallel(n=tp)`): the symbols a crossover may solve for."""
        layout = self.graph("decode").graph.get("parallel", {})
        degrees = sorted({s.name for v in layout.values()
                          for s in sympy.sympify(v).free_symbols} - set(self.design.free))
        return tuple(self.design.free) + tuple(degrees)

    def graph(self, stage: str) -> nx.DiGraph:
        """The stage's op graph after the pass pipeline: "prefill", "decode", "step"
        (`tokens` new tokens per sequence over `seq` cached) or "verify" (the step with logits
        for every new token)."""
        check_stages(None, (stage,), needed=False)
        return self._graph(stage)

    @functools.cache
    def _graph(self, stage: str) -> nx.DiGraph:
        return apply_passes(lower(self.design, stage), self.passes)

    @functools.cache
    def memory(self, stage: str) -> StageMemory:
        """Weights, KV cache and peak activations of the stage, as expressions."""
        return stage_memory(self.graph(stage), self.graph("decode"))

    @functools.cache
    def params(self) -> sympy.Expr:
        """Total parameter count (a number, or an expression in the free parameters)."""
        return total_params(self.graph("prefill"))

    @functools.cache
    def active_params(self) -> sympy.Expr:
        """Parameters one token uses: the total, less the experts a token does not visit."""
        return active_params(self.graph("prefill"))

    def params_by_op(self) -> list[OpParams]:
        return op_params(self.graph("prefill"))

    def roofline(self, hw: str | Hardware, stage: str, **bits) -> StageRoofline:
        return self._roofline(stage, _hardware(hw), Settings(1, 1, **bits))

    def _roofline(self, stage: str, hw: Hardware, settings: Settings,
                  kernels: str | None = None) -> StageRoofline:
        """The stage's symbolic roofline, one per (stage, hardware, bitwidths): kept, so that
        repeated analyses reuse its lambdified numpy function rather than compile it again.
        `kernels`: the stage whose kernels' efficiencies apply, where not the graph's own (a
        draft's one-token steps run decode's kernels on its verify graph)."""
        key = (stage, figures_key(hw), self._bits_key(stage, hw, settings))
        if kernels is not None:
            key += (kernels,)
        if key not in self._rooflines:
            built = roofline(self.graph(stage), hw, settings.bits(), kernels)
            inputs = ("roofline", repr(self.design), repr(self.extra_passes),
                      repr(self.overrides)) + key
            self._rooflines[key] = replace(built, cache_key=inputs)
        return self._rooflines[key]

    def _bits_key(self, stage: str, hw: Hardware, settings: Settings):
        """What of the bitwidths a roofline depends on: the compute type each op runs in and
        the family its figures are looked up under (the bytes keep the bitwidths as symbols),
        and the on-chip tile sizes that depend on them. Bitwidths giving the same types and
        families share one roofline and its compiled functions."""
        memo = (stage, figures_key(hw), settings.w_bits, settings.a_bits, settings.kv_bits)
        if memo not in self._bits_keys:
            self._bits_keys[memo] = self._kernel_types(stage, hw, settings)
        return self._bits_keys[memo]

    def _kernel_types(self, stage: str, hw: Hardware, settings: Settings):
        if any("sram_needed" in n.attrs for n in nodes(self.graph(stage))):
            return tuple(sorted(settings.bits().items()))
        values = {S.BITS_BY_CLASS[c]: v for c, v in
                  zip(("weight", "act", "kv"), (settings.w_bits, settings.a_bits,
                                                settings.kv_bits))}
        return tuple(kernel_type(n, hw, values) for n in nodes(self.graph(stage)))

    @staticmethod
    def _values(settings: Settings, free: Iterable[str] = ()) -> dict:
        return {k: v for k, v in settings.values().items() if k.name not in set(free)}

    def crossover(self, solve: str, hw: str | Hardware, stage: str = "decode",
                  batch: int = 1, seq: int = 2048, w_bits: float = 16, a_bits: float = 16,
                  kv_bits: float = 16, free: Iterable[str] = (),
                  versus: Mapping[str, float] | None = None,
                  tokens: int | None = None,
                  variant: Mapping[str, object] | None = None) -> CrossoverAnswer:
        """Crossover points of every op of `stage` in the symbol `solve`, the others bound to
        the given values except those named in `free`. `versus` (e.g. {"w_bits": 2}) adds, per
        op, the value of `solve` above which that lower bitwidth no longer saves time.
        `solve="tokens"` on the step stage: how many new tokens per sequence turn each op
        compute-bound (speculative verification, chunked prefill). `variant` (e.g.
        {"index_heads": 0}: DeepSeek-V3.2 with dense attention) adds where this model and the
        one those parameter values make take equal stage time, in closed form."""
        hw = _hardware(hw)
        x = solvable_symbol(solve, self.free_names)
        free = list(free)
        settings = _settings(batch, seq, w_bits, a_bits, kv_bits, tokens, (stage,),
                             {solve} | set(free))
        self._check_crossover_request(x, stage, free, versus, settings)
        values = self._values(settings, set(free) | {solve})
        symbolic = self._roofline(stage, hw, settings)
        ops = stage_crossovers(symbolic, hw, x, values)
        summary = stage_crossover(symbolic, hw, x, values, ops)
        quant = None
        if versus:
            low = replace(settings, **versus).validate()
            low_symbolic = self._roofline(stage, hw, low)
            quant = tuple(quantization_crossover(symbolic, low_symbolic, hw, x, values,
                                                 self._values(low, set(free) | {solve})))
        bound = {k.name: v for k, v in values.items()}
        answer = CrossoverAnswer(stage, x, bound, tuple(ops), summary, quant, versus,
                                 hw.time_model, hw.stack)
        if not variant:
            return answer
        other = self.with_parameters(variant)._roofline(stage, hw, settings)
        crossings, note = variant_crossover(symbolic, other, hw, x, values)
        return replace(answer, variant={k: str(v) for k, v in variant.items()},
                       variant_crossings=crossings, variant_note=note)

    def with_parameters(self, values: Mapping[str, object]) -> "Model":
        """The same file and passes with these parameters set (text or numbers, parsed)."""
        for name in values:
            if name not in self.design.params:
                raise EvaluationError(f"--variant {name}: the model has no parameter {name!r}",
                                      hint=did_you_mean(name, sorted(self.design.params)))
        overrides = {**self.overrides, **_overrides(values, "--variant")}
        return Model(elaborate(self.library, self.design.name, overrides), self.library,
                     overrides, self.extra_passes)

    def _check_crossover_request(self, x: sympy.Symbol, stage: str, free: list[str],
                                 versus: Mapping[str, float] | None, settings: Settings) -> None:
        """Refuse a question with no meaningful answer before solving anything."""
        if x == S.tokens and stage not in STEP_STAGES:
            raise EvaluationError(f"tokens is a size of the step stage, not of {stage}",
                                  hint="solve for tokens with --stage step")
        unknown = [f for f in free if f not in S.RUNTIME and f not in self.free_names]
        if unknown:
            raise EvaluationError(f"--free {unknown[0]}: no such symbol",
                                  hint="free: batch, seq, tokens, w_bits, a_bits, kv_bits, or a "
                                       "parameter the file leaves free")
        if versus and x.name in versus:
            raise EvaluationError(f"--versus {x.name}: that is the symbol being solved for",
                                  hint="compare another bitwidth, or solve for batch or seq")
        for name, value in (versus or {}).items():
            if value >= getattr(settings, name):
                raise EvaluationError(f"--versus {name}={value:g} is not lower than the "
                                      f"{name}={getattr(settings, name):g} analysed",
                                      hint="--versus compares a lower bitwidth")

    def latency(self, hw: str | Hardware, batch: int, seq: int, gen: int, w_bits: float = 16,
                a_bits: float = 16, kv_bits: float = 16, image_tokens: int = 0) -> Latency:
        """TTFT, time per output token and end-to-end time of a request, in closed form.
        `image_tokens` of the prompt's `seq` come from images: the first token also waits for
        the model's vision encoder ("<name>-Vision") over their patches."""
        hw = _hardware(hw)
        settings = Settings(batch, seq, w_bits, a_bits, kv_bits).validate()
        if isinstance(gen, bool) or not isinstance(gen, int) or gen < 1:
            raise EvaluationError(f"gen must be a positive integer, got {gen!r}")
        encoder = self._encoder(hw, settings, image_tokens) if image_tokens else None
        latency = request_latency(self._roofline("prefill", hw, settings),
                                  self._roofline("decode", hw, settings), hw, settings, gen,
                                  encoder)
        memory = LazyMemory(lambda: request_memory(
            self.memory("prefill"), self.memory("decode"), settings.values(), gen,
            hw.memory_bytes, hw.host.memory_bytes if hw.host else None))
        return replace(latency, memory=memory)

    def _encoder(self, hw: Hardware, settings: Settings, image_tokens: int) -> Encoder:
        """The vision encoder's prefill over the patches of `image_tokens` image tokens of
        each sequence's prompt: its kernels (and their launches); the engine's time per
        iteration is the prompt's, already in the prefill."""
        if isinstance(image_tokens, bool) or not isinstance(image_tokens, int) \
                or not 0 < image_tokens <= settings.seq:
            raise EvaluationError(f"image tokens must be a whole number from 1 to the prompt's "
                                  f"{settings.seq} tokens, got {image_tokens!r}")
        vision = self.vision_module()
        if vision is None:
            raise EvaluationError(f"{self.name!r} has no vision encoder: no model "
                                  f"\"{self.name}-Vision\" in its file or its imports",
                                  hint="write one (see qwen3.5.arch's qwen35_vision) or leave "
                                       "out the image tokens")
        patches = image_tokens * vision.patches_per_token()
        encoded = replace(settings, seq=patches)
        total = stage_result(vision._roofline("prefill", hw, encoded), encoded).total
        return Encoder(vision.name, image_tokens, patches, total.time_s - total.server_s)

    def keeps_attention_scores(self) -> bool:
        """Whether the prefill graph materialises attention's scores (an unfused qk_matmul),
        which FlashAttention, as the serving stacks run it, never holds."""
        return any(n.kind == "qk_matmul" for n in nodes(self.graph("prefill")))

    def vision_module(self) -> "Model | None":
        """The model's vision encoder ("<name>-Vision" of its file; None: it has none), whose
        parameters `params` reports beside the language model's."""
        name = f"{self.name}-Vision"
        return self._sibling(name) if name in self.library.models else None

    def patches_per_token(self) -> int:
        """Input rows per output row: the product of the merges (`linear(..., merge=k)`) on the
        way (a vision merger's 2 x 2 patches: 4; 1 for a model without)."""
        merges = [op.attrs["merge"] for op in self.design.ops if op.attrs.get("merge", 1) != 1]
        return int(math.prod(int(k) for k in merges))

    def speculate(self, hw: str | Hardware, decoding: "Decoding | str | None" = None,
                  batch: int = 1,
                  seq: int = 2048, w_bits: float = 16, a_bits: float = 16,
                  kv_bits: float = 16) -> Speculation:
        """Speculative decoding with `decoding` (its draft model, k, acceptance rate) at one
        batch and cache length: tokens per target step, time per token, speedup over plain
        decoding, and the break-even acceptance rate in closed form."""
        hw, d, draft, settings, stages = self._speculation(hw, decoding, batch, seq, w_bits,
                                                            a_bits, kv_bits)
        if d.lookahead:
            return lookahead(stages[0], stages[1], d.k + 1, d.accept, settings.values())
        return replace(speculate(*stages, d.draft, d.k, d.accept, settings.values(), d.tree,
                                 d.strategy), medusa=d.medusa)

    def speculation_batch_limit(self, hw: str | Hardware, decoding: "Decoding | str | None" = None,
                                seq: int = 2048, w_bits: float = 16, a_bits: float = 16,
                                kv_bits: float = 16) -> float | None:
        """The batch above which the strategy is slower than plain decoding (None: never)."""
        hw, d, draft, settings, stages = self._speculation(hw, decoding, 1, seq, w_bits,
                                                            a_bits, kv_bits)
        if d.lookahead:  # no draft: the accepted tokens are a step's whole yield
            return stop_paying_batch(stages[0], stages[1], None, 0, d.accept,
                                     settings.values(), None, d.k + 1)
        return stop_paying_batch(*stages, d.k, d.accept, settings.values(), d.tree)

    def best_draft_length(self, hw: str | Hardware, decoding: "Decoding | str | None" = None,
                          batch: int = 1,
                          seq: int = 2048, w_bits: float = 16, a_bits: float = 16,
                          kv_bits: float = 16) -> tuple[int, float]:
        """(k, time per token) of the draft length that minimises the time per token."""
        hw, d, draft, settings, (_, verify, draft_verify) = self._speculation(
            hw, decoding, batch, seq, w_bits, a_bits, kv_bits)
        if d.tree is not None or d.lookahead:
            raise DecodingError("only a chain of draft tokens has a draft length to choose "
                                "(the tree or the lookahead sizes fix it)", file=d.pos.file,
                                line=d.pos.line, column=d.pos.column)
        if d.medusa:  # how many of the trained heads to use: each count its own graph
            heads, layers, lm_head = d.medusa
            times = {h: self.speculate(hw, replace(d, k=h, medusa=(h, layers, lm_head)), batch,
                                       seq, w_bits, a_bits, kv_bits).time_per_token_s
                     for h in range(1, heads + 1)}
            best = min(times, key=times.get)
            return best, times[best]
        return best_draft_length(verify, draft_verify, d.accept, settings.values())

    def decoding_strategy(self, text: "str | Decoding | None" = None,
                          solving: str | None = None) -> "Decoding | None":
        """The decoding strategy: `text` (as --decoding gives it) if given, else the model
        file's `decoding { ... }` section, else None (plain decoding). `solving` "accept": the
        acceptance rate may be left out (it is what is solved for)."""
        if isinstance(text, Decoding):
            d = text
        elif text is not None:
            d = parse_decoding(text, solving=solving)
        else:
            call = self.design.decoding
            d = decoding_of(call, solving=solving) if call is not None else None
        if d is not None and d.strategy == "mtp" and not d.draft:   # the model's own module
            d = replace(d, draft=f"{self.name}-MTP")
        return d

    @functools.cache
    def _with_medusa_heads(self, heads: int, layers: int, lm_head: str) -> "Model":
        """This model with Medusa's heads added first in the pass pipeline (so that the file's
        quantization and fusion apply to them too); kept, with its compiled stages."""
        (call,) = parse_passes(f'medusa_heads(heads={heads}, layers={layers}, '
                               f'lm_head="{lm_head}")', "medusa")
        design = replace(self.design, passes=(call,) + self.design.passes)
        return Model(design, self.library, self.overrides, self.extra_passes)

    def speculation_grid(self, hw: str | Hardware, decoding, values: dict):
        """(time per token, speedup) of the strategy over a grid of `values` (numpy arrays of
        batch and seq, and the bitwidths): the sweep's columns."""
        bits = {k.name: v for k, v in values.items() if k.name.endswith("_bits")}
        hw, d, draft, settings, stages = self._speculation(hw, decoding, 1, 1, **bits)
        return speculation_grid(*stages, d, values)

    def _speculation(self, hw, decoding, batch, seq, w_bits, a_bits, kv_bits):
        hw = _hardware(hw)
        d = self.decoding_strategy(decoding)
        if d is None:
            raise DecodingError(f"{self.name!r} has no decoding strategy",
                                hint='give --decoding \'speculative(draft="tinyllama-1.1b", '
                                     'k=4, accept=0.8)\' or a decoding { ... } section')
        settings = Settings(batch, seq, w_bits, a_bits, kv_bits).validate()
        if d.lookahead:
            return hw, d, None, settings, (self._roofline("decode", hw, settings),
                                           self._roofline("verify", hw, settings), None)
        if d.medusa:  # plain decoding runs without the heads; verification with them
            with_heads = self._with_medusa_heads(*d.medusa)
            return hw, d, None, settings, (self._roofline("decode", hw, settings),
                                           with_heads._roofline("verify", hw, settings), None)
        draft = self._draft_model(d)
        # a chain's draft steps add one token per sequence: decode's kernels; a tree's levels
        # add several (a frontier): the verify stage's own
        kernels = "decode" if d.tree is None else None
        stages = (self._roofline("decode", hw, settings), self._roofline("verify", hw, settings),
                  draft._roofline("verify", hw, settings, kernels))
        return hw, d, draft, settings, stages

    def _draft_model(self, d: Decoding) -> "Model":
        """The draft model a speculative strategy names (a file beside the model's file, a
        path or a shipped name), checked to share the target's tokenizer; for `mtp`, the
        model's own multi-token-prediction module."""
        if d.strategy == "mtp":
            return self._mtp_module(d)
        beside = Path(d.pos.file).parent / d.draft  # a draft named in a model file: beside it
        draft = load(beside if beside.suffix == ".arch" and beside.is_file() else d.draft)
        mine, theirs = _vocabulary(self.design), _vocabulary(draft.design)
        if mine != theirs:
            raise at(DecodingError, f"speculative decoding needs a shared tokenizer: the draft "
                     f"{draft.name!r} has a vocabulary of {theirs}, the target {self.name!r} "
                     f"of {mine}", d.pos, hint="pair models of one family (TinyLlama or "
                     "llama-68m with Llama-2)")
        return draft

    def _mtp_module(self, d: Decoding) -> "Model":
        """The MTP module of `mtp(...)`: the model `module=` names (decoding_strategy gives
        "<name>-MTP" by default) of this model's file and its imports."""
        name = d.draft
        if name not in self.library.models:
            modules = [m for m in self.library.models if m.endswith("-MTP")]
            raise at(DecodingError, f"{self.name!r} has no multi-token-prediction module: no "
                     f"model {name!r} in {self.library.root.file} or its imports", d.pos,
                     hint=(f"modules here: {', '.join(modules)} (module=...)" if modules else
                           f'write one as model "{self.name}-MTP" (see deepseek.arch\'s '
                           "deepseek_mtp), or use speculative(draft=...)"))
        return self._sibling(name)

    def mtp_module(self) -> "Model | None":
        """The model's multi-token-prediction module ("<name>-MTP" of its file; None: it has
        none), whose parameters `params` reports beside the model's own count, which leaves
        them out as the published counts mostly do."""
        name = f"{self.name}-MTP"
        return self._sibling(name) if name in self.library.models else None

    @functools.cache
    def _sibling(self, name: str) -> "Model":
        """Another model of this model's file and imports, with its --set values and extra
        passes (an MTP module runs inside the target's deployment: the same sharding and
        fusion); kept, with its compiled stages, as the draft of every speculate call."""
        design = elaborate(self.library, name, self.overrides)
        return Model(design, self.library, self.overrides, self.extra_passes)

    def sparsity_answers(self, hw: str | Hardware, batch: int, seq: int, stage: str = "decode",
                         w_bits: float = 16, a_bits: float = 16, kv_bits: float = 16,
                         tokens: int | None = None,
                         dense_fraction: float = 0.95) -> list[SparsityAnswer]:
        """When the pipeline's `contextual_sparsity` pays, per group (MLP, heads), each group
        asked about alone: the sparsity where its predictor eats the saving at this batch, the
        batch above which its sparsity stops paying, and the batch at which the union of kept
        rows reaches `dense_fraction` of dense -- closed forms and exact values."""
        hw = _hardware(hw)
        settings = _settings(batch, seq, w_bits, a_bits, kv_bits, tokens, (stage,))
        if not 0 < dense_fraction < 1:
            raise EvaluationError(f"the dense fraction must be in (0, 1), got {dense_fraction}")
        index = [i for i, c in enumerate(self.passes) if c.name == "contextual_sparsity"]
        if not index:
            raise EvaluationError("--solve sparsity asks when contextual sparsity pays: the "
                                  "model has no contextual_sparsity pass",
                                  hint="add --pass 'contextual_sparsity(mlp=0.8, "
                                       "predictor_rank=1024)'")
        args, without, rerun = self._pass_variants(stage, index[-1])
        bits = settings.bits()
        dense = roofline(without, hw, bits)
        answers = []
        for group, other in (("mlp", "heads"), ("heads", "mlp")):
            given = sympy.sympify(args[group])
            if given == 0:
                continue
            if not given.is_number:
                raise EvaluationError(f"contextual_sparsity({group}=...) is {given}: bind it "
                                      "with --set to ask when it pays")
            sparse = roofline(rerun(**{group: SPARSITY, other: 0}), hw, bits)
            answers += sparsity_answers(group, dense, sparse, float(given), settings.values(),
                                        dense_fraction)
        return answers

    def offload_answers(self, hw: str | Hardware, batch: int, seq: int, stage: str = "decode",
                        w_bits: float = 16, a_bits: float = 16, kv_bits: float = 16,
                        tokens: int | None = None) -> list[OffloadAnswer]:
        """How much of the weights the pipeline's last `offload` pass selects can live in host
        memory before `stage` slows down: per op, f*(batch) in closed form, its value at
        `batch`, and the batch from which offloading all of them is free."""
        hw = _hardware(hw)
        settings = _settings(batch, seq, w_bits, a_bits, kv_bits, tokens, (stage,))
        index = [i for i, c in enumerate(self.passes) if c.name == "offload"]
        if not index:
            raise EvaluationError("--solve offload asks how much to offload: the model has no "
                                  "offload pass", hint="add --pass 'offload(weights=1, "
                                                       "ops=\"layers.*\")'")
        f = sympy.Symbol("f", positive=True)
        _, _, rerun = self._pass_variants(stage, index[-1])
        symbolic = roofline(rerun(weights=f, overlap=1), hw, settings.bits())
        return offload_answers(symbolic, f, settings.values())

    def compression_answers(self, solve: str, hw: str | Hardware, batch: int, seq: int,
                            stage: str = "decode", w_bits: float = 16, a_bits: float = 16,
                            kv_bits: float = 16, tokens: int | None = None,
                            target_time: float | None = None,
                            target_memory: float | None = None) -> list[CompressionAnswer]:
        """Where a compression pass of the pipeline pays, in its argument `solve` (prune's
        heads/kv_heads/ffn/layers, low_rank's rank, sparsify's weights): per factorised op the
        ranks where the weights and the time break even (low_rank), and the value reaching
        `target_time` (the stage's time, s) or `target_memory` (weights + KV cache, bytes)."""
        hw = _hardware(hw)
        settings = _settings(batch, seq, w_bits, a_bits, kv_bits, tokens, (stage,))
        i = self._compression_call(solve)
        if COMPRESSION_ARGS[self.passes[i].name] != ("rank",) and target_time is None \
                and target_memory is None:
            raise EvaluationError(f"--solve {solve} needs a target: --target-time or "
                                  "--target-memory", hint="e.g. --target-time 10ms")
        for name, target in (("target time", target_time), ("target memory", target_memory)):
            if target is not None and not target > 0:
                raise EvaluationError(f"the {name} must be positive, got {target}")
        x = sympy.Symbol(solve, positive=True)
        graphs = {st: self._compressed(st, i, x) for st in {stage, "decode"}}
        bits = settings.bits()
        values = settings.values()
        symbolic = roofline(graphs[stage][1], hw, bits)
        low, high = (1.0, 1e6) if solve == "rank" else (0.0, 1.0 - 1e-9)
        answers = []
        if solve == "rank":
            answers += low_rank_answers(roofline(graphs[stage][0], hw, bits), symbolic, x,
                                        values, high)
        if target_time is not None or target_memory is not None:
            memory = stage_memory(graphs[stage][1], graphs["decode"][1])
            answers += target_answers(symbolic, memory.weights + memory.kv_cache, x, values,
                                      low, high, target_time, target_memory,
                                      none_at=high if solve == "rank" else low)
        return answers

    def _compression_call(self, solve: str) -> int:
        """The index of the last compression pass taking the argument `solve`."""
        found = [i for i, c in enumerate(self.passes)
                 if solve in COMPRESSION_ARGS.get(c.name, ())]
        if not found:
            takes = "; ".join(f"{p}: {', '.join(a)}" for p, a in COMPRESSION_ARGS.items())
            raise EvaluationError(f"--solve {solve}: no compression pass of the pipeline takes "
                                  f"{solve}=", hint=f"add --pass with one ({takes})")
        return found[-1]

    def _compressed(self, stage: str, i: int, x: sympy.Symbol):
        """(the stage's graph without pass i, with pass i's argument `x` a symbol)."""
        _, without, rerun = self._pass_variants(stage, i)
        return without, rerun(**{x.name: x})

    def _pass_variants(self, stage: str, i: int):
        """For pass i of the pipeline: its resolved arguments, the stage's graph without it, and
        a function giving the graph with it run on overridden arguments (symbols allowed), the
        passes after it applied to both."""
        before, call, after = self.passes[:i], self.passes[i], self.passes[i + 1:]
        base = apply_passes(lower(self.design, stage), before)
        spec, args = resolve_args(call, base)

        def rerun(**overrides) -> nx.DiGraph:
            return apply_passes(check_graph(spec.run(base, **{**args, **overrides})), after)
        return args, apply_passes(base, after), rerun

    def sensitivity(self, hw: str | Hardware, batch: int, seq: int, stage: str = "decode",
                    w_bits: float = 16, a_bits: float = 16, kv_bits: float = 16,
                    tokens: int | None = None) -> Sensitivity:
        settings = _settings(batch, seq, w_bits, a_bits, kv_bits, tokens, (stage,))
        return sensitivity(self._roofline(stage, _hardware(hw), settings), settings.values())

    def formulas(self, stage: str, keep: Iterable[str] = (),
                 tokens: int | None = None) -> FormulaTable:
        """Each op's costs as expressions in the runtime symbols; in the step stage `tokens`
        stays a symbol unless a value is given."""
        keep = tuple(keep)
        degrees = set(self.free_names) - set(self.design.params)  # free parallel degrees
        unknown = [k for k in keep if k not in self.design.params and k not in degrees]
        if unknown:
            raise CostDSLError(f"--keep {unknown[0]}: the model has no parameter "
                               f"{unknown[0]!r}", hint="parameters: " +
                               ", ".join(self.design.params))
        check_stages(tokens, (stage,), needed=False)
        bind = {} if tokens is None else {S.tokens: tokens}
        params = [k for k in keep if k not in degrees]  # a degree is a symbol already
        return formula_table(self.keeping_free(params).graph(stage), keep, bind)

    def analyze(self, hw: str | Hardware, batch: int, seq: int, w_bits: float = 16,
                a_bits: float = 16, kv_bits: float = 16,
                stages: Iterable[str] = STAGES, tokens: int | None = None) -> Analysis:
        """Per-op and per-stage numbers. Stages: "prefill", "decode" and "step" (`tokens` new
        tokens per sequence over `seq` cached; `tokens` is needed for it)."""
        hw = _hardware(hw)
        stages = tuple(stages)
        settings = _settings(batch, seq, w_bits, a_bits, kv_bits, tokens, stages)
        asked = (stages, figures_key(hw), w_bits, a_bits, kv_bits)
        program = self._asked.get(asked)
        if program is None:
            # bitwidths giving the same kernels (compute types) share one program
            key = (stages, figures_key(hw)) + tuple(self._bits_key(s, hw, settings)
                                                    for s in stages)
            if key not in self._programs:
                try:
                    self._programs[key] = AnalysisProgram(
                        self.analysis_record(hw, stages, settings))
                except Unsupported:   # an expression the tree form lacks: the sympy way
                    return self._analysis_by_sympy(hw, stages, settings)
            program = self._asked[asked] = self._programs[key]
        return program.analysis(hw, settings)

    def _analysis_by_sympy(self, hw: Hardware, stages: tuple[str, ...],
                           settings: Settings) -> Analysis:
        results = {stage: stage_result(self._roofline(stage, hw, settings), settings)
                   for stage in stages}
        total = self.params()
        if not total.is_number:
            free = ", ".join(sorted(s.name for s in total.free_symbols))
            raise EvaluationError(f"parameter {free} is still free at evaluation",
                                  hint="bind it with --set NAME=VALUE")
        values = settings.values()
        memory = LazyMemory(lambda: memory_numbers(
            {s: self.memory(s) for s in results}, values, hw.memory_bytes,
            hw.host.memory_bytes if hw.host else None))
        stage = next(iter(results)) if results else "decode"
        return Analysis(self.name, self.design.file, hw, settings, self._param_values(),
                        int(total), results, int(self.active_params()),
                        tuple(self.graph(stage).graph["passes"]) if results else (), memory,
                        self._devices(stage, hw.count, hw.nodes))

    def analysis_record(self, hw: str | Hardware, stages: Iterable[str],
                        settings: Settings) -> dict:
        """Everything `analyze` reports at any batch and context, as data (analysis.programs
        reads it): each stage's rows and memory as expression trees, the parameters, passes
        and layout. The bitwidths of `settings` choose the kernels (their compute types)."""
        hw = _hardware(hw)
        stages = tuple(stages)
        total = self.params()
        stage = stages[0] if stages else "decode"
        return {"model": self.name, "file": str(self.design.file),
                "stages": {s: stage_record(self._roofline(s, hw, settings)) for s in stages},
                "memory": {s: memory_trees(self.memory(s)) for s in stages},
                "params": self._param_values(),
                "params_total": int(total) if total.is_number else 0,
                "params_active": int(self.active_params()) if total.is_number else 0,
                "params_free": sorted(s.name for s in total.free_symbols),
                "passes": list(self.graph(stage).graph["passes"]) if stages else [],
                "devices": self._devices(stage, hw.count, hw.nodes).record()}

    @functools.cache
    def _param_values(self) -> dict:
        return {k: _number(v) for k, v in self.design.params.items()}

    def devices(self, hw: str | Hardware, stage: str = "decode"):
        """How the model's parallel layout sits on `hw`'s devices (records.Devices)."""
        hw = _hardware(hw)
        return self._devices(stage, hw.count, hw.nodes)

    @functools.cache
    def _devices(self, stage: str, count: int, nodes: int):
        """The layout of the stage's graph on `count` devices over `nodes` nodes."""
        return devices_of(self.graph(stage), count, nodes)


    def plan(self, hw: str | Hardware, seq: int, gen: int, batch: int | None = 1,
             objective: str = "latency", bits: Iterable[float] = (16, 8, 4),
             kv_bits: float = 16, a_bits: float = 16, max_batch: int = S.MAX_SIZE
             ) -> PlanResult:
        """Every layout of the system's devices (tp x pp, x ep for MoE, and for MoE each TP
        group with its experts spread over it) at every weight bitwidth in `bits`, ranked by
        `objective` ("latency": TPOT; "throughput": tokens/s).
        batch=None: each plan at the largest batch that fits it, at most `max_batch`."""
        hw = _hardware(hw)
        if objective not in OBJECTIVES:
            raise EvaluationError(f"unknown objective {objective!r}",
                                  hint="objectives: " + ", ".join(OBJECTIVES))
        if isinstance(gen, bool) or not isinstance(gen, int) or gen < 1:
            raise EvaluationError(f"gen must be a positive integer, got {gen!r}")
        bits = tuple(bits)
        if not bits:
            raise EvaluationError("--bits names no bitwidth")
        moe = has_experts(self.design)
        plans, skipped = [], []
        for layout in progress.steps("plan: layouts", plan_layouts(hw.count, moe, spread=True)):
            micro = layout[1] if objective == "throughput" else 1
            try:
                model = self.with_layout(layout_passes(layout, micro))
                memory = {st: model.memory(st) for st in STAGES}
            except CostDSLError as err:
                skipped.append((layout_name(layout), err.message))
                continue
            for w in bits:
                settings = Settings(batch or 1, seq, w, a_bits, kv_bits).validate()
                if batch is None:
                    settings = replace(settings, batch=max(1, min(max_batch, model.max_batch(
                        hw, seq=seq + gen - 1, w_bits=w, a_bits=a_bits, kv_bits=kv_bits))))
                stages = [model._roofline(st, hw, settings) for st in STAGES]
                plans.append(evaluate_plan(*stages, memory, layout, settings.values(), seq, gen,
                                           hw.memory_bytes, micro, hw.request_s))
        ranked = rank(plans, objective)
        return PlanResult(self.name, hw.key, hw.count, seq, gen, objective, tuple(ranked),
                          tuple(skipped), hw.time_model, hw.stack, hw.framework)

    def grid_functions(self, hw: Hardware, stage: str, settings: Settings) -> GridFunctions:
        """The stage's time, compute-bound time and memory (weights, KV, activations) as numpy
        functions of the grid, from the persistent cache when an entry for these exact inputs
        exists (analysis.compiled), else compiled and stored."""
        key = ("grid", repr(self.design), repr(self.extra_passes), repr(self.overrides), stage,
               figures_key(hw), settings.w_bits, settings.a_bits, settings.kv_bits)
        if key not in self._rooflines:
            def build():
                symbolic = self._roofline(stage, hw, settings)
                expressions = [total_expression(symbolic, "time"),
                               total_expression(symbolic, "compute_bound_time"),
                               *memory_rows(self.memory(stage))[:3]]
                names = sorted({s.name for e in expressions
                                for s in sympy.sympify(e).free_symbols})
                return names, expressions
            self._rooflines[key] = GridFunctions(cached_functions(key, build))
        return self._rooflines[key]

    def iteration_cost(self, hw: str | Hardware, w_bits: float = 16, a_bits: float = 16,
                       kv_bits: float = 16) -> IterationCost:
        """One serving iteration's time as a compiled function of (N, T, TT, TC, C, L): the
        sequences, their new tokens, sum t^2, sum t c, the tokens cached and the rows that need
        logits, and the first five over the sequences in their prompt (see serving.iteration)."""
        hw = _hardware(hw)
        settings = Settings(1, 1, w_bits, a_bits, kv_bits).validate()
        key = ("iteration", figures_key(hw), tuple(settings.bits().items()))
        if key not in self._rooflines:
            decode = None
            graphs = hw.framework is not None and hw.framework.graph_launch_s is not None
            if hw.efficiency is not None and (any(k.startswith("decode_attention")
                                                  for k in hw.efficiency.kinds) or graphs):
                decode = self._roofline("verify", hw, settings, kernels="decode")
            self._rooflines[key] = iteration_cost(   # a mixed iteration runs eagerly
                self._roofline("verify", hw, settings, kernels="step"),
                {k: v for k, v in settings.values().items() if k.name.endswith("_bits")}, decode,
                hw.request_s, self._roofline("chunk", hw, settings) if self._paths_differ()
                else None)
        return self._rooflines[key]

    def _paths_differ(self) -> bool:
        """Whether a prompt's chunk runs an op of another form than a decode (a dense MLA,
        expanded on the prefill path): its serving iterations price the two apart."""
        return any(expands(n.attrs, CHUNK) for n in nodes(self.graph("verify")))

    def kv_pool(self, hw: str | Hardware, config: SimConfig, w_bits: float = 16,
                a_bits: float = 16, kv_bits: float = 16) -> KVPool:
        """The KV blocks one device holds: a fraction `kv_memory` of its memory after the
        weights and the activation peak of an iteration of `max_tokens` (or `chunk`) tokens,
        in blocks of `kv_block` tokens of one sequence."""
        hw = _hardware(hw)
        bits = {S.w_bits: w_bits, S.a_bits: a_bits, S.kv_bits: kv_bits}
        decode, prefill = self.memory("decode"), self.memory("prefill")
        at = lambda expr, b, s: float(sympy.sympify(expr).xreplace(
            {**{k: sympy.Float(v) for k, v in bits.items()}, S.batch: b, S.seq: s}))
        per_token = at(decode.kv_cache, 1, 2) - at(decode.kv_cache, 1, 1)
        fixed = max(at(decode.kv_cache, 1, 1) - 2 * per_token, 0.0)  # a state (Mamba)
        tokens = config.chunk if config.scheduler == "chunked" else config.max_tokens
        weights, peak = at(decode.weights, 1, 1), at(prefill.activation_peak, 1, tokens)
        free = (hw.memory_bytes - weights - peak) * config.kv_memory
        block = per_token * config.kv_block
        if block <= 0 and fixed <= 0:
            raise EvaluationError(f"{self.name!r} keeps neither a KV cache nor a state per "
                                  "sequence: nothing to allocate")
        if free <= 0:
            raise EvaluationError(
                f"{self.name!r} leaves no memory for a KV cache on {hw.name}: its weights "
                f"({si(weights, 'B')}) and the activation peak of an iteration of {tokens:,} "
                f"tokens ({si(peak, 'B')}) take its {si(hw.memory_bytes, 'B')}",
                hint="quantize, a parallel layout on a system, fewer tokens an iteration "
                     "(--max-tokens, or --chunk with the chunked scheduler), or FlashAttention "
                     "where the graph keeps its attention scores (--pass \"fuse_serving()\": "
                     "the kernels the stacks run)")
        links = (hw.host.bandwidth_Bps if hw.host else None,
                 hw.channel_bandwidth("link") if hw.link else None,
                 hw.link.latency_s if hw.link else 0.0)
        if block <= 0:  # a recurrent state only (Mamba): one block is one sequence's state
            return KVPool(int(free // fixed), fixed, 1, *links, grows=False)
        return KVPool(int(free // block), block, math.ceil(fixed / block) if fixed else 0,
                      *links)

    def simulate(self, hw: str | Hardware, stream: Stream, config: SimConfig | None = None,
                 slo: Mapping[str, float] | None = None, w_bits: float = 16,
                 a_bits: float = 16, kv_bits: float = 16,
                 decoding: "Decoding | str | None" = None) -> tuple[Trace, Summary]:
        """Serve `stream` on `hw` (one device or the per-device graph of a layout) with the
        scheduler, KV blocks and pre-emption of `config`; `slo` ({"ttft": s, "tpot": s,
        "e2e": s}) makes the summary's goodput. `decoding`: speculative decoding with a draft
        model (the draft's k steps and the target's verification of k + 1 tokens per decode
        iteration, the accepted tokens drawn per sequence)."""
        hw = _hardware(hw)
        config = (config or SimConfig()).validate()
        bits = dict(w_bits=w_bits, a_bits=a_bits, kv_bits=kv_bits)
        cost = self.iteration_cost(hw, **bits)
        pool = self.kv_pool(hw, config, **bits)
        if config.scheduler == "disaggregated":
            used = self._devices("decode", hw.count, hw.nodes).used
            instances = config.prefill_instances + config.decode_instances
            if instances * used > hw.count:
                raise EvaluationError(
                    f"disaggregated(prefill={config.prefill_instances}, "
                    f"decode={config.decode_instances}) needs {instances} instances of {used} "
                    f"device{'s' if used > 1 else ''}: {instances * used}; {hw.name} has "
                    f"{hw.count}", hint="a system file with more devices, or fewer instances")
        speculation = None
        d = self.decoding_strategy(decoding) if decoding is not None else None
        if d is not None:
            if d.lookahead or d.medusa or d.tree is not None:
                raise at(DecodingError, f"simulate serves speculative decoding with a draft "
                         f"model and a chain of k tokens; {d.strategy} is not simulated",
                         d.pos, hint="use latency or serve-curve for it")
            draft = self._draft_model(d)
            speculation = Speculative(d.k, d.accept, draft.iteration_cost(hw, **bits))
        trace = simulate(stream, cost, pool, config, speculation)
        return trace, summarise(trace, slo, stream.reordered)

    def simulate_fleet(self, hw: str | Hardware, stream: Stream, replicas: int,
                       router: str = "least_outstanding", config: SimConfig | None = None,
                       slo: Mapping[str, float] | None = None, w_bits: float = 16,
                       a_bits: float = 16, kv_bits: float = 16
                       ) -> tuple[Trace, Summary, list[Summary | None]]:
        """Serve `stream` on `replicas` instances of the layout behind a router
        (serving.fleet): the fleet's trace and summary, and each replica's summary (None for
        one that served nothing)."""
        hw = _hardware(hw)
        config = (config or SimConfig()).validate()
        bits = dict(w_bits=w_bits, a_bits=a_bits, kv_bits=kv_bits)
        trace, own = simulate_fleet(stream, self.iteration_cost(hw, **bits),
                                    self.kv_pool(hw, config, **bits), config, replicas, router)
        return trace, summarise(trace, slo, stream.reordered), \
            [summarise(t, slo) if t is not None else None for t in own]

    def rate_sweep(self, hw: str | Hardware, rates: Iterable[float], n: int, prompt: str,
                   output: str, seed: int, config: SimConfig, slo: Mapping[str, float],
                   attainment: float = 0.9, w_bits: float = 16, a_bits: float = 16,
                   kv_bits: float = 16, decoding: "Decoding | str | None" = None,
                   workers: int = 1, cluster: str | None = None
                   ) -> tuple[list[tuple[float, Summary]], float | None]:
        """Summaries of synthetic streams at each rate, and the largest rate at which a share
        `attainment` of the requests meet `slo` (serving.ratesweep: the bracketing rates
        narrowed in rounds; a fixed seed gives the same stream shape at every rate). The
        simulations of a round run on `workers` local processes or the Dask scheduler at
        `cluster` (speculative decoding runs here)."""
        if not slo:
            raise EvaluationError("a rate sweep looks for the largest rate meeting an SLO: give "
                                  "--slo", hint='e.g. --slo "ttft=2s,tpot=100ms"')
        if not 0 < attainment <= 1:
            raise EvaluationError(f"the attainment must be a fraction in (0, 1], got {attainment}")
        hw = _hardware(hw)
        config = config.validate()
        bits = dict(w_bits=w_bits, a_bits=a_bits, kv_bits=kv_bits)
        streams = lambda rs: [synthetic(r, n, prompt, output, seed) for r in rs]
        if decoding is not None:
            many = lambda rs: [self.simulate(hw, s, config, slo, decoding=decoding, **bits)[1]
                               for s in streams(rs)]
            return largest_rate(many, rates, attainment)
        base = {**server_record(cost_record(self.iteration_cost(hw, **bits)),
                                self.kv_pool(hw, config, **bits), config), "slo": dict(slo)}
        records = lambda rs: [{**base, "arrival": s.arrival_s.tolist(),
                               "prompt": s.prompt.tolist(), "output": s.output.tolist()}
                              for s in streams(rs)]
        with Executor(workers, cluster) as executor:
            many = lambda rs: executor.map(simulate_record, records(rs))
            return largest_rate(many, rates, attainment)

    def search(self, hw: "str | Hardware | Iterable[str | Hardware]", slo: SearchSLO,
               workload: Workload, workers: int = 1, cluster: str | None = None,
               **space) -> SearchResult:
        """The deployment that meets `slo` for `workload` with the fewest GPUs (or dollars, or
        the most tokens/s per GPU: `objective=`), its runner-up of the other mode and the
        Pareto frontier, over every layout of each system (serving.search; `space`: the
        fields of serving.search.Space other than the systems). Trials run here, on `workers`
        local processes, or on the Dask scheduler at `cluster`."""
        systems = [hw] if isinstance(hw, (str, Hardware)) else list(hw)
        space = SearchSpace(tuple(_hardware(h) for h in systems), **space)
        with Executor(workers, cluster) as executor:
            return search_deployments(self, space, slo, workload, executor)

    def report_data(self, hw: str | Hardware, batch: int = 1, seq: int = 2048,
                    w_bits: float = 16, a_bits: float = 16, kv_bits: float = 16,
                    stages: Iterable[str] = STAGES) -> dict:
        """What the HTML report shows, as plain records: the analysis, each stage's formula
        table, its crossovers in batch, and its graph's edges."""
        hw = _hardware(hw)
        stages = tuple(stages)
        bits = dict(w_bits=w_bits, a_bits=a_bits, kv_bits=kv_bits)
        analysis = self.analyze(hw, batch, seq, stages=stages, **bits)
        crossovers = {}
        for stage in stages:
            try:
                crossovers[stage] = self.crossover("batch", hw, stage, batch=batch, seq=seq,
                                                   **bits)
            except CostDSLError:   # e.g. a free degree: the report shows the rest
                crossovers[stage] = None
        return {"analysis": analysis,
                "formulas": {st: self.formulas(st) for st in stages},
                "crossovers": crossovers,
                "edges": {st: [(u, v) for u, v in self.graph(st).edges] for st in stages}}

    def live_data(self, hws: Iterable[str | Hardware], stages: Iterable[str] = STAGES,
                  bits: Iterable[float] = LIVE_BITS,
                  crossover_bits: tuple[float, float, float] | None = (16, 16, 16)) -> dict:
        """What a live report evaluates in the browser, as plain data: per hardware and stage,
        each distinct roofline over the bitwidth choices (bitwidths that give the same compute
        types share one) as expression trees (analysis.export), the memory of each stage, and
        at `crossover_bits` (None: none) each op's crossover in batch as a closed form in seq
        and in seq as one in batch."""
        bits = tuple(bits)
        out = {"model": self.name, "bits": list(bits), "hardware": []}
        for h in hws:
            hw = _hardware(h)
            entry = {"key": hw.key, "name": hw.name, "capacity": hw.memory_bytes,
                     "time_model": hw.time_model, "bandwidth": hw.bandwidth_Bps,
                     "peak": dict(hw.peak), "stages": {}}
            for stage in stages:
                variants, pick = [], {}
                keys: dict = {}
                for w, a, kv in itertools.product(bits, repeat=3):
                    settings = Settings(1, 1, w, a, kv).validate()
                    key = self._bits_key(stage, hw, settings)
                    if key not in keys:
                        keys[key] = len(variants)
                        variants.append(stage_record(self._roofline(stage, hw, settings)))
                    pick[f"{w:g}/{a:g}/{kv:g}"] = keys[key]
                solved = crossover_bits and stage in ("prefill", "decode")
                entry["stages"][stage] = {"variants": variants, "pick": pick,
                                          "memory": memory_record(self.memory(stage)),
                                          "crossovers": self._live_crossovers(
                                              hw, stage, crossover_bits) if solved else None}
            out["hardware"].append(entry)
        return out

    def _live_crossovers(self, hw: Hardware, stage: str, bits: tuple[float, float, float]
                         ) -> dict:
        """Each op's switch in batch (seq left free) and in seq (batch left free), with the
        hardware's figures put in, as trees: {"bits": "w/a/kv", "batch": [...], "seq": [...]}."""
        w, a, kv = bits
        bandwidth = {o.node.name: o.bandwidth for o in
                     self._roofline(stage, hw, Settings(1, 1, w, a, kv).validate()).ops}
        out = {"bits": f"{w:g}/{a:g}/{kv:g}"}
        for solve, free in (("batch", "seq"), ("seq", "batch")):
            try:
                answer = self.crossover(solve, hw, stage, w_bits=w, a_bits=a, kv_bits=kv,
                                        free=[free])
            except CostDSLError:
                out[solve] = []
                continue
            out[solve] = crossover_records(answer.ops, bandwidth)
        return out

    def fit(self, hw: str | Hardware, seq: int, batch: int = 1, w_bits: float = 16,
            a_bits: float = 16, kv_bits: float = 16) -> Fit:
        """Largest batch at `seq`, longest context at `batch`, and where the KV cache outweighs
        the weights, from the memory expressions of both stages."""
        hw = _hardware(hw)
        settings = Settings(batch, seq, w_bits, a_bits, kv_bits).validate()
        result = fit({s: self.memory(s) for s in STAGES}, settings.values(), hw.memory_bytes,
                     seq, batch)
        devices = self.devices(hw) if hw.count > 1 else None
        return replace(result, devices=devices, fused_max_batch=self._fused_max_batch(
            hw, settings, result.max_batch))

    def max_batch(self, hw: str | Hardware, seq: int, w_bits: float = 16, a_bits: float = 16,
                  kv_bits: float = 16) -> int:
        """The largest batch that fits at `seq` (fit's first answer, alone)."""
        hw = _hardware(hw)
        settings = Settings(1, seq, w_bits, a_bits, kv_bits).validate()
        return max_batch({s: self.memory(s) for s in STAGES}, settings.values(),
                         hw.memory_bytes, seq)

    def serve_record(self, hw: str | Hardware, seq: int, gen: int, bits: dict) -> dict:
        """A serving curve's closed forms at prompt `seq` and `gen` generated tokens, as data
        (serving.curve.ServeProgram reads it): the stage times and the decode's compute-bound
        time as trees in batch and cache length, each stage's memory, the largest batch that
        fits at the longest cache, and the decode crossovers in batch at `seq`."""
        hw = _hardware(hw)
        settings = Settings(1, seq, **bits).validate()
        last = seq + max(gen - 2, 0)  # tokens cached at the last decode step
        prefill, decode = (self._roofline(s, hw, settings) for s in STAGES)
        times = {"prefill": total_expression(prefill, "time"),
                 "decode": total_expression(decode, "time"),
                 "compute_bound": total_expression(decode, "compute_bound_time")}
        symbols = sorted(set().union(*(sympy.sympify(e).free_symbols for e in times.values())),
                         key=lambda x: x.name)
        summary = self.crossover("batch", hw, "decode", seq=seq, **bits).summary
        first = summary.first_compute_bound
        return {"symbols": [x.name for x in symbols],
                "times": {k: to_tree(e) for k, e in times.items()},
                "memory": {s: memory_trees(self.memory(s)) for s in STAGES},
                "max_batch": self.max_batch(hw, seq=last + 1, **bits),
                "balance": None if summary.balance_value is None else
                float(summary.balance_value),
                "first": None if first is None else {
                    "value": None if first.value is None else float(first.value),
                    "op": first.op}}

    @functools.cache
    def _flash_attention(self) -> "Model":
        """This model with FlashAttention, compiled once (fit asks it at every call)."""
        return self.with_passes(["flash_attention()"])

    def _fused_max_batch(self, hw: Hardware, settings: Settings, unfused: int) -> int | None:
        """The largest batch with FlashAttention, where the model's attention materialises its
        score matrix and fusing it lets at least a quarter more sequences fit; else None."""
        if not any(n.kind == "qk_matmul" for n in nodes(self.graph("prefill"))):
            return None
        fused = self._flash_attention().max_batch(
            hw, settings.seq, settings.w_bits, settings.a_bits, settings.kv_bits)
        return fused if fused >= 1.25 * unfused + 1 else None

    def compare(self, hw: str | Hardware, batch: int, seq: int, w_bits: float = 16,
                a_bits: float = 16, kv_bits: float = 16,
                stages: Iterable[str] = STAGES, tokens: int | None = None) -> Comparison:
        """This model (with its passes) against the same model with no pass applied."""
        hw = _hardware(hw)
        kw = dict(batch=batch, seq=seq, w_bits=w_bits, a_bits=a_bits, kv_bits=kv_bits,
                  stages=tuple(stages), tokens=tokens)
        return compare(self.without_passes().analyze(hw, **kw), self.analyze(hw, **kw))


def _settings(batch, seq, w_bits, a_bits, kv_bits, tokens, stages: tuple[str, ...],
              unbound: Iterable[str] = ()) -> Settings:
    """Validated settings for `stages`; a symbol in `unbound` (solved for, or kept free) needs
    no value."""
    check_stages(tokens, stages, needed="tokens" not in set(unbound))
    return Settings(batch, seq, w_bits, a_bits, kv_bits, tokens).validate()


def _vocabulary(design: Design):
    """The vocabulary of a model's token embedding (None without one)."""
    return next((op.attrs["vocab"] for op in design.ops if op.kind == "embedding"), None)


def _hardware(hw: str | Hardware) -> Hardware:
    return hw if isinstance(hw, Hardware) else load_hardware(hw)


def _number(v: sympy.Expr):
    if v.is_Integer:
        return int(v)
    if v is sympy.oo:
        return "inf"  # JSON has no infinity; the word the .arch file uses
    return float(v) if v.is_number else str(v)


def load(path: str | Path, model: str | None = None,
         set: Mapping[str, object] | Iterable[str] | None = None, text: str | None = None,
         passes: Iterable[str] = ()) -> Model:
    """Compile a .arch file. `set` binds or overrides parameters: {"hidden": 4096} or
    ["hidden=4096"]; values are numbers or expression text, parsed, never evaluated as Python.
    `passes` appends pass text after the file's own passes, as `--pass` does."""
    library = load_library(path, text)
    overrides = _overrides(set)
    return Model(elaborate(library, model, overrides), library, overrides).with_passes(passes)


def _overrides(set, flag: str = "--set") -> dict[str, ast.Expr] | None:
    if set is None:
        return None
    if isinstance(set, Mapping):
        set = [f"{k}={v}" for k, v in set.items()]
    return parse_overrides(list(set), flag)


_notebook.install()   # notebook display of the result records (_repr_html_, _repr_latex_)
