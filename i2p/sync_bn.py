"""Lightning plugin that makes ``Trainer(sync_batchnorm=True)`` work with sparse BatchNorm.

Lightning's default converts every ``_BatchNorm`` into ``torch.nn.SyncBatchNorm``, whose forward
cannot take a ``SparseTensor``; this plugin uses ``i2p.sparse.convert_sync_batchnorm`` instead
(parameters and buffers shared, so regimes and frozen BN layers survive the swap).
"""

from __future__ import annotations

from pytorch_lightning.plugins.layer_sync import LayerSync
from torch.nn import Module

from i2p.sparse import convert_sync_batchnorm, revert_sync_batchnorm


class SparseSyncBatchNorm(LayerSync):
    """``LayerSync`` plugin: sparse-aware synchronised BatchNorm across DDP ranks."""

    def apply(self, model: Module) -> Module:
        return convert_sync_batchnorm(model)

    def revert(self, model: Module) -> Module:
        return revert_sync_batchnorm(model)
