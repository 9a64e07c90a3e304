"""Lightning's `sync_batchnorm=True` for models built on `i2p.sparse`.

Lightning's stock plugin swaps every BatchNorm for `torch.nn.SyncBatchNorm`, which accepts
neither a SparseTensor nor CPU tensors under DDP. This plugin is a `TorchSyncBatchNorm` (so
Lightning accepts it together with `sync_batchnorm=True`) that swaps in the engine's own
`SyncBatchNorm` instead, sharing parameters and buffers; the `i2p` CLI installs it whenever
`trainer.sync_batchnorm` is true.
"""
from __future__ import annotations

from pytorch_lightning.plugins.layer_sync import TorchSyncBatchNorm
from torch import nn

from i2p.sparse import convert_sync_batchnorm, revert_sync_batchnorm

__all__ = ["SparseSyncBatchNorm"]


class SparseSyncBatchNorm(TorchSyncBatchNorm):
    """Layer-sync plugin: every BatchNorm becomes `i2p.sparse.SyncBatchNorm` (any backend)."""

    def apply(self, model: nn.Module) -> nn.Module:
        return convert_sync_batchnorm(model)

    def revert(self, model: nn.Module) -> nn.Module:
        return revert_sync_batchnorm(model)
