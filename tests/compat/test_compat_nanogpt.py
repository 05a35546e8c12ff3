"""nanoGPT's train.py loop with sw.wrap in place of DDP, under every strategy.

Against one process on the same global batch: every step's loss, the global gradient norm that
clip_grad_norm_ returns (on every rank), the learning rates the optimizer ran with, rank 0's
evaluations inside `sw.gathered`, the checkpoint rank 0 saved there (raw model's keys, and the
wrapper's with DDP's "module." prefix), the final state, and a clean destroy_process_group().
"nanogpt_compiled" is train.py's default compile=True (torch.compile before wrap, aot_eager).
"""

import pytest
import torch

from compat_harness import STRATEGIES, close, compare_state, errors, mean_losses, single_process_problems
from script_nanogpt import GRAD_CLIP


def _prefixed(state):
    return {"module." + k: v for k, v in state.items()}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("case", ["nanogpt", "nanogpt_compiled"])
def test_nanogpt_loop_matches_single_process(compat, case, strategy):
    ranks, expected = compat.ranks(strategy, case), compat.reference(case)
    assert min(expected["grad_norms"]) > GRAD_CLIP, "grad_clip must clip at every step for this test to mean anything"
    label = f"{case}/{strategy}"
    problems = errors(label, ranks)
    assert problems == []
    problems = single_process_problems(label, ranks, expected)
    for r, result in enumerate(ranks):
        if not close(result["grad_norms"], expected["grad_norms"]):
            problems.append(f"{label} rank {r}: clip_grad_norm_ returned {result['grad_norms']}, "
                            f"global norm is {expected['grad_norms']}")
        if not close(result["lrs"], expected["lrs"]):
            problems.append(f"{label} rank {r}: param-group lrs {result['lrs']} != {expected['lrs']}")
        problems += compare_state(f"{label} rank {r} model.state_dict()", result["wrapped_state"],
                                  _prefixed(expected["state"]))
    master = ranks[0]
    if set(master["evals"]) != set(expected["evals"]) or not close(list(master["evals"].values()),
                                                                   list(expected["evals"].values())):
        problems.append(f"{label}: rank 0 evaluations {master['evals']} != {expected['evals']}")
    for it, path in expected["checkpoints"].items():
        if it not in master["checkpoints"]:
            problems.append(f"{label}: rank 0 saved no checkpoint at iteration {it}")
            continue
        saved = torch.load(master["checkpoints"][it], weights_only=True)
        want = torch.load(path, weights_only=True)["model"]
        problems += compare_state(f"{label} checkpoint {it} raw_model.state_dict()", saved["model"], want)
        problems += compare_state(f"{label} checkpoint {it} model.state_dict()", saved["wrapped"], _prefixed(want))
    assert problems == []


@pytest.mark.timeout(600)
def test_nanogpt_losses_agree_across_ddp_and_zero_stages(compat):
    """ddp, zero1, zero2 and zero3 give the same losses as each other and as one process."""
    expected = compat.reference("nanogpt")["losses"]
    by_strategy = {}
    for strategy in ["ddp", "zero1", "zero2", "zero3"]:
        ranks = compat.ranks(strategy, "nanogpt")
        assert errors(strategy, ranks) == []
        by_strategy[strategy] = mean_losses(ranks)
    for strategy, losses in by_strategy.items():
        assert close(losses, by_strategy["ddp"]), f"{strategy} {losses} != ddp {by_strategy['ddp']}"
        assert close(losses, expected), f"{strategy} {losses} != single process {expected}"
