#!/usr/bin/env python3
"""Writes the PyTorch parity fixtures of crates/repvgg-testing/fixtures and the odd image
files of crates/repvgg-data/tests/images.

Small RepVGG networks in the reference implementation's naming (training-time and deploy-time
state dicts, plain and wrapped the way training scripts save them) and one timm network, each
with random weights and random batch-norm statistics, an input batch and PyTorch's logits for
both forms. The reference side is written here from the architecture's definition
(../shared/REPVGG.md); the timm side uses timm itself.

`plus` is a narrow RepVGGplus (../shared/REPVGG-PLUS.md, written from its facts the same way):
SE after each block's ReLU, stage 3 split into stage3_first and stage3_second, the reference's
`{stage}.blocks.{i}` keys and its three auxiliary heads. It has a training form (aux heads included,
plain and in main.py's {'model': ...} wrapper with `module.` prefixes) and deploy form (fused
blocks, no aux heads), and the main and aux logits of the training form in eval mode.

    python3 -m venv .venv && .venv/bin/pip install torch timm safetensors onnxruntime
    cargo build --workspace && .venv/bin/python scripts/make_fixtures.py

It ends with scripts/check_onnx.py: ONNX Runtime on the exported fixture networks.
`qa` is a narrow QARepVGG ("Make RepVGG Greater Again: A Quantization-aware Approach", Chu et
al., AAAI 2024), written here from the paper's block: a 3x3 conv + BN branch, a 1x1 conv branch
without BN (nor bias), the identity without BN, and a BN after their sum, keyed as YOLOv6's
QARepVGGBlock keys it (`rbr_1x1.weight`, `bn.*`). Its deploy form folds the sum's BN into the one
3x3 convolution. `--qa-only` writes only it (its own random generator).

`--eval-transform-only` writes only the evaluation transform's fixtures (timm's crops);
`--plus-only` writes only the RepVGGplus fixture (its own random generator: the same files as a
full run). `--first-step-only` writes only the fine-tuning first-step fixtures, from the
committed narrow and timm ones.

Deterministic: the same torch version writes the same files.
"""

import json
import pathlib

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "crates/repvgg-testing/fixtures"
IMAGES = ROOT / "crates/repvgg-data/tests/images"
BASE_WIDTHS = (64, 128, 256, 512)
EPS = 1e-5


class ConvBn(nn.Sequential):
    def __init__(self, cin, cout, kernel, stride, groups):
        super().__init__()
        self.add_module("conv", nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout, eps=EPS))


class SqueezeExcite(nn.Module):
    def __init__(self, channels, hidden):
        super().__init__()
        self.down = nn.Conv2d(channels, hidden, 1)
        self.up = nn.Conv2d(hidden, channels, 1)

    def forward(self, x):
        w = torch.sigmoid(self.up(F.relu(self.down(x.mean(dim=(2, 3), keepdim=True)))))
        return x * w


class Block(nn.Module):
    """Training-time block (deploy=False) or its fused form (deploy=True)."""

    def __init__(self, cin, cout, stride, groups, se_hidden, deploy):
        super().__init__()
        if deploy:
            self.rbr_reparam = nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=True)
        else:
            if cin == cout and stride == 1:
                self.rbr_identity = nn.BatchNorm2d(cout, eps=EPS)
            self.rbr_dense = ConvBn(cin, cout, 3, stride, groups)
            self.rbr_1x1 = ConvBn(cin, cout, 1, stride, groups)
        if se_hidden:
            self.se = SqueezeExcite(cout, se_hidden)

    def forward(self, x):
        if hasattr(self, "rbr_reparam"):
            y = self.rbr_reparam(x)
        else:
            y = self.rbr_dense(x) + self.rbr_1x1(x)
            if hasattr(self, "rbr_identity"):
                y = y + self.rbr_identity(x)
        if hasattr(self, "se"):
            y = self.se(y)
        return F.relu(y)


