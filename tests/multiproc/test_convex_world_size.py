"""Every solver gives the same iterates at N = 1, 2, 3, 4 ranks (float64, 1e-10 relative), and counts its bytes."""

import pytest
import torch

import shardwise as sw
from shardwise.convex import DataSpec, SolveJob, StopRule, load_dataset
from shardwise.convex.config import NewtonCGConfig
from shardwise.convex.oracle import no_reduce
from shardwise.convex.run import local_oracle, run_solver
from shardwise import comm

LAM = 1e-3
ROUNDS = 25
# A budget of rounds, or ‖∇f‖ ≤ 1e-7: beyond that, line-search and restart tests compare values
# that differ in the last bits (f changes by less than 1e-14 relative), and that is noise, not the method.
FIXED = StopRule(tol=1e-7, criterion="gradient", max_rounds=ROUNDS)
CASES = {
    # problem: (data, solvers)
    "ridge": (DataSpec("synthetic", samples=203, features=9, effective_rank=3, seed=5), ["gd", "agd", "cg", "pcg", "newton-cg", "lbfgs"]),
    "logistic": (DataSpec("synthetic", samples=211, features=7, seed=6), ["gd", "agd", "newton-cg", "lbfgs"]),
    "multinomial": (DataSpec("synthetic", samples=157, features=5, classes=3, seed=7), ["agd", "newton-cg", "lbfgs"]),
}
EXTRA = {("logistic", "newton-cg-jacobi"): NewtonCGConfig(preconditioner="jacobi")}


def _jobs(problem, solvers):
    jobs = [SolveJob(s, FIXED, LAM, keep_iterates=True) for s in solvers]
    jobs += [SolveJob("newton-cg", FIXED, LAM, config, keep_iterates=True) for (p, _), config in EXTRA.items() if p == problem]
    return jobs


def _all_cases(reduce=comm.all_reduce):
    """Runs on every rank: each case's solvers on this rank's rows; returns iterates, rounds, bytes."""
    out = {}
    for problem, (spec, solvers) in CASES.items():
        data, kind = load_dataset(spec, problem)
        for job in _jobs(problem, solvers):
            oracle = local_oracle(data, kind, LAM, sw.rank(), sw.world_size(), reduce)
            comm.reset_comm_stats()
            result = run_solver(job, oracle)
            out[(problem, job.solver, job.config is not None)] = (
                torch.stack(result.iterates), [r.rounds for r in result.records], oracle.comm_bytes,
                comm.comm_stats()["total"], result.records[-1].grad_norm)
    return out


@pytest.fixture(scope="module")
def single_process():
    """N = 1: this process, no process group, the identity reduce."""
    return _all_cases(reduce=no_reduce)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("nproc", [2, 3, 4])
def test_iterates_do_not_depend_on_world_size(single_process, nproc):
    per_rank = sw.launch(_all_cases, nproc, timeout_s=150)
    for key, (iterates, rounds, oracle_bytes, counted_bytes, _) in per_rank[0].items():
        ref_iterates, ref_rounds, _, ref_counted, ref_grad_norm = single_process[key]
        assert rounds == ref_rounds, key
        assert ref_rounds[-1] >= ROUNDS or ref_grad_norm <= FIXED.tol, key
        scale = ref_iterates.norm(dim=1).clamp_min(1e-300)
        relative = ((iterates - ref_iterates).norm(dim=1) / scale).max().item()
        assert relative <= 1e-10, (key, relative)
        # every byte went through shardwise.comm, counted as the ring volume 2(N-1)/N·S
        assert counted_bytes == round(oracle_bytes) and counted_bytes > 0, key
        assert ref_counted == 0, key  # a world of one moves nothing
        for other in per_rank[1:]:
            assert torch.equal(other[key][0], iterates), key  # every rank holds the same iterate
