"""FIP regimes: trainable sets, BN modes through train(), one optimizer step, parameter counts."""
import pytest
import torch
from torch import nn

from i2p.sparse import SparseTensor, convert_sync_batchnorm
from models.backbones import SparseResNet, create_sparse_resnet
from models.finetune import REGIMES, apply_regime, regime_summary, trainable_parameters


def small(**kw):
    torch.manual_seed(0)
    return SparseResNet("bottleneck", (1, 1, 1, 1), num_classes=4, channels=(8, 8, 16, 16), **kw)


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    pts = torch.randint(0, 12, (160, 3), generator=g)
    b = torch.arange(2).repeat_interleave(80)[:, None]
    coords = torch.unique(torch.cat([b, pts], 1), dim=0).int()
    return SparseTensor(torch.randn(len(coords), 3, generator=g), coords), torch.tensor([1, 3])


def expected_trainable(model, regime):
    """Independent of models.finetune: by module names (stem `new` and head are the new layers)."""
    names = [n for n, _ in model.named_parameters()]
    new = {n for n in names if n.startswith(("conv1.", "bn1.", "head."))}
    copied_bn = {n for n in names if n.startswith("layer") and n.rsplit(".", 1)[0].split(".")[-1].startswith("bn")
                 or ".downsample.1." in n}
    return {"io": new, "ioms": new, "iobn": new | copied_bn, "all": set(names), "scratch": set(names)}[regime]


def bn_modules(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}


def frozen_expected(model, regime):
    return {n for n in bn_modules(model) if n.startswith("layer")} if regime == "io" else set()


@pytest.mark.parametrize("regime", REGIMES)
def test_requires_grad_and_bn_modes(regime):
    model = small()
    apply_regime(model, regime)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == expected_trainable(model, regime)
    assert {id(p) for p in trainable_parameters(model)} == {
        id(p) for p in model.parameters() if p.requires_grad}
    parent = nn.Sequential(nn.Identity(), model)  # as inside a LightningModule
    for _ in range(3):  # Lightning calls train() every epoch, eval() for validation
        parent.train()
        eval_bn = {n for n, m in bn_modules(model).items() if not m.training}
        assert eval_bn == frozen_expected(model, regime)
        parent.eval()
        assert not any(m.training for m in bn_modules(model).values())
    # swapping BN modules for synchronised ones keeps both the frozen modes and requires_grad
    converted = convert_sync_batchnorm(parent)
    converted.train()
    assert {n for n, m in bn_modules(model).items() if not m.training} == frozen_expected(model, regime)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == expected_trainable(model, regime)


@pytest.mark.parametrize("regime", REGIMES)
def test_one_step_changes_exactly_what_it_should(regime):
    model = small()
    apply_regime(model, regime)
    model.train()
    params0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers0 = {n: b.clone() for n, b in model.named_buffers()}
    opt = torch.optim.SGD(trainable_parameters(model), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x, y = batch()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, params0[n])}
    assert changed == expected_trainable(model, regime)
    moved = {n.rsplit(".", 1)[0] for n, b in model.named_buffers()
             if n.endswith("running_mean") and not torch.equal(b, buffers0[n])}
    assert moved == set(bn_modules(model)) - frozen_expected(model, regime)


def test_reference_counts_resnet18_and_resnet50():
    expected = {
        # ResNet-18, 3 input channels, 40 classes, stem new, paper head (docs/regimes.md, official code)
        "resnet18": {"io": 25_912, "ioms": 25_912, "iobn": 35_384, "all": 34_368_056, "scratch": 34_368_056},
        "resnet50": {"io": 87_352, "ioms": 87_352, "iobn": 140_344, "all": 65_602_616, "scratch": 65_602_616},
    }
    for name, counts in expected.items():
        with torch.device("meta"):
            model = create_sparse_resnet(name, in_channels=3, num_classes=40, stem="new", head="linear_bn")
            for regime, n in counts.items():
                summary = apply_regime(model, regime)
                assert (summary.trainable, summary.total) == (n, counts["all"]), (name, regime)
                assert f"{n:,} trainable" in str(summary)


def test_regime_switches_scratch_and_wrappers():
    model = small()
    wrapper = nn.ModuleDict({"backbone": model, "extra": nn.Linear(2, 2)})
    s = apply_regime(wrapper, "io")
    assert all(p.requires_grad for p in wrapper["extra"].parameters())  # outside the backbone = new
    assert s.frozen_bn and all(n.startswith("backbone.layer") for n in s.frozen_bn)
    assert "frozen" in regime_summary(wrapper)
    apply_regime(wrapper, "all")
    wrapper.train()
    assert all(m.training for m in bn_modules(model).values())
    model.pretrained_cfg["transfer"] = "pretend"
    kernel = model.layer1[0].conv2.kernel.detach().clone()
    with pytest.warns(UserWarning, match="re-initialising"):
        apply_regime(model, "scratch")
    assert not torch.equal(kernel, model.layer1[0].conv2.kernel)
    with pytest.raises(ValueError, match="regime must be one of"):
        apply_regime(model, "bn")
    with pytest.raises(ValueError, match="exactly one backbone"):
        apply_regime(nn.Linear(2, 2), "io")


def test_stem_inflate_is_copied():
    """With the inflated stem there is no new input layer: io trains only the head."""
    model = small(stem="inflate")
    apply_regime(model, "io")
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} == {"head"}
    model.train()
    assert not model.bn1.training


@pytest.mark.filterwarnings("ignore:Found .* module.* in eval mode")  # intended: the frozen BN layers
@pytest.mark.filterwarnings("ignore:.*does not have many workers")
def test_frozen_bn_through_lightning_fit(tmp_path):
    """Lightning calls model.train() at every epoch start: frozen BN layers must still be in eval
    mode in every training step, and their running statistics must not move.
    """
    import pytorch_lightning as pl

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.backbone = small()
            apply_regime(self.backbone, "io")
            self.seen = []

        def training_step(self, data, _):
            x, y = batch(int(data[0]))
            self.seen.append({n for n, m in bn_modules(self.backbone).items() if not m.training})
            return nn.functional.cross_entropy(self.backbone(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(trainable_parameters(self), lr=0.1)

    module = Module()
    frozen = frozen_expected(module.backbone, "io")
    stats0 = {n: m.running_mean.clone() for n, m in bn_modules(module.backbone).items()}
    loader = torch.utils.data.DataLoader(torch.arange(2.0), batch_size=1)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         num_sanity_val_steps=0)
    trainer.fit(module, loader)
    assert len(module.seen) == 4 and all(s == frozen for s in module.seen)
    moved = {n for n, m in bn_modules(module.backbone).items() if not torch.equal(m.running_mean, stats0[n])}
    assert moved == set(bn_modules(module.backbone)) - frozen
