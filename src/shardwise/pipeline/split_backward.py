"""The backward split in two for zero-bubble schedules: B, the gradient of a stage's input, and
W, the gradients of its weights, run later.

[Note: split backward]
During a micro-batch's forward, every leaf module with parameters records its output o_m (a
forward hook). B runs autograd from the stage's output to the stage's input *and* to every o_m,
keeping the graph: the input's gradient goes to the previous stage, and g_m = dL/do_m is kept.
The weights' gradients are then local to each module: W runs, per module, autograd from o_m
with g_m to that module's parameters only, which touches nothing but the module's own nodes;
for a plain nn.Linear it skips autograd and computes the same products itself (dW = g_mᵀ x,
db = Σ g_m, x its recorded input), saving the engine's per-call cost. B does no weight work and
W no input work, so together they cost one ordinary backward.

That holds only if a parameter reaches the loss through its module's output and nowhere else.
Autograd's graph says so: each leaf parameter has one AccumulateGrad node, and every use of
the parameter in an operation is one edge into it. A parameter is left to W only if its edges
number exactly the calls of its module (one use per call, as Linear, LayerNorm, Embedding and
convolutions make); any other use (a tied weight used by another module, a parameter used
functionally elsewhere) makes its gradient B's, computed whole there. So the split never
changes the gradients, only when they are computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class Pending:
    """One micro-batch on one stage between its B and its W."""

    outputs: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    """(module, its input, its output) for each call of a leaf module whose parameters W computes."""
    weights: list[nn.Parameter] = field(default_factory=list)
    """Parameters whose gradient B computes whole."""
    grads: list[torch.Tensor | None] = field(default_factory=list)
    """After B: dL/d output, per entry of `outputs`."""


def _own(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters(recurse=False) if p.requires_grad]


def _edges_into_parameters(root) -> dict[int, int]:
    """id(parameter) -> edges into its AccumulateGrad node from the graph below `root`."""
    counts: dict[int, int] = {}
    seen = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for child, _ in node.next_functions:
            if child is None:
                continue
            variable = getattr(child, "variable", None)
            if variable is not None:
                counts[id(variable)] = counts.get(id(variable), 0) + 1
            else:
                stack.append(child)
    return counts


class WeightGradients:
    """Forward hooks on a stage's leaf modules, and the B and W of [Note: split backward]."""

    def __init__(self, stages: list[nn.Module]):
        self.recording: list | None = None
        self.params: list[nn.Parameter] = []
        for stage in stages:
            for module in stage.modules():
                if _own(module) and not list(module.children()):
                    module.register_forward_hook(self._record)  # inert outside `forward`
            self.params += [p for p in stage.parameters() if p.requires_grad]

    def _record(self, module, inputs, output) -> None:
        if self.recording is not None and isinstance(output, torch.Tensor) and output.requires_grad:
            self.recording.append((module, inputs[0] if inputs else None, output))

    def forward(self, run):
        """`run()` (a stage's forward) with its modules' outputs recorded; (its result, Pending)."""
        self.recording = []
        try:
            output = run()
        finally:
            recorded, self.recording = self.recording, None
        pending = Pending()
        if not isinstance(output, torch.Tensor) or output.grad_fn is None:
            return output, pending
        edges = _edges_into_parameters(output.grad_fn)
        calls: dict[int, int] = {}
        owners: dict[int, set[int]] = {}
        for module, _, _ in recorded:
            calls[id(module)] = calls.get(id(module), 0) + 1
            for p in _own(module):
                owners.setdefault(id(p), set()).add(id(module))
        split = set()
        for module, _, _ in recorded:
            params = _own(module)
            if all(len(owners[id(p)]) == 1 and edges.get(id(p), 0) == calls[id(module)] for p in params):
                split.add(id(module))
        pending.outputs = [entry for entry in recorded if id(entry[0]) in split]
        by_w = {id(p) for module, _, _ in pending.outputs for p in _own(module)}
        pending.weights = [p for p in dict.fromkeys(self.params) if id(p) not in by_w and id(p) in edges]
        return output, pending

    @staticmethod
    def input_backward(output: torch.Tensor, grad: torch.Tensor | None, stage_input: torch.Tensor | None,
                       pending: Pending) -> None:
        """B: the stage input's `.grad`, the whole gradient of B's parameters (accumulated in
        `.grad`), and dL/do_m kept for W. The graph is kept for W."""
        targets = ([stage_input] if stage_input is not None else []) + [o for _, _, o in pending.outputs] + pending.weights
        if not targets:
            return
        grads = torch.autograd.grad(output, targets, grad_outputs=grad, retain_graph=True, allow_unused=True)
        at = 0
        if stage_input is not None:
            stage_input.grad = grads[0]
            at = 1
        pending.grads = list(grads[at:at + len(pending.outputs)])
        for p, g in zip(pending.weights, grads[at + len(pending.outputs):]):
            _accumulate(p, g)

    @staticmethod
    def weight_backward(pending: Pending) -> None:
        """W: each module's parameters' gradients from its output's gradient, accumulated."""
        for (module, x, out), grad in zip(pending.outputs, pending.grads):
            if grad is None:  # the output did not reach the loss
                continue
            if type(module) is nn.Linear and isinstance(x, torch.Tensor) and x.dtype == grad.dtype:
                flat = grad.reshape(-1, grad.shape[-1])
                with torch.no_grad():
                    if module.weight.requires_grad:
                        _accumulate(module.weight, flat.t().mm(x.detach().reshape(-1, x.shape[-1])))
                    if module.bias is not None and module.bias.requires_grad:
                        _accumulate(module.bias, flat.sum(0))
                continue
            params = _own(module)
            for p, g in zip(params, torch.autograd.grad(out, params, grad_outputs=grad)):
                _accumulate(p, g)
        pending.outputs, pending.grads = [], []


def _accumulate(p: nn.Parameter, g: torch.Tensor | None) -> None:
    if g is None:
        return
    g = g.to(p.dtype)  # under autocast W's own products are 16-bit; autograd casts back as well
    if p.grad is None:
        p.grad = g.detach().clone() if g.requires_grad else g
    else:
        p.grad.add_(g)
