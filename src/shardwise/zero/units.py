"""Which parameters form which ZeRO unit (pure given the module tree; no process group).

Stages 1-2: units are gradient buckets, consecutive parameters in backward order up to a size
cap. Stage 3: units follow the module tree, since a unit's parameters are gathered just before
its module runs: each member of a ModuleList or Sequential that holds trainable parameters
(a transformer block, a layer) is a unit, or each module of the classes the user names. The
parameters left over, and any parameter shared between units (tied embeddings), form the root
unit, which is gathered for the whole forward and again for the whole backward.

[Note: small units]
A unit costs three collectives a step (gather for forward, gather for backward, reduce-scatter)
whatever its size, and on gloo each has a fixed cost of about 0.7 ms: a 0.26 MB layer moves in
far less, so an MLP of 256-wide layers ran 2.9x PyTorch DDP's step with a unit per layer. As
FSDP's size-based wrapping leaves small modules to their parent's unit, a member smaller than
`min_bytes` (ZeRO's `min_unit_mb`) is not a unit of its own: its parameters join the root unit,
gathered once for the whole forward and once for the backward. Modules of classes the user
names are units whatever their size.
"""

from __future__ import annotations

from torch import nn


def trainable_bytes(module: nn.Module) -> int:
    return sum(p.numel() * 4 for p in module.parameters() if p.requires_grad)


def unit_modules(module: nn.Module, unit_classes: tuple = (), min_bytes: int = 0) -> list[nn.Module]:
    """Modules that each become a stage-3 unit, in registration order ([Note: small units])."""
    found: list[nn.Module] = []

    def is_unit(parent: nn.Module, child: nn.Module) -> bool:
        if unit_classes:
            return isinstance(child, tuple(unit_classes))
        return isinstance(parent, (nn.ModuleList, nn.Sequential))

    def visit(parent: nn.Module) -> None:
        for child in parent.children():
            if is_unit(parent, child) and any(p.requires_grad for p in child.parameters()):
                if unit_classes or trainable_bytes(child) >= min_bytes:
                    found.append(child)  # a small member is left to the root unit, with its children
            else:
                visit(child)

    visit(module)
    return found


def assign_parameters(trainable: list[nn.Parameter], modules: list[nn.Module]) -> tuple[list, list[list]]:
    """Split trainable parameters into (root parameters, parameters of each unit module).

    A parameter belongs to a unit when that unit alone holds it; otherwise to the root.
    """
    holders: dict[int, set[int]] = {}
    for index, m in enumerate(modules):
        for p in m.parameters():
            holders.setdefault(id(p), set()).add(index)
    root: list = []
    per_unit: list[list] = [[] for _ in modules]
    for p in trainable:
        owners = holders.get(id(p), set())
        if len(owners) == 1:
            per_unit[next(iter(owners))].append(p)
        else:
            root.append(p)
    return root, per_unit


def stage3_units(module: nn.Module, trainable: list[nn.Parameter], unit_classes: tuple = (), min_bytes: int = 0,
                 find_unused: bool = False) -> tuple[list, list[tuple[nn.Module, list]]]:
    """Stage 3's (root parameters, [(unit module, its parameters)]); under find_unused every
    parameter is the root's, see [Note: unused parameters]."""
    modules = [] if find_unused else unit_modules(module, unit_classes, min_bytes)
    root, per_module = assign_parameters(trainable, modules)
    return root, [(m, params) for m, params in zip(modules, per_module) if params]


def kept_for_backward(module: nn.Module, unit_classes: tuple = (), min_bytes: int = 0, find_unused: bool = False) -> int:
    """Parameter elements a stage-3 forward leaves gathered for backward: the root unit and the
    last unit in registration order, the forward's last where modules run in that order
    ([Note: kept for backward] in stage3.py)."""
    trainable = [p for p in module.parameters() if p.requires_grad]
    root, units = stage3_units(module, trainable, unit_classes, min_bytes, find_unused)
    return sum(p.numel() for p in root) + (sum(p.numel() for p in units[-1][1]) if units else 0)