class QaBlock(nn.Module):
    """QARepVGG's training-time block: ReLU(SE(BN(BN(conv3x3(x)) + conv1x1(x) + x))); the sum's
    BN comes before the SE so that it folds into the fused convolution."""

    def __init__(self, cin, cout, stride, groups, se_hidden):
        super().__init__()
        self.rbr_dense = ConvBn(cin, cout, 3, stride, groups)
        self.rbr_1x1 = nn.Conv2d(cin, cout, 1, stride, 0, groups=groups, bias=False)
        self.identity = cin == cout and stride == 1
        self.bn = nn.BatchNorm2d(cout, eps=EPS)
        if se_hidden:
            self.se = SqueezeExcite(cout, se_hidden)

    def forward(self, x):
        y = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.identity:
            y = y + x
        y = self.bn(y)
        if hasattr(self, "se"):
            y = self.se(y)
        return F.relu(y)


def block_specs(cfg):
    """(name, cin, cout, stride, groups) of every block, stem first."""
    widths = [int(b * m) for b, m in zip(BASE_WIDTHS, cfg["width_multipliers"])]
    stem = min(64, int(64 * cfg["width_multipliers"][0]))
    groups = {int(k): v for k, v in cfg["grouped_layers"].items()}
    specs = [("stage0", 3, stem, 2, groups.get(0, 1))]
    cin = stem
    for s, (n, w) in enumerate(zip(cfg["num_blocks"], widths), start=1):
        for i in range(n):
            specs.append((f"stage{s}.{i}", cin, w, 2 if i == 0 else 1, groups.get(len(specs), 1)))
            cin = w
    return specs


class RepVgg(nn.Module):
    def __init__(self, cfg, deploy):
        super().__init__()
        specs = block_specs(cfg)
        reduction = cfg["se_reduction"]
        qa = cfg.get("block") == "qa_rep_vgg"
        for name, cin, cout, stride, groups in specs:
            se_hidden = cout // reduction if cfg["use_se"] else 0
            if qa and not deploy:
                block = QaBlock(cin, cout, stride, groups, se_hidden)
            else:
                block = Block(cin, cout, stride, groups, se_hidden, deploy)
            if name == "stage0":
                self.stage0 = block
            else:
                stage, index = name.split(".")
                if not hasattr(self, stage):
                    self.add_module(stage, nn.Sequential())
                getattr(self, stage).add_module(index, block)
        self.linear = nn.Linear(specs[-1][2], cfg["num_classes"])

    def forward(self, x):
        for child in self.children():
            if child is self.linear:
                x = self.linear(x.mean(dim=(2, 3)))
            else:
                x = child(x)
        return x


def randomize(model, generator):
    """Random weights and non-trivial BN statistics, so that every branch matters."""
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                tensor.fill_(7)
            elif name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * 1.5 + 0.5)
            elif name.endswith("running_mean") or (name.endswith("bias") and tensor.dim() == 1):
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.2)
            elif tensor.dim() == 1:  # BN weight
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            else:
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * (2.0 / fan_in) ** 0.5)


def fused_block(train_state, name, cin, cout, groups):
    """One block's (kernel, bias), fused from the facts: conv+BN, 1x1 padded, identity kernel."""

    def conv_bn(kernel, prefix):
        std = (train_state[prefix + ".running_var"] + EPS).sqrt()
        t = train_state[prefix + ".weight"] / std
        return kernel * t.reshape(-1, 1, 1, 1), train_state[prefix + ".bias"] - train_state[prefix + ".running_mean"] * t

    k3, b3 = conv_bn(train_state[f"{name}.rbr_dense.conv.weight"], f"{name}.rbr_dense.bn")
    k1, b1 = conv_bn(train_state[f"{name}.rbr_1x1.conv.weight"], f"{name}.rbr_1x1.bn")
    kernel, bias = k3 + F.pad(k1, [1, 1, 1, 1]), b3 + b1
    if f"{name}.rbr_identity.weight" in train_state:
        per_group = cin // groups
        identity = torch.zeros(cout, per_group, 3, 3)
        for i in range(cout):
            identity[i, i % per_group, 1, 1] = 1.0
        ki, bi = conv_bn(identity, f"{name}.rbr_identity")
        kernel, bias = kernel + ki, bias + bi
    return kernel, bias


