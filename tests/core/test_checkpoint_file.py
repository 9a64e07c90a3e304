"""Opening checkpoint files (i2p.checkpoint_file): bad ones named with the readable ones beside them
offered, newest first; a peek reads the small entries without loading the tensors.
"""

import os

import pytest
import torch

from i2p.checkpoint_file import CheckpointError, check_checkpoint, peek_checkpoint


def _write(path, payload=None):
    torch.save(payload if payload is not None else {"state_dict": {"w": torch.ones(2)}}, path)
    return path


def test_empty_truncated_and_foreign_files_are_named_with_alternatives(tmp_path):
    good = _write(tmp_path / "epoch1.ckpt")
    os.utime(good, (1, 1))
    newer = _write(tmp_path / "epoch2.ckpt")
    (tmp_path / "empty.ckpt").write_bytes(b"")
    (tmp_path / "cut.ckpt").write_bytes(newer.read_bytes()[: newer.stat().st_size // 2])
    (tmp_path / "text.ckpt").write_text("hello")
    for name, fragment in [("empty", "is empty"), ("cut", "truncated or corrupt"), ("text", "truncated or corrupt"),
                           ("missing", "not found")]:
        with pytest.raises(CheckpointError) as e:
            check_checkpoint(tmp_path / f"{name}.ckpt")
        msg = str(e.value)
        assert msg.startswith(str(tmp_path / f"{name}.ckpt")) and fragment in msg
        assert msg.index("epoch2.ckpt") < msg.index("epoch1.ckpt")  # the readable ones, newest first
    check_checkpoint(good)


def test_peek_reads_entries_memory_mapped_and_names_a_corrupt_file(tmp_path):
    path = _write(tmp_path / "run.ckpt", {"state_dict": {"w": torch.arange(6.0)}, "datamodule_hyper_parameters":
                                          {"voxel_size": 0.05}})
    ckpt = peek_checkpoint(path)
    assert ckpt["datamodule_hyper_parameters"] == {"voxel_size": 0.05}
    w = ckpt["state_dict"]["w"]
    assert torch.equal(w, torch.arange(6.0))
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"cut\.ckpt: .*truncated or corrupt.*run\.ckpt"):
        peek_checkpoint(cut)
