"""The Lightning plugin behind `sync_batchnorm: true` swaps in the engine's SyncBatchNorm."""
import pytorch_lightning as pl
import torch

from i2p.sparse import BatchNorm, SyncBatchNorm
from models import SparseSyncBatchNorm
from models.backbones import create_sparse_resnet


def test_trainer_accepts_plugin_with_sync_batchnorm_and_converts_every_bn():
    trainer = pl.Trainer(accelerator="cpu", devices=1, sync_batchnorm=True, plugins=[SparseSyncBatchNorm()],
                         logger=False, enable_checkpointing=False)
    assert isinstance(trainer._accelerator_connector._layer_sync, SparseSyncBatchNorm)
    model = create_sparse_resnet("resnet18", num_classes=4)
    bns = {n for n, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    weight = model.layer1[0].bn1.weight
    synced = SparseSyncBatchNorm().apply(model)
    converted = {n for n, m in synced.named_modules() if isinstance(m, SyncBatchNorm)}
    assert converted == bns  # backbone BNs and the head's BatchNorm1d alike
    assert synced.layer1[0].bn1.weight is weight  # parameters shared, not copied
    reverted = SparseSyncBatchNorm().revert(synced)
    assert not any(isinstance(m, SyncBatchNorm) for m in reverted.modules())
    assert isinstance(reverted.layer1[0].bn1, BatchNorm)
