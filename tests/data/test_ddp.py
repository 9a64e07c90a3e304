"""Under real Lightning DDP (2 gloo processes) the eval loaders keep our unpadded sampler:
every validation/test/train-eval sample is seen exactly once across ranks, none repeated.
One ``validate`` call (each spawn costs ~20 s here): Lightning drives the val loader; the test
and train-eval loaders are iterated in the spawned ranks afterwards."""

import json
import sys

import pytest
import pytorch_lightning as pl
import torch

from datamodules import SyntheticShapes


class IndexRecorder(pl.LightningModule):
    """Records the dataset indices each rank evaluates."""

    def __init__(self, out_dir):
        super().__init__()
        self.out_dir, self.seen = out_dir, []
        self.layer = torch.nn.Linear(3, 2)

    def validation_step(self, batch, batch_idx):
        self.seen += batch["index"].tolist()

    def on_validation_end(self):
        dm = self.trainer.datamodule
        seen = {
            "val": self.seen,
            "test": [i for b in dm.test_dataloader() for i in b["index"].tolist()],
            "train_eval": [i for b in dm.train_eval_dataloader() for i in b["index"].tolist()],
        }
        with open(f"{self.out_dir}/rank{self.global_rank}.json", "w") as f:
            json.dump(seen, f)


@pytest.mark.ddp
@pytest.mark.skipif(sys.platform == "win32", reason="gloo spawn")
def test_ddp_eval_counts_each_sample_once(tmp_path):
    # 13 validation and 11 test shapes over 2 ranks, batch 4: a padding sampler would repeat one
    dm = SyntheticShapes(num_train=9, num_val=13, num_test=11, points_per_shape=64, num_points=64, batch_size=4)
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False,
    )
    model = IndexRecorder(str(tmp_path))
    trainer.validate(model, datamodule=dm)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for stage, n in (("val", 13), ("test", 11), ("train_eval", 9)):
        seen = [ranks[0][stage], ranks[1][stage]]
        assert all(seen), f"{stage}: a rank saw nothing"
        assert sorted(seen[0] + seen[1]) == list(range(n)), f"{stage}: {seen}"
