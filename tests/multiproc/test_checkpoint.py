"""Checkpoints: resharding across strategies and world sizes, exact resume, bad files, crashes."""

import errno
import os
import shutil

import pytest
import torch

import shardwise as sw
from shardwise.data.sampler import rank_slice
from shardwise.testing.cases import CASES, GLOBAL_BATCH
from shardwise.testing.parity import ATOL, RTOL


def _train(strategy, steps, save=None, load=None):
    """Train the tied-GPT case; optionally resume from `load` first and save to `save` after."""
    case = CASES["gpt_tied"]
    torch.manual_seed(0)
    model = case.build()
    model, optimizer = sw.wrap(model, case.optimizer(model), strategy=strategy)
    start = sw.load_checkpoint(load, model, optimizer)["step"] if load else 0
    losses = []
    for step in range(start, start + steps):
        x, y = case.batch(step)
        mine = rank_slice(GLOBAL_BATCH, sw.rank(), sw.world_size())
        loss = case.loss(model, x[mine], y[mine])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    if save:
        sw.save_checkpoint(save, model, optimizer, extra={"step": start + steps})
    return losses, sw.full_state_dict(model)


def _close(a: dict, b: dict) -> bool:
    return all(torch.allclose(a[k], b[k], rtol=RTOL, atol=ATOL) for k in b)


@pytest.mark.timeout(240)
def test_save_at_4_under_zero3_and_continue_anywhere(tmp_path):
    path = str(tmp_path / "ckpt")
    _, uninterrupted = sw.launch(_train, 1, args=("ddp", 10))[0]
    sw.launch(_train, 4, args=("zero3", 5, path))
    for strategy, n in (("zero1", 2), ("ddp", 1), ("zero2", 3)):
        results = sw.launch(_train, n, args=(strategy, 5, None, path))
        for _, state in results:
            assert _close(state, uninterrupted), (strategy, n)


@pytest.mark.timeout(120)
def test_resume_is_exact_at_the_same_strategy_and_world_size(tmp_path):
    path = str(tmp_path / "ckpt")
    straight = sw.launch(_train, 2, args=("zero2", 8))[0][0]
    first = sw.launch(_train, 2, args=("zero2", 4, path))[0][0]
    second = sw.launch(_train, 2, args=("zero2", 4, None, path))[0][0]
    assert first + second == straight  # to the last bit


def _save_then_fail(path, how):
    case = CASES["mlp"]
    torch.manual_seed(0)
    model = case.build()
    model, optimizer = sw.wrap(model, case.optimizer(model), strategy="zero2")
    sw.save_checkpoint(path, model, optimizer, extra={"step": 1})
    import shardwise.checkpoint.io as io

    if sw.rank() == 1:
        real_write = io.write_file

        def failing_write(file, write):
            if how == "crash":
                with open(file, "wb") as f:
                    f.write(b"half a shard")
                os._exit(9)  # the process dies mid-save
            raise OSError(errno.ENOSPC, "No space left on device")

        io.write_file = failing_write
    try:
        sw.save_checkpoint(path, model, optimizer, extra={"step": 2})
    finally:
        if sw.rank() == 1:
            io.write_file = real_write


def _load_step(path):
    case = CASES["mlp"]
    model = case.build()
    model, optimizer = sw.wrap(model, case.optimizer(model), strategy="ddp")
    return sw.load_checkpoint(path, model, optimizer)["step"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["crash", "disk_full"])
def test_failed_save_leaves_the_previous_checkpoint(tmp_path, how):
    path = str(tmp_path / "ckpt")
    with pytest.raises(sw.WorkerError) as info:
        sw.launch(_save_then_fail, 2, args=(path, how))
    if how == "disk_full":
        assert "No space left on device" in str(info.value) and "previous checkpoint is untouched" in str(info.value)
    else:
        assert "rank 1 died" in str(info.value)
    assert sw.launch(_load_step, 2, args=(path,)) == [1, 1]


def _save_mlp(path):
    case = CASES["mlp"]
    torch.manual_seed(0)
    model = case.build()
    model, optimizer = sw.wrap(model, case.optimizer(model), strategy="ddp")
    sw.save_checkpoint(path, model, optimizer, extra={"step": 3})


def _latest_folder(path):
    with open(os.path.join(path, "LATEST")) as f:
        return os.path.join(path, f.read().strip())


def test_bad_checkpoints_are_refused_with_one_line(tmp_path):
    path = str(tmp_path / "ckpt")
    sw.launch(_save_mlp, 2, args=(path,))
    case = CASES["mlp"]

    def load(p, model_fn=case.build):
        model = model_fn()
        model, optimizer = sw.wrap(model, case.optimizer(model), strategy="ddp")
        return sw.load_checkpoint(p, model, optimizer)

    assert load(path)["step"] == 3
    with pytest.raises(sw.ConfigError, match="no checkpoint at"):
        load(str(tmp_path / "missing"))
    from shardwise.models import MLP

    with pytest.raises(sw.ConfigError, match=r"different model: 'layers.0.weight' has shape \(13, 7\) in the checkpoint but \(14, 7\)"):
        load(path, lambda: MLP(d_in=7, width=14, depth=3, d_out=5))
    with pytest.raises(sw.ConfigError, match="different model: it has parameter 'layers.0.weight'"):
        load(path, lambda: torch.nn.Sequential(torch.nn.Linear(7, 5)))
    folder = _latest_folder(path)
    shard = os.path.join(folder, "rank00001.pt")
    data = bytearray(open(shard, "rb").read())
    for damage, message in (("flip", "does not match its checksum"), ("truncate", "does not match its checksum")):
        broken = data.copy()
        if damage == "flip":
            broken[len(broken) // 2] ^= 0xFF
        else:
            broken = broken[: len(broken) // 3]
        with open(shard, "wb") as f:
            f.write(broken)
        with pytest.raises(sw.ConfigError, match=message):
            load(path)
    with open(shard, "wb") as f:
        f.write(data)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "meta.json").write_text('{"format": "something-else"}')
    with pytest.raises(sw.ConfigError, match="is not a shardwise checkpoint"):
        load(str(foreign))
    shutil.rmtree(foreign)
    # A shard that would run code when unpickled is refused even with a matching checksum.
    import json
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(shard, "wb") as f:
        pickle.dump(Evil(), f)
    meta_path = os.path.join(folder, "meta.json")
    meta = json.load(open(meta_path))
    from shardwise.strategy.shard_files import sha256 as _sha256

    meta["files"]["rank00001.pt"] = _sha256(shard)
    json.dump(meta, open(meta_path, "w"))
    with pytest.raises(sw.ConfigError, match="cannot be read"):
        load(path)
