"""A stand-in classifier and DataModule honouring docs/conventions.md, for the callback tests.

Dense MLP on clustered random vectors; batches are dicts with ``x``, ``label``, ``index``,
``points`` and ``point_offsets`` like the real VoxelDataModule's.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchmetrics.classification import MulticlassConfusionMatrix

NUM_CLASSES, IN_DIM, FEAT_DIM = 4, 8, 6


class Clusters(Dataset):
    def __init__(self, n: int, seed: int, spread: float = 0.6):
        g = torch.Generator().manual_seed(seed)
        centres = torch.randn(NUM_CLASSES, IN_DIM, generator=torch.Generator().manual_seed(123)) * 2
        self.y = torch.arange(n) % NUM_CLASSES
        self.x = centres[self.y] + spread * torch.randn(n, IN_DIM, generator=g)
        self.pts = [torch.randn(20 + i % 7, 3, generator=g) for i in range(n)]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "label": self.y[i], "index": i, "points": self.pts[i]}


def collate(items: list[dict]) -> dict:
    sizes = torch.tensor([0] + [len(it["points"]) for it in items])
    return {
        "x": torch.stack([it["x"] for it in items]),
        "label": torch.stack([it["label"] for it in items]),
        "index": torch.tensor([it["index"] for it in items]),
        "points": torch.cat([it["points"] for it in items]),
        "point_offsets": sizes.cumsum(0),
    }


class ToyData(pl.LightningDataModule):
    num_classes = NUM_CLASSES
    class_names = [f"c{i}" for i in range(NUM_CLASSES)]

    def __init__(self, n_train: int = 37, n_val: int = 23, batch_size: int = 8):
        super().__init__()
        self.train, self.val, self.bs = Clusters(n_train, 0), Clusters(n_val, 1), batch_size

    def train_dataloader(self):
        return DataLoader(self.train, self.bs, shuffle=True, collate_fn=collate,
                          generator=torch.Generator().manual_seed(0))

    def val_dataloader(self):
        sampler = None
        if dist.is_available() and dist.is_initialized():  # unpadded, like datamodules/base.py
            sampler = UnrepeatedDistributedSampler(self.val, shuffle=False)
        return DataLoader(self.val, self.bs, sampler=sampler, collate_fn=collate)

    def train_eval_dataloader(self):
        # deliberately not sharded: NeuralCollapse must shard it itself under DDP
        return DataLoader(self.train, self.bs, shuffle=False, collate_fn=collate)


class ToyClassifier(pl.LightningModule):
    def __init__(self, lr: float = 0.1, bn: bool = True, frozen_bn: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.num_classes, self.class_names = NUM_CLASSES, ToyData.class_names
        self.body = nn.Sequential(nn.Linear(IN_DIM, FEAT_DIM), nn.BatchNorm1d(FEAT_DIM) if bn else nn.Identity(),
                                  nn.ReLU())
        self.frozen = nn.BatchNorm1d(IN_DIM) if frozen_bn else nn.Identity()
        self.head = nn.Linear(FEAT_DIM, NUM_CLASSES)
        self.lr, self.frozen_modes, self.confusion = lr, [], {}
        self.val_confusion = MulticlassConfusionMatrix(num_classes=NUM_CLASSES)

    def extract(self, x):
        f = self.body(self.frozen(x))
        return f, self.head(f)

    def forward(self, x):
        return self.extract(x)[1]

    @property
    def head_weight(self):
        return self.head.weight

    def _step(self, batch, split):
        f, logits = self.extract(batch["x"])
        loss = nn.functional.cross_entropy(logits, batch["label"])
        preds = logits.argmax(1)
        bs = len(preds)
        self.log(f"{split}/loss", loss, batch_size=bs, sync_dist=True)
        self.log(f"{split}/acc", (preds == batch["label"]).float().mean(), batch_size=bs, sync_dist=True)
        return {"loss": loss, "features": f.detach(), "logits": logits.detach(), "preds": preds,
                "label": batch["label"], "index": batch["index"]}  # the step dict of docs/conventions.md

    def on_train_start(self):
        self.frozen.eval()  # like FIP-IO: a copied BN kept in eval mode for the whole fit

    def training_step(self, batch, batch_idx):
        self.frozen_modes.append(self.frozen.training)
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        step = self._step(batch, "val")
        self.val_confusion.update(step["preds"], step["label"])
        return step

    def on_validation_epoch_end(self):
        self.confusion["val"] = self.val_confusion.compute().cpu()  # synced over ranks, like PointClassifier
        self.val_confusion.reset()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)