def qa_fused_block(train_state, name, cin, cout, stride, groups):
    """One QARepVGG block's (kernel, bias): the 3x3 conv+BN fused, the 1x1 kernel padded and the
    identity kernel added as they are, then the sum's BN folded into all of it."""
    std = (train_state[f"{name}.rbr_dense.bn.running_var"] + EPS).sqrt()
    t = train_state[f"{name}.rbr_dense.bn.weight"] / std
    kernel = train_state[f"{name}.rbr_dense.conv.weight"] * t.reshape(-1, 1, 1, 1)
    bias = train_state[f"{name}.rbr_dense.bn.bias"] - train_state[f"{name}.rbr_dense.bn.running_mean"] * t
    kernel = kernel + F.pad(train_state[f"{name}.rbr_1x1.weight"], [1, 1, 1, 1])
    if cin == cout and stride == 1:
        per_group = cin // groups
        for i in range(cout):
            kernel[i, i % per_group, 1, 1] += 1.0
    std = (train_state[f"{name}.bn.running_var"] + EPS).sqrt()
    t = train_state[f"{name}.bn.weight"] / std
    return kernel * t.reshape(-1, 1, 1, 1), (bias - train_state[f"{name}.bn.running_mean"]) * t + train_state[f"{name}.bn.bias"]


def fuse(train_state, cfg):
    """The deploy state dict: every block fused, the SE and the head unchanged."""
    state = {}
    for name, cin, cout, stride, groups in block_specs(cfg):
        if cfg.get("block") == "qa_rep_vgg":
            kernel, bias = qa_fused_block(train_state, name, cin, cout, stride, groups)
        else:
            kernel, bias = fused_block(train_state, name, cin, cout, groups)
        state[f"{name}.rbr_reparam.weight"] = kernel
        state[f"{name}.rbr_reparam.bias"] = bias
    for key, value in train_state.items():
        if key.startswith("linear.") or ".se." in key:
            state[key] = value
    return state


def config(num_blocks, multipliers, grouped=None, se_reduction=None, num_classes=10):
    """A config in repvgg-model's JSON form (every field, as RepVggConfig::save writes it)."""
    return {
        "num_blocks": num_blocks,
        "width_multipliers": multipliers,
        "grouped_layers": {str(k): v for k, v in (grouped or {}).items()},
        "use_se": se_reduction is not None,
        "se_reduction": se_reduction or 16,
        "num_classes": num_classes,
        "bn_epsilon": EPS,
        "bn_momentum": 0.1,
    }


REFERENCE = {
    "narrow": (config([2, 2, 2], [0.25, 0.25, 0.25]), (40, 56)),
    "grouped": (config([2, 3, 2], [0.25, 0.25, 0.25], grouped={2: 2, 4: 4, 5: 4}), (32, 32)),
    "se": (config([1, 2, 2, 1], [0.25, 0.25, 0.25, 0.125], se_reduction=4, num_classes=7), (48, 40)),
}


def save_json(path, value):
    path.write_text(json.dumps(value, indent=2) + "\n")


def reference_fixtures(generator):
    for name, (cfg, (h, w)) in REFERENCE.items():
        train = RepVgg(cfg, deploy=False).eval()
        randomize(train, generator)
        deploy = RepVgg(cfg, deploy=True).eval()
        deploy.load_state_dict(fuse(train.state_dict(), cfg), strict=True)
        x = torch.randn(2, 3, h, w, generator=generator)
        with torch.no_grad():
            logits_train, logits_deploy = train(x), deploy(x)
        state = train.state_dict()
        torch.save(state, OUT / f"{name}_train.pth")
        if name == "narrow":  # as a training script saves it: wrapped, DataParallel prefixes
            wrapped = {
                "state_dict": {"module." + k: v for k, v in state.items()},
                "optimizer": {"state": {0: {"momentum_buffer": torch.zeros(3)}}},
                "epoch": 3,
            }
            torch.save(wrapped, OUT / f"{name}_train_wrapped.pth")
        torch.save(deploy.state_dict(), OUT / f"{name}_deploy.pth")
        save_file({"input": x, "logits_train": logits_train, "logits_deploy": logits_deploy},
                  OUT / f"{name}_io.safetensors")
        save_json(OUT / f"{name}.json", cfg)
        print(f"{name}: max |logit| {logits_train.abs().max().item():.3g}, "
              f"max |train - deploy| in PyTorch {(logits_train - logits_deploy).abs().max().item():.3g}")


