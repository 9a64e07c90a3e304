"""PointClassifier: the conventions.md contract, optimizer/schedule builders, and FIP-IO learning."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch

from models import PointClassifier
from models.finetune import frozen_bn_names
from models.optim import build_optimizer, build_scheduler, lr_factor
from tests.helpers.classifier import CLASSES, tiny_data, tiny_pretrained_2d


def test_lr_factor_cosine_poly_warmup():
    assert lr_factor(0, "cosine", 10) == 1.0
    assert math.isclose(lr_factor(5, "cosine", 10), 0.5)
    assert lr_factor(10, "cosine", 10) == pytest.approx(0.0, abs=1e-12)
    assert [lr_factor(e, "cosine", 10, warmup_epochs=3) for e in range(3)] == [0.25, 0.5, 0.75]
    assert lr_factor(3, "cosine", 10, warmup_epochs=3) == 1.0
    assert lr_factor(5, "poly", 10, power=1.0) == pytest.approx(0.5)
    assert lr_factor(7, "none", 10) == 1.0
    with pytest.raises(ValueError, match="scheduler"):
        lr_factor(0, "step", 10)


def test_builders():
    p = [torch.nn.Parameter(torch.zeros(2))]
    sgd = build_optimizer(p, "sgd", lr=0.1, nesterov=True)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.defaults["weight_decay"] == 1e-4
    assert isinstance(build_optimizer(p, "adamw", lr=1e-3), torch.optim.AdamW)
    assert build_scheduler(sgd, "none") is None
    sched = build_scheduler(sgd, "cosine", max_epochs=4)
    lrs = []
    for _ in range(4):
        lrs.append(sgd.param_groups[0]["lr"])
        sgd.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs == sorted(lrs, reverse=True)
    with pytest.raises(ValueError, match="trainable"):
        build_optimizer([], "sgd")
    with pytest.raises(ValueError, match="optimizer"):
        build_optimizer(p, "lamb")


def _batch(dm):
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


def test_contract_extract_head_weight_step_outputs():
    dm = tiny_data()
    model = PointClassifier(num_classes=dm.num_classes, regime="all", class_names=dm.class_names)
    batch = _batch(dm)
    bsz = len(batch["label"])
    features, logits = model.extract(batch["x"])
    assert features.shape == (bsz, model.backbone.num_features) and logits.shape == (bsz, 4)
    assert model.head_weight.shape == (4, model.backbone.num_features)
    assert model.hparams.regime == "all" and model.class_names == CLASSES
    out = model.training_step(batch, 0)
    assert set(out) == {"loss", "features", "logits", "preds", "label", "index"} and out["loss"].requires_grad
    assert not out["features"].requires_grad and torch.equal(out["index"], batch["index"])
    val = model.validation_step(batch, 0)
    assert set(val) == set(out) and not val["loss"].requires_grad and torch.equal(val["label"], batch["label"])
    model.eval()
    torch.testing.assert_close(model(batch["x"]), model.extract(batch["x"])[1])


def test_head_weight_is_the_effective_eval_classifier():
    """With Linear -> BatchNorm1d on the logits, logits = features @ head_weight.T + a per-class bias."""
    model = PointClassifier(num_classes=4, regime="all").eval()
    norm = model.backbone.head.norm
    with torch.no_grad():
        norm.running_var.uniform_(0.5, 4.0)
        norm.weight.uniform_(0.5, 2.0)
    features = torch.randn(6, model.backbone.num_features)
    with torch.no_grad():
        logits = model.backbone.head(features)
        diff = logits - features @ model.head_weight.T
    torch.testing.assert_close(diff, diff[:1].expand_as(diff), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(model.head_weight, model.backbone.get_classifier().weight)


def test_optimizer_gets_only_trainable_parameters():
    model = PointClassifier(num_classes=4, regime="io")
    opt = model.configure_optimizers()["optimizer"]
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert in_opt == trainable
    assert 0 < len(trainable) < len(list(model.parameters()))


def test_bad_arguments():
    with pytest.raises(ValueError, match="regime"):
        PointClassifier(num_classes=4, regime="fip")
    with pytest.raises(ValueError, match="class names"):
        PointClassifier(num_classes=4, class_names=["a", "b"])


def _fresh(name: str) -> bool:
    return name.startswith(("conv1.", "bn1.", "head."))


@pytest.mark.slow
def test_fip_io_with_pretrained_2d_learns_and_only_stem_and_head_change(tmp_path):
    pl.seed_everything(0)
    dm = tiny_data()
    model = PointClassifier(num_classes=dm.num_classes, class_names=dm.class_names, regime="io",
                            pretrained=str(tiny_pretrained_2d()), lr=0.05)
    assert "transfer" in model.backbone.pretrained_cfg  # the 2D weights really went in
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    trainer = pl.Trainer(accelerator="cpu", max_epochs=6, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         log_every_n_steps=1, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm)

    after = model.backbone.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k]) and not k.endswith("num_batches_tracked")}
    assert changed, "nothing trained"
    assert all(_fresh(k) for k in changed), f"copied tensors changed: {sorted(k for k in changed if not _fresh(k))[:5]}"
    assert {"conv1.kernel", "head.fc.weight"} <= changed
    frozen = frozen_bn_names(model)
    assert frozen and all(not m.training for n, m in model.named_modules() if n in frozen)

    metrics = trainer.callback_metrics
    chance = 1 / dm.num_classes
    assert float(metrics["val/acc"]) >= chance + 0.25, f"val/acc {float(metrics['val/acc']):.3f}"
    for key in ("train/loss", "train/acc", "val/loss", "val/macc", "lr", *(f"val_per_class/acc_{c}" for c in CLASSES)):
        assert key in metrics, key


@pytest.mark.parametrize("module", ["classifier", "segmenter"])
def test_backend_argument_reaches_every_conv(module):
    from i2p.sparse import Conv3d, backend_available
    from models import PointSegmenter

    def build(backend):
        if module == "classifier":
            return PointClassifier(num_classes=3, backend=backend)
        return PointSegmenter(num_classes=3, in_channels=3, preset="light", backend=backend)

    convs = [m for m in build("i2p").modules() if isinstance(m, Conv3d)]
    assert convs and {m.backend for m in convs} == {"i2p"}
    assert {m.backend for m in build(None).modules() if isinstance(m, Conv3d)} == {None}  # the engine default
    if not backend_available("spconv"):  # the choice is checked when the model is built, with the install hint
        with pytest.raises(ImportError, match="spconv"):
            build("spconv")
    with pytest.raises(ValueError, match="backend must be one of"):
        build("cuda")
