"""Stand-ins for what the CPU lacks on the GPU path: an fp8 quantiser (torchao's fp8 kernels need CUDA 8.9+), a CUDA
graph, and a torch.compile backend that records what it compiled."""

from __future__ import annotations

from typing import Any

import torch

from fluxserve.engine.switches import fp8_eligible

FLOAT8_MAX = 448.0  # largest finite float8_e4m3fn


class FakeFloat8Linear(torch.nn.Module):
    """A linear layer whose weights really are float8 e4m3 with per-row scales, dequantised in forward (what
    torchao's weight-only path does, in plain tensors that every compile backend traces)."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / FLOAT8_MAX
        self.register_buffer("qweight", (weight / scale).to(torch.float8_e4m3fn))
        self.register_buffer("scale", scale)
        self.bias = linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, (self.qweight.float() * self.scale).to(x.dtype), self.bias)


def fake_quantise(transformer: torch.nn.Module, settings: Any) -> None:
    """Float8.quantise's stand-in: the same eligibility rule, fake fp8 layers."""
    for parent_name, parent in list(transformer.named_modules()):
        for name, child in list(parent.named_children()):
            fqn = f"{parent_name}.{name}" if parent_name else name
            if fp8_eligible(child, fqn):
                setattr(parent, name, FakeFloat8Linear(child))


class RecordingBackend:
    """A torch.compile backend (aot_eager underneath) that records each graph's tensor inputs and counts calls of
    compiled code, so a test sees what really ran compiled."""

    def __init__(self) -> None:
        self.graph_inputs: list[list[torch.Tensor]] = []
        self.calls = 0

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
        self.graph_inputs.append([t for t in example_inputs if isinstance(t, torch.Tensor)])
        compiled = torch._dynamo.lookup_backend("aot_eager")(gm, example_inputs)

        def run(*args: Any) -> Any:
            self.calls += 1
            return compiled(*args)

        return run


class FakeGraph:
    """A CUDA graph's contract on CPU: replay re-runs the captured function, writing into the same output tensor,
    reading the same (static) input tensors."""

    def __init__(self, run: Any, output: torch.Tensor, perturb: bool) -> None:
        self.run, self.output, self.perturb = run, output, perturb
        self.replays = 0

    def replay(self) -> None:
        self.replays += 1
        self.output.copy_(self.run() + (1e-3 if self.perturb else 0.0))


class FakeGraphFactory:
    def __init__(self, perturb: bool = False) -> None:
        self.perturb = perturb
        self.graphs: list[FakeGraph] = []

    def __call__(self, run: Any) -> tuple[FakeGraph, torch.Tensor]:
        output = run().clone()
        graph = FakeGraph(run, output, self.perturb)
        self.graphs.append(graph)
        return graph, output
