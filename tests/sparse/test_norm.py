"""BatchNorm on sparse features and its synchronised version (conversion, 2 gloo ranks)."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from i2p.sparse import (
    BatchNorm,
    Conv3d,
    ReLU,
    SparseTensor,
    SyncBatchNorm,
    convert_sync_batchnorm,
    revert_sync_batchnorm,
)
from tests.helpers.sparse import random_sparse


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = Conv3d(3, 4, 3)
        self.bn1 = BatchNorm(4)
        self.act = ReLU()
        self.head_bn = nn.BatchNorm1d(4)

    def forward(self, x):
        return self.act(self.bn1(self.conv1(x)))


def test_batchnorm_is_batchnorm1d_on_feats():
    x = random_sparse(channels=4, dtype=torch.float32)
    bn, ref = BatchNorm(4), nn.BatchNorm1d(4)
    torch.testing.assert_close(bn(x).feats, ref(x.feats))
    torch.testing.assert_close(bn.running_mean, ref.running_mean)
    bn.eval(), ref.eval()
    torch.testing.assert_close(bn(x).feats, ref(x.feats))
    assert set(bn.state_dict()) == {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}


def test_convert_sync_batchnorm_single_process():
    torch.manual_seed(0)
    model = Block()
    x = random_sparse(channels=3, dtype=torch.float32)
    ref = model(x).feats
    keys = set(model.state_dict())
    synced = convert_sync_batchnorm(model)
    assert isinstance(synced.bn1, SyncBatchNorm) and isinstance(synced.head_bn, SyncBatchNorm)
    assert set(synced.state_dict()) == keys  # flat keys: bn1.weight, bn1.running_mean, ...
    # torch's own converter keeps working on the converted model's plain tensors
    out = synced(x)
    assert isinstance(out, SparseTensor)
    torch.testing.assert_close(out.feats, ref)
    synced.eval()
    assert not synced.bn1.training
    synced(x)
    back = revert_sync_batchnorm(synced)
    assert type(back.bn1) is BatchNorm and set(back.state_dict()) == keys


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, feats, target, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        bn = SyncBatchNorm(3)
        with torch.no_grad():
            bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64).float())
        bn = bn.double()
        n = feats.shape[0]
        part = slice(0, n // 3) if rank == 0 else slice(n // 3, n)  # unequal shares
        coords = torch.zeros(part.stop - part.start, 4, dtype=torch.int32)
        coords[:, 1] = torch.arange(part.stop - part.start, dtype=torch.int32)
        f = feats[part].clone().requires_grad_(True)
        y = bn(SparseTensor(f, coords)).feats
        (y * target[part]).sum().backward()
        queue.put((rank,) + tuple(t.detach().numpy().copy() for t in
                                  (y, f.grad, bn.running_mean, bn.running_var, bn.weight.grad)))
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
def test_sync_batchnorm_two_gloo_ranks_equal_one_process():
    torch.manual_seed(0)
    feats = torch.randn(30, 3, dtype=torch.float64) * 3 + 1
    target = torch.randn(30, 3, dtype=torch.float64)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, feats, target, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = {r[0]: [torch.from_numpy(a) for a in r[1:]] for r in (queue.get(timeout=120) for _ in procs)}
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    ref = nn.BatchNorm1d(3).double()
    with torch.no_grad():
        ref.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
    f = feats.clone().requires_grad_(True)
    y = ref(f)
    (y * target).sum().backward()
    torch.testing.assert_close(torch.cat([results[0][0], results[1][0]]), y.detach())
    torch.testing.assert_close(torch.cat([results[0][1], results[1][1]]), f.grad)
    for r in range(2):
        torch.testing.assert_close(results[r][2], ref.running_mean)
        torch.testing.assert_close(results[r][3], ref.running_var)
        torch.testing.assert_close(results[0][4] + results[1][4], ref.weight.grad)
