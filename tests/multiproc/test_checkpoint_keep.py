"""Each save removes only this process's own older saves (the newest `keep` stay); saves that
another run left in the same folder are never touched, and LATEST names the newest."""

import os

import pytest
import torch

import shardwise as sw


def _save_four_times(path, keep):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    model, optimizer = sw.wrap(model, torch.optim.SGD(model.parameters(), lr=0.1), strategy="zero2")
    for step in range(4):
        model(torch.randn(3, 4)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        sw.save_checkpoint(path, model, optimizer, extra={"step": step + 1}, keep=keep)
    return sw.load_checkpoint(path, model, optimizer)["step"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("keep", [1, 2, None])
def test_only_own_older_saves_are_removed(tmp_path, keep):
    path = tmp_path / "checkpoint"
    foreign = path / "ckpt-otherrun0001"
    foreign.mkdir(parents=True)
    (foreign / "meta.json").write_text("{}")
    assert sw.launch(_save_four_times, 2, args=(str(path), keep)) == [4, 4]
    saves = sorted(p for p in os.listdir(path) if p.startswith("ckpt-") and p != foreign.name)
    assert len(saves) == (4 if keep is None else keep)
    assert (path / "LATEST").read_text().strip() in saves
    assert (foreign / "meta.json").read_text() == "{}"


def test_keep_must_be_positive(tmp_path):
    with pytest.raises(sw.ConfigError, match="keep must be"):
        sw.save_checkpoint(tmp_path, torch.nn.Linear(1, 1), None, keep=0)
