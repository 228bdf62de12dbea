"""The optimisations themselves, one class each, in the order they are prepared and applied.

Order matters once, at prepare: QKV fusion happens before the fp8 twin is made (fusing needs plain weights, and the
twin then holds fused fp8 weights), and compile comes after fp8 so that both copies get compiled. Apply order only
puts the CUDA-graph wrapper last, around whichever copy `Accelerator.copy_for` chose.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from fluxserve.engine.accel import Accelerator, AccelSettings, Optimisation

log = logging.getLogger(__name__)

# Dropped first when a level fails while warming up.
DROP_ORDER = ("cuda_graphs", "fp8", "compile", "attention", "channels_last_vae", "fused_qkv")

# Kept in bf16 in the fp8 twin: the embedders, the modulation MLPs and the final layer act on few rows and carry
# the conditioning; quantising them costs quality and buys nothing (flux-fp8-api's quality notes).
FP8_KEEP_PREFIXES = ("x_embedder", "context_embedder", "time_text_embed", "norm_out", "proj_out")


def attention_modules(transformer: Any) -> list[Any]:
    from diffusers.models.attention_processor import Attention

    found = [m for m in transformer.modules() if isinstance(m, Attention)]
    if not found:  # newer diffusers name their Flux attention module FluxAttention
        found = [m for m in transformer.modules() if hasattr(m, "fused_projections")]
    return found


def repeated_blocks(transformer: Any) -> list[Any]:
    names = set(getattr(transformer, "_repeated_blocks", ()) or ())
    return [m for m in transformer.modules() if type(m).__name__ in names]


def on_cuda(engine: Any) -> bool:
    return engine.placement.device == "cuda"


class FusedQKV(Optimisation):
    """One matmul for Q, K and V instead of three (diffusers keeps both; a flag per module picks)."""

    name, levels = "fused_qkv", ("regular", "high")

    def prepare(self, engine: Any, settings: AccelSettings, accel: Accelerator) -> None:
        engine.pipe.transformer.fuse_qkv_projections()
        self.apply(engine, accel, False)

    def apply(self, engine: Any, accel: Accelerator, on: bool) -> None:
        for transformer in accel.copies.values():  # every copy: `none` must never inherit a fused flag
            for module in attention_modules(transformer):
                module.fused_projections = on

    def is_running(self, engine: Any, accel: Accelerator) -> bool:
        modules = attention_modules(current_transformer(engine))
        return bool(modules) and all(m.fused_projections for m in modules)


class ChannelsLastVAE(Optimisation):
    """NHWC convolutions in the VAE decoder: faster cuDNN kernels (with the compiled decoder)."""

    name, levels = "channels_last_vae", ("regular", "high")

    def apply(self, engine: Any, accel: Accelerator, on: bool) -> None:
        import torch

        engine.pipe.vae.to(memory_format=torch.channels_last if on else torch.contiguous_format)

    def is_running(self, engine: Any, accel: Accelerator) -> bool:
        import torch

        conv = next((m for m in engine.pipe.vae.modules() if isinstance(m, torch.nn.Conv2d)), None)
        return conv is not None and conv.weight.is_contiguous(memory_format=torch.channels_last) and \
            not conv.weight.is_contiguous()  # fmt: skip


class Attention(Optimisation):
    """An explicit SDPA backend (diffusers' attention dispatch) instead of whatever PyTorch's heuristic picks."""

    name, levels = "attention", ("regular", "high")

    def unsupported(self, engine: Any, settings: AccelSettings) -> str | None:
        from fluxserve.engine.attention import BACKENDS

        if settings.attention == "default":
            return "--attention default: PyTorch's own SDPA choice"
        if settings.attention == "auto" and not on_cuda(engine):
            return "an explicit attention backend is chosen on CUDA only; --attention NAME forces one"
        if settings.attention not in ("auto", *BACKENDS):
            return f"unknown attention backend {settings.attention!r} (one of auto, default, {', '.join(BACKENDS)})"
        return None

    def prepare(self, engine: Any, settings: AccelSettings, accel: Accelerator) -> None:
        from diffusers.models.attention_dispatch import AttentionBackendName

        from fluxserve.engine.attention import BACKENDS, choose_backend

        if settings.attention == "auto":
            self.choice, self.reason = choose_backend(engine.pipe.transformer)
        else:
            self.choice, self.reason = settings.attention, "chosen by the operator"
        self.backend = AttentionBackendName(BACKENDS[self.choice])

    def apply(self, engine: Any, accel: Accelerator, on: bool) -> None:
        for transformer in accel.copies.values():
            for module in attention_modules(transformer):
                module.processor._attention_backend = self.backend if on else None  # None: the stock dispatch

    def is_running(self, engine: Any, accel: Accelerator) -> bool:
        modules = attention_modules(current_transformer(engine))
        return bool(modules) and all(getattr(m.processor, "_attention_backend", None) == self.backend
                                     for m in modules)  # fmt: skip

    def details(self) -> str | None:
        return f"{self.choice}: {self.reason}"


class Float8(Optimisation):
    """An fp8 twin of the transformer (torchao: dynamic float8 activations and weights, per-row scales) for
    `high`. `Accelerator.copy_for` selects it; compile and CUDA graphs then apply to it like to the bf16 copy."""

    name, levels = "fp8", ("high",)

    def unsupported(self, engine: Any, settings: AccelSettings) -> str | None:
        if settings.fp8 == "auto":
            import torch

            if not on_cuda(engine):
                return "fp8 needs a CUDA GPU (Ada or Hopper); --fp8 on forces it"
            if torch.cuda.get_device_capability() < (8, 9):
                return "fp8 needs compute capability 8.9+ (Ada, Hopper)"
        fp8_config(settings)  # imports torchao and builds the config: a broken install is a reason, not a crash
        return None

    def prepare(self, engine: Any, settings: AccelSettings, accel: Accelerator) -> None:
        twin = copy.deepcopy(accel.copies["bf16"])
        self.quantise(twin, settings)
        accel.copies["fp8"] = twin

    @staticmethod
    def quantise(transformer: Any, settings: AccelSettings) -> None:
        from torchao.quantization import quantize_

        quantize_(transformer, fp8_config(settings), filter_fn=fp8_eligible)

    def is_running(self, engine: Any, accel: Accelerator) -> bool:
        return has_float8_weights(current_transformer(engine))


class Compile(Optimisation):
    """Regional torch.compile: the transformer's repeated blocks (diffusers' compile_repeated_blocks: one compile
    serves all 57 blocks, seconds instead of minutes) on every copy, and the VAE decoder. Static shapes: one graph
    per served shape, never an automatic dynamic one (slower kernels, and bits that depend on what ran before).
    `none` runs the same modules eagerly: the compiled forward is switched per module, not swapped in."""

    name, levels = "compile", ("regular", "high")
    # Graphs per block type: shapes x batch sizes x copies; the default (8) would silently fall back to eager.
    RECOMPILE_LIMIT = 256

    def unsupported(self, engine: Any, settings: AccelSettings) -> str | None:
        if settings.compile == "auto" and not on_cuda(engine):
            return "torch.compile is used on CUDA only (on CPU it costs minutes and gains little); --compile on forces it"
        return None

    def prepare(self, engine: Any, settings: AccelSettings, accel: Accelerator) -> None:
        import torch

        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, self.RECOMPILE_LIMIT)
        options = dict(mode=settings.compile_mode, backend=settings.compile_backend, fullgraph=True, dynamic=False)
        if settings.compile_backend != "inductor":
            options.pop("mode")  # modes are inductor's
        self.compiled: list[tuple[Any, Any]] = []
        for transformer in accel.copies.values():
            transformer.compile_repeated_blocks(**options)
        decoder = engine.pipe.vae.decoder
        decoder.compile(**options)
        for module in [*(b for t in accel.copies.values() for b in repeated_blocks(t)), decoder]:
            # nn.Module.compile stores the compiled forward here; keeping it lets `apply` switch it per level.
            self.compiled.append((module, module._compiled_call_impl))
        self.apply(engine, accel, False)

    def apply(self, engine: Any, accel: Accelerator, on: bool) -> None:
        for module, compiled in self.compiled:
            module._compiled_call_impl = compiled if on else None

    def is_running(self, engine: Any, accel: Accelerator) -> bool:
        blocks = repeated_blocks(current_transformer(engine))
        modules = [*blocks, engine.pipe.vae.decoder]
        return bool(blocks) and all(getattr(m, "_compiled_call_impl", None) is not None for m in modules)


class CudaGraphs(Optimisation):
    """The whole transformer forward captured as one CUDA graph per (level, input shapes) and replayed: no kernel
    launch overhead, no Python between kernels. Used for a shape only if its replay gives the same bits as the
    un-graphed call."""

    name, levels = "cuda_graphs", ("regular", "high")

    def unsupported(self, engine: Any, settings: AccelSettings) -> str | None:
        if settings.cuda_graphs == "off":
            return "--cuda-graphs off"
        if not on_cuda(engine) and getattr(self, "graph_factory", None) is None:
            return "CUDA graphs need a CUDA device"
        return None

    def prepare(self, engine: Any, settings: AccelSettings, accel: Accelerator) -> None:
        from fluxserve.engine.graphs import GraphedTransformer, cuda_graph_factory

        factory = getattr(self, "graph_factory", None) or cuda_graph_factory
        self.wrappers = {name: GraphedTransformer(module, factory) for name, module in accel.copies.items()}

    def apply(self, engine: Any, accel: Accelerator, on: bool) -> None:
        if on:
            chosen = next(name for name, module in accel.copies.items() if module is engine.pipe.transformer)
            engine.pipe.transformer = self.wrappers[chosen]

    def is_running(self, engine: Any, accel: Accelerator) -> bool:
        from fluxserve.engine.graphs import GraphedTransformer

        return isinstance(engine.pipe.transformer, GraphedTransformer)

    def details(self) -> str | None:
        wrappers = getattr(self, "wrappers", {}).values()
        captured = sum(len(w.graphs) for w in wrappers)
        refused = sum(len(w.refused) for w in wrappers)
        return f"{captured} shapes captured, {refused} run un-graphed (not bit-identical or not capturable)"


OPTIMISATIONS: tuple[type[Optimisation], ...] = (FusedQKV, ChannelsLastVAE, Attention, Float8, Compile, CudaGraphs)


def current_transformer(engine: Any) -> Any:
    """The transformer copy the pipeline calls now (seen through a CUDA-graph wrapper)."""
    transformer = engine.pipe.transformer
    return getattr(transformer, "inner", transformer)


def fp8_config(settings: AccelSettings) -> Any:
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, PerTensor

    granularity = {"row": PerRow, "tensor": PerTensor}[settings.fp8_granularity]()
    # set_inductor_config=False: torchao would otherwise turn on process-wide inductor options that slow every
    # later compile, `regular`'s included.
    return Float8DynamicActivationFloat8WeightConfig(granularity=granularity, set_inductor_config=False)


def fp8_eligible(module: Any, fqn: str) -> bool:
    """The blocks' token-wise linear layers; not the embedders, modulation (norm*.linear) or the final layer, and
    only shapes fp8 GEMMs take (dimensions divisible by 16)."""
    import torch

    if not isinstance(module, torch.nn.Linear) or fqn.startswith(FP8_KEEP_PREFIXES):
        return False
    if any(part.startswith("norm") for part in fqn.split(".")):
        return False
    return module.in_features % 16 == 0 and module.out_features % 16 == 0


def has_float8_weights(transformer: Any) -> bool:
    import torch

    float8 = {torch.float8_e4m3fn, torch.float8_e5m2}
    for module in transformer.modules():
        for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
            if getattr(tensor, "qdata", tensor).dtype in float8:  # torchao's Float8Tensor keeps its bytes in qdata
                return True
    return False
