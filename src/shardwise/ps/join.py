"""Starting asynchronous workers one by one: the model's description through the job's store.

In sync mode every rank wraps together (the collective check and broadcast of any strategy).
In async and ssp modes a worker may start late, so wrap takes no collective with it: server 0
publishes its model's signature, buffers and frozen parameters (what servers do not hold) in the
job's store; each worker checks its own model against them when it arrives, takes the buffers
and frozen parameters, and pulls the trained parameters from the servers as they are then.
"""

from __future__ import annotations

import io
import json

import torch
from torch import nn

from ..strategy.prepare import compare_signatures, model_signature
from .heartbeat import job_store


def _unserved(module: nn.Module):
    """(name, tensor) of what servers do not hold: buffers and frozen parameters."""
    yield from ((name, p) for name, p in module.named_parameters() if not p.requires_grad)
    yield from module.named_buffers()


def publish_model(module: nn.Module) -> None:
    """Server 0: the reference signature and the unserved state, for workers joining at any time."""
    store = job_store()
    unserved = io.BytesIO()
    torch.save({name: t.detach().cpu() for name, t in _unserved(module)}, unserved)
    store.set("model/unserved", unserved.getvalue())
    store.set("model/signature", json.dumps(model_signature(module)))


def take_model(module: nn.Module, global_rank: int) -> None:
    """A worker: check its model against server 0's and copy server 0's unserved state into it."""
    store = job_store()
    reference = json.loads(store.get("model/signature").decode())
    compare_signatures(reference, model_signature(module), global_rank)
    unserved = torch.load(io.BytesIO(store.get("model/unserved")), weights_only=True)
    with torch.no_grad():
        for name, t in _unserved(module):
            t.copy_(unserved[name])


def withdraw_model() -> None:
    """Server 0, when serving ends: a later wrap in the same job must not read this one's model."""
    store = job_store()
    for key in ("model/signature", "model/unserved"):
        store.delete_key(key)