def qa_fixture():
    """The narrow QARepVGG: grouped layers and SE included, so that every path of the fusion
    shows; its own generator, so that `--qa-only` writes the same files as a full run."""
    generator = torch.Generator().manual_seed(20221205)
    cfg = config([2, 3, 2], [0.25, 0.25, 0.25], grouped={2: 2, 4: 4}, se_reduction=4, num_classes=7)
    cfg["block"] = "qa_rep_vgg"
    train = RepVgg(cfg, deploy=False).eval()
    randomize(train, generator)
    deploy = RepVgg(cfg, deploy=True).eval()
    deploy.load_state_dict(fuse(train.state_dict(), cfg), strict=True)
    x = torch.randn(2, 3, 40, 48, generator=generator)
    with torch.no_grad():
        logits_train, logits_deploy = train(x), deploy(x)
    torch.save(train.state_dict(), OUT / "qa_train.pth")
    torch.save(deploy.state_dict(), OUT / "qa_deploy.pth")
    save_file({"input": x, "logits_train": logits_train, "logits_deploy": logits_deploy},
              OUT / "qa_io.safetensors")
    save_json(OUT / "qa.json", cfg)
    print(f"qa: max |logit| {logits_train.abs().max().item():.3g}, "
          f"max |train - deploy| in PyTorch {(logits_train - logits_deploy).abs().max().item():.3g}")


def timm_config():
    """timm's config of the timm fixture: narrow, grouped, SE."""
    from timm.models.byobnet import ByoModelCfg, _rep_vgg_bcfg

    return ByoModelCfg(
        blocks=_rep_vgg_bcfg(d=(2, 2, 2), wf=(0.25, 0.25, 0.25), groups=2),
        stem_type="rep",
        stem_chs=16,
        attn_layer="se",
        attn_kwargs=dict(rd_ratio=0.25, rd_divisor=1),
    )


def timm_fixture(generator):
    """A narrow grouped SE network built by timm's own RepVGG code, saved in timm's naming."""
    from timm.models.byobnet import ByobNet
    from timm.utils.model import reparameterize_model

    model = ByobNet(timm_config(), num_classes=10).eval()
    randomize(model, generator)
    x = torch.randn(2, 3, 32, 48, generator=generator)
    with torch.no_grad():
        logits_train = model(x)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, OUT / "timm_train.safetensors")
    deploy = reparameterize_model(model)
    with torch.no_grad():
        logits_deploy = deploy(x)
    save_file({k: v.contiguous() for k, v in deploy.state_dict().items()}, OUT / "timm_deploy.safetensors")
    save_file({"input": x, "logits_train": logits_train, "logits_deploy": logits_deploy},
              OUT / "timm_io.safetensors")
    save_json(OUT / "timm.json", config([2, 2, 2], [0.25, 0.25, 0.25], grouped={2: 2, 4: 2, 6: 2}, se_reduction=4))
    print(f"timm: max |logit| {logits_train.abs().max().item():.3g}, "
          f"max |train - deploy| in PyTorch {(logits_train - logits_deploy).abs().max().item():.3g}")


def first_step_fixtures():
    """What a fine-tuning run's first training step computes from narrow_train.pth (the
    reference's naming) and timm_train.safetensors: the logits in training mode (batch-norm
    statistics of the batch) and the stem's dense-branch running mean after that forward
    (momentum 0.1), on the inputs of the io fixtures. Reads the committed fixtures."""
    from safetensors.torch import load_file
    from timm.models.byobnet import ByobNet

    def first_step(model, x, running_mean):
        model.train()
        with torch.no_grad():
            logits = model(x)
        return {"input": x, "logits": logits,
                "stage0.rbr_dense.bn.running_mean": model.state_dict()[running_mean].clone()}

    cfg = json.loads((OUT / "narrow.json").read_text())
    reference = RepVgg(cfg, deploy=False)
    reference.load_state_dict(torch.load(OUT / "narrow_train.pth"), strict=True)
    x = load_file(OUT / "narrow_io.safetensors")["input"]
    save_file(first_step(reference, x, "stage0.rbr_dense.bn.running_mean"),
              OUT / "narrow_first_step.safetensors")

    timm = ByobNet(timm_config(), num_classes=10)
    timm.load_state_dict(load_file(OUT / "timm_train.safetensors"), strict=True)
    x = load_file(OUT / "timm_io.safetensors")["input"]
    save_file(first_step(timm, x, "stem.conv_kxk.bn.running_mean"),
              OUT / "timm_first_step.safetensors")
    print("first step: narrow_first_step.safetensors, timm_first_step.safetensors")


# RepVGGplus: the stage modules in the reference's order; the aux heads follow these stages.
PLUS_STAGES = ("stage1", "stage2", "stage3_first", "stage3_second", "stage4")
PLUS_AUX = ("stage1", "stage2", "stage3_first")


def plus_stage_specs(cfg):
    """(stage, number of blocks, width, stride of the first block) of each RepVGGplus stage.
    Stage 3 is split in two halves of the same width: n//2 blocks that downsample, then
    n - n//2 at stride 1, whose first block therefore has an identity branch."""
    widths = [int(b * m) for b, m in zip(BASE_WIDTHS, cfg["width_multipliers"])]
    n = cfg["num_blocks"]
    return [
        ("stage1", n[0], widths[0], 2),
        ("stage2", n[1], widths[1], 2),
        ("stage3_first", n[2] // 2, widths[2], 2),
        ("stage3_second", n[2] - n[2] // 2, widths[2], 1),
        ("stage4", n[3], widths[3], 2),
    ]


def plus_block_specs(cfg):
    """(key prefix, cin, cout, stride) of every RepVGGplus block, stem first. Groups are always 1."""
    stem = min(64, int(64 * cfg["width_multipliers"][0]))
    specs = [("stage0", 3, stem, 2)]
    cin = stem
    for stage, count, width, stride in plus_stage_specs(cfg):
        for i in range(count):
            specs.append((f"{stage}.blocks.{i}", cin, width, stride if i == 0 else 1))
            cin = width
    return specs


class PlusBlock(nn.Module):
    """RepVGGplus block: SE( ReLU( branches ) ), the SE after the ReLU so it survives fusion.
    post_se is registered first, as in the reference, so the state dicts list it first."""

    def __init__(self, cin, cout, stride, se_hidden, deploy):
        super().__init__()
        self.post_se = SqueezeExcite(cout, se_hidden)  # a true global mean, also for H != W
        if deploy:
            self.rbr_reparam = nn.Conv2d(cin, cout, 3, stride, 1, bias=True)
        else:
            if cin == cout and stride == 1:
                self.rbr_identity = nn.BatchNorm2d(cout, eps=EPS)
            self.rbr_dense = ConvBn(cin, cout, 3, stride, 1)
            self.rbr_1x1 = ConvBn(cin, cout, 1, stride, 1)

    def forward(self, x):
        if hasattr(self, "rbr_reparam"):
            y = self.rbr_reparam(x)
        else:
            y = self.rbr_dense(x) + self.rbr_1x1(x)
            if hasattr(self, "rbr_identity"):
                y = y + self.rbr_identity(x)
        return self.post_se(F.relu(y))


def aux_head(channels, num_classes):
    """conv3x3/2 -> BN -> ReLU -> global mean -> flatten -> Linear. The ReLU sits inside index 0
    (the reference's conv_bn_relu) and has no parameters, so the keys are .0.conv, .0.bn, .3."""
    conv_bn_relu = ConvBn(channels, channels, 3, 2, 1)
    conv_bn_relu.add_module("relu", nn.ReLU())
    return nn.Sequential(conv_bn_relu, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


class RepVggPlus(nn.Module):
    """forward gives (main logits, {aux name: aux logits}); the deploy form has no aux heads."""

    def __init__(self, cfg, deploy):
        super().__init__()
        reduction = cfg["se_reduction"]
        for name, cin, cout, stride in plus_block_specs(cfg):
            block = PlusBlock(cin, cout, stride, cout // reduction, deploy)
            if name == "stage0":
                self.stage0 = block
            else:
                stage = name.split(".")[0]
                if not hasattr(self, stage):
                    self.add_module(stage, nn.Module())
                    getattr(self, stage).blocks = nn.ModuleList()
                getattr(self, stage).blocks.append(block)
        self.linear = nn.Linear(plus_block_specs(cfg)[-1][2], cfg["num_classes"])
        if not deploy:
            for stage, _, width, _ in plus_stage_specs(cfg):
                if stage in PLUS_AUX:
                    self.add_module(f"{stage}_aux", aux_head(width, cfg["num_classes"]))

    def forward(self, x):
        x = self.stage0(x)
        aux = {}
        for stage in PLUS_STAGES:
            for block in getattr(self, stage).blocks:
                x = block(x)
            if hasattr(self, f"{stage}_aux"):
                aux[f"{stage}_aux"] = getattr(self, f"{stage}_aux")(x)
        return self.linear(x.mean(dim=(2, 3))), aux


def plus_fuse(train_state, cfg):
    """The deploy state dict: each block fused as in `fuse`, its post_se and the head kept
    unchanged, the aux heads dropped (the reference deletes them on switching to deploy)."""
    state = {}
    for name, cin, cout, _ in plus_block_specs(cfg):
        for key, value in train_state.items():
            if key.startswith(f"{name}.post_se."):
                state[key] = value
        state[f"{name}.rbr_reparam.weight"], state[f"{name}.rbr_reparam.bias"] = fused_block(
            train_state, name, cin, cout, 1)
    state["linear.weight"], state["linear.bias"] = train_state["linear.weight"], train_state["linear.bias"]
    return state


def plus_config():
    """The RepVGG config fields (use_se false: the SE is the post-SE of post_se) and the
    RepVGGplus layout (RepVggConfig's `plus`), appended so the common fields keep their order."""
    cfg = config([1, 1, 4, 1], [0.125, 0.09375, 0.09375, 0.0625], num_classes=7)
    cfg["se_reduction"] = 4
    cfg["plus"] = {"post_se": True, "aux_heads": True}
    return cfg


def parameter_count(model):
    return sum(p.numel() for p in model.parameters())


def plus_fixture():
    """The narrow RepVGGplus: stage 3 has 4 blocks so that stage3_second holds an identity
    block that is not its first; a non-square input because the reference's SE pooling is
    wrong there and ours is a true global mean."""
    cfg = plus_config()
    # Its own generator: `--plus-only` then writes the same files as a full run.
    generator = torch.Generator().manual_seed(20220122)
    train = RepVggPlus(cfg, deploy=False).eval()
    randomize(train, generator)
    deploy = RepVggPlus(cfg, deploy=True).eval()
    deploy.load_state_dict(plus_fuse(train.state_dict(), cfg), strict=True)
    x = torch.randn(2, 3, 64, 48, generator=generator)
    with torch.no_grad():
        (logits_train, aux), (logits_deploy, _) = train(x), deploy(x)
    difference = (logits_train - logits_deploy).abs().max().item()
    assert difference < 1e-4, f"plus: deploy and train logits differ by {difference}"
    state = train.state_dict()
    torch.save(state, OUT / "plus_train.pth")
    # As main.py saves it: under 'model', with DistributedDataParallel's `module.` prefixes.
    wrapped = {
        "model": {"module." + k: v for k, v in state.items()},
        "optimizer": {"state": {0: {"momentum_buffer": torch.zeros(3)}}, "param_groups": []},
        "lr_scheduler": {"t_initial": 300, "last_epoch": 3},
        "max_accuracy": 12.5,
        "epoch": 3,
    }
    torch.save(wrapped, OUT / "plus_train_wrapped.pth")
    torch.save(deploy.state_dict(), OUT / "plus_deploy.pth")
    save_file({"input": x, "train_logits": logits_train, **aux, "deploy_logits": logits_deploy},
              OUT / "plus_io.safetensors")
    save_json(OUT / "plus.json", cfg)
    print(f"plus: max |logit| {logits_train.abs().max().item():.3g}, "
          f"max |train - deploy| in PyTorch {difference:.3g}, "
          f"parameters {parameter_count(train)} (train) {parameter_count(deploy)} (deploy)")


def image_fixtures():
    """Image files of the kinds ImageNet-like folders hold besides plain RGB JPEGs: grayscale,
    CMYK, RGBA, 16-bit, a PNG named .JPEG, and a truncated JPEG. Each is a 40x30 gradient whose
    top-left quarter is bright, so a decoder's orientation and colours can be checked."""
    import numpy as np
    from PIL import Image

    IMAGES.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:30, 0:40]
    rgb = np.stack([x * 6, y * 8, np.full_like(x, 90)], axis=-1).astype(np.uint8)
    rgb[:15, :20] = 250
    Image.fromarray(rgb).save(IMAGES / "rgb.jpg", quality=95)
    Image.fromarray(rgb).convert("L").save(IMAGES / "gray.jpg", quality=95)
    Image.fromarray(rgb).convert("CMYK").save(IMAGES / "cmyk.jpg", quality=95)
    Image.fromarray(rgb).convert("RGBA").save(IMAGES / "rgba.png")
    gray = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.uint16)
    Image.fromarray(gray * 257).save(IMAGES / "gray16.png")
    Image.fromarray(rgb).save(IMAGES / "png_named.JPEG", format="PNG")
    full = (IMAGES / "rgb.jpg").read_bytes()
    (IMAGES / "truncated.jpg").write_bytes(full[: len(full) // 3])


# The evaluation transform's cases: (crop size, crop_pct); and the source images' sizes.
EVAL_CASES = ((224, 0.875), (224, 1.0), (320, 1.0), (57, 0.9))
EVAL_SOURCES = ((500, 375), (375, 500), (333, 333))


def eval_transform_fixtures():
    """What timm's evaluation transform (torchvision Resize of the shorter side to
    floor(size / crop_pct), bilinear with PIL's antialiasing, then CenterCrop) makes of a few
    real-sized images, before ToTensor: crops the Rust transform must reproduce. The sources are
    smooth patterns with some fine detail, saved as PNG so that no JPEG decoder is involved."""
    import numpy as np
    from PIL import Image
    from timm.data import create_transform

    folder = IMAGES / "eval_transform"
    folder.mkdir(parents=True, exist_ok=True)
    for width, height in EVAL_SOURCES:
        y, x = np.mgrid[0:height, 0:width].astype(np.float64)
        rgb = np.stack([
            127 + 120 * np.sin(x / 23.0) * np.cos(y / 31.0),
            127 + 120 * np.sin((x + y) / 9.0),
            255 * (x / width) * (1 - y / height) + 20 * np.sin(x / 2.5),
        ], axis=-1).clip(0, 255).astype(np.uint8)
        source = Image.fromarray(rgb)
        source.save(folder / f"source_{width}x{height}.png")
        for size, crop_pct in EVAL_CASES:
            transform = create_transform(size, crop_pct=crop_pct, interpolation="bilinear")
            # Everything up to ToTensor: Resize and CenterCrop, on the PIL image.
            crop = source
            for step in transform.transforms:
                if type(step).__name__ == "ToTensor" or type(step).__name__ == "MaybeToTensor":
                    break
                crop = step(crop)
            crop.save(folder / f"timm_{width}x{height}_{size}_{crop_pct}.png")
    print(f"eval transform: {len(EVAL_SOURCES)} images x {len(EVAL_CASES)} cases in {folder}")


def main():
    import sys

    if sys.argv[1:] == ["--eval-transform-only"]:
        eval_transform_fixtures()
        return
    if sys.argv[1:] == ["--first-step-only"]:
        first_step_fixtures()
        return
    if sys.argv[1:] == ["--plus-only"]:
        OUT.mkdir(parents=True, exist_ok=True)
        plus_fixture()
        return
    if sys.argv[1:] == ["--qa-only"]:
        OUT.mkdir(parents=True, exist_ok=True)
        qa_fixture()
        return
    image_fixtures()
    eval_transform_fixtures()
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(20210111)
    reference_fixtures(generator)
    timm_fixture(generator)
    plus_fixture()
    qa_fixture()
    first_step_fixtures()
    # The ONNX export of the new fixtures, run by ONNX Runtime, against PyTorch's logits.
    import check_onnx

    check_onnx.main()


if __name__ == "__main__":
    main()
