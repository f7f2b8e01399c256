"""The model zoo, driven by the registry: every model gets every check (STYLE.md, item 8).

For every name in ``pointwise.models.names()``: output shape and no NaN, a gradient on every
parameter, no 1×1 ``nn.Conv2d`` left, ``convert()`` keeps eval outputs, and ``num_classes`` /
``in_channels`` are honoured. Then the published parameter counts, torchvision's state_dict
key structure (written out by hand: torchvision cannot be installed beside this torch), and
each family's own details.
"""

from __future__ import annotations

import copy
import functools

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import pointwise.models as pm  # noqa: E402
from pointwise.models import googlenet as googlenet_mod  # noqa: E402
from pointwise.nn import Conv1x1, convert  # noqa: E402

NAMES = pm.names()

#: The smallest convenient input per model (C, H, W). The trunks end in adaptive average
#: pooling (as torchvision's do), so inputs smaller than 224×224 give the same logits shape.
INPUT = {"nin_digits": (1, 8, 8), "mobilenet_digits": (1, 8, 8), "resnet_digits": (1, 8, 8),
         "nin_cifar10": (3, 32, 32), "googlenet": (3, 96, 96),
         "googlenet_tv": (3, 96, 96)}
DEFAULT_INPUT = (3, 32, 32)

#: Published parameter counts: torchvision's model cards; mobilenet_v1's is Keras's
#: MobileNet (α = 1) trainable count (4,253,864 total less 21,888 BN running statistics).
PUBLISHED = {
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
    "resnet101": 44_549_160, "resnet152": 60_192_808, "mobilenet_v2": 3_504_872,
    "squeezenet1_0": 1_248_424, "squeezenet1_1": 1_235_496, "googlenet_tv": 6_624_904,
    "mobilenet_v1": 4_231_976,
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def example_input(name: str, n: int = 2, channels: int | None = None) -> torch.Tensor:
    c, h, w = INPUT.get(name, DEFAULT_INPUT)
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, channels or c, h, w, generator=g)


@functools.cache
def default_model(name: str) -> nn.Module:
    """``create(name)`` with default arguments, built once (tests that mutate it copy it)."""
    torch.manual_seed(0)
    return pm.create(name)


def with_random_batchnorm(model: nn.Module) -> nn.Module:
    """``model`` in eval mode, each BatchNorm given moderate random statistics and affine
    parameters, so that every fold ``convert()`` does changes the weights.

    Not statistics calibrated on a batch: with random weights these leave some channels
    with a tiny variance, and the float32 model then differs from its own float64 copy by
    up to 1e-3 (ResNet-152), which no conversion can beat.
    """
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.rand(c, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.rand(c, generator=g) - 0.5)
    return model.eval()


# ------------------------------------------------------------------ every registered model
def test_the_registry_lists_every_family():
    every = ["googlenet", "googlenet_tv", "mobilenet_digits", "mobilenet_v1", "mobilenet_v2",
             "nin_cifar10", "nin_digits", "resnet18", "resnet34", "resnet50", "resnet101",
             "resnet152", "resnet_digits", "squeezenet1_0", "squeezenet1_1"]
    assert every == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_forward_shape_no_nan_with_num_classes_and_in_channels(name):
    torch.manual_seed(0)
    model = pm.create(name, num_classes=7, in_channels=2).eval()
    with torch.no_grad():
        y = model(example_input(name, channels=2))
    assert y.shape == (2, 7)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", NAMES)
def test_a_gradient_reaches_every_parameter(name):
    torch.manual_seed(0)
    model = pm.create(name, num_classes=5).train()
    y = model(example_input(name))
    assert y.shape == (2, 5)
    (y * torch.randn(y.shape)).sum().backward()
    # A BN's shift whose output reaches the loss only through train-mode BNs (MobileNetV2's
    # last blocks) has an exactly zero gradient: batch statistics absorb any constant shift.
    bn_shifts = {f"{m}.bias" for m, mod in model.named_modules()
                 if isinstance(mod, nn.BatchNorm2d)}
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient reached {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient in {pname}"
        if pname not in bn_shifts:
            assert p.grad.abs().sum() > 0, f"{name}: zero gradient in {pname}"


@pytest.mark.parametrize("name", NAMES)
def test_every_1x1_conv_is_a_Conv1x1(name):
    model = default_model(name)
    left = [n for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (1, 1)]
    assert left == []
    assert any(isinstance(m, Conv1x1) for m in model.modules())


@pytest.mark.parametrize("name", NAMES)
def test_convert_keeps_eval_outputs(name):
    x = example_input(name)
    model = with_random_batchnorm(copy.deepcopy(default_model(name)))
    converted, report = convert(model)
    assert report.replaced == []  # nothing left to replace: the zoo uses Conv1x1 already
    assert report.folded or report.fused  # every model has a BN or ReLU after a 1×1 conv
    with torch.no_grad():
        want, got = model(x), converted(x)
    scale = want.abs().max().item()
    assert scale > 1e-3
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_parameter_counts(name):
    assert n_params(default_model(name)) == PUBLISHED[name]


# ---------------------------------------------------------- torchvision's state_dict keys
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def bn_keys(prefix: str, c: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(f"{prefix}.{k}", () if k == "num_batches_tracked" else (c,)) for k in BN]


def keys_under(model: nn.Module, *prefixes: str) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()
            if k.startswith(prefixes)]


def test_resnet18_keys_are_torchvisions():
    want = [("conv1.weight", (64, 3, 7, 7)), *bn_keys("bn1", 64),
            ("layer1.0.conv1.weight", (64, 64, 3, 3)), *bn_keys("layer1.0.bn1", 64),
            ("layer1.0.conv2.weight", (64, 64, 3, 3)), *bn_keys("layer1.0.bn2", 64),
            ("layer2.0.conv1.weight", (128, 64, 3, 3)), *bn_keys("layer2.0.bn1", 128),
            ("layer2.0.conv2.weight", (128, 128, 3, 3)), *bn_keys("layer2.0.bn2", 128),
            ("layer2.0.downsample.0.weight", (128, 64, 1, 1)),
            *bn_keys("layer2.0.downsample.1", 128),
            ("fc.weight", (1000, 512)), ("fc.bias", (1000,))]
    model = default_model("resnet18")
    assert keys_under(model, "conv1.", "bn1.", "layer1.0.", "layer2.0.", "fc.") == want
    assert isinstance(model.layer2[0].downsample[0], Conv1x1)
    assert len(model.state_dict()) == 122  # 20 convs + 20 BNs × 5 + fc × 2


def test_resnet50_first_bottleneck_keys_are_torchvisions():
    want = [("layer1.0.conv1.weight", (64, 64, 1, 1)), *bn_keys("layer1.0.bn1", 64),
            ("layer1.0.conv2.weight", (64, 64, 3, 3)), *bn_keys("layer1.0.bn2", 64),
            ("layer1.0.conv3.weight", (256, 64, 1, 1)), *bn_keys("layer1.0.bn3", 256),
            ("layer1.0.downsample.0.weight", (256, 64, 1, 1)),
            *bn_keys("layer1.0.downsample.1", 256)]
    model = default_model("resnet50")
    assert keys_under(model, "layer1.0.") == want
    assert len(model.state_dict()) == 320  # 53 convs + 53 BNs × 5 + fc × 2


def test_squeezenet1_0_first_fire_keys_are_torchvisions():
    want = [("features.0.weight", (96, 3, 7, 7)), ("features.0.bias", (96,)),
            ("features.3.squeeze.weight", (16, 96, 1, 1)), ("features.3.squeeze.bias", (16,)),
            ("features.3.expand1x1.weight", (64, 16, 1, 1)),
            ("features.3.expand1x1.bias", (64,)),
            ("features.3.expand3x3.weight", (64, 16, 3, 3)),
            ("features.3.expand3x3.bias", (64,)),
            ("classifier.1.weight", (1000, 512, 1, 1)), ("classifier.1.bias", (1000,))]
    model = default_model("squeezenet1_0")
    assert keys_under(model, "features.0.", "features.3.", "classifier.") == want
    assert [type(m).__name__ for m in model.classifier] == [
        "Dropout", "Conv1x1", "ReLU", "AdaptiveAvgPool2d"]


def test_squeezenet1_1_first_fire_sits_where_torchvisions_does():
    model = default_model("squeezenet1_1")
    assert keys_under(model, "features.0.", "features.3.squeeze.") == [
        ("features.0.weight", (64, 3, 3, 3)), ("features.0.bias", (64,)),
        ("features.3.squeeze.weight", (16, 64, 1, 1)), ("features.3.squeeze.bias", (16,))]


def test_mobilenet_v2_features_1_and_2_keys_are_torchvisions():
    want = [("features.0.0.weight", (32, 3, 3, 3)), *bn_keys("features.0.1", 32),
            # t = 1: no expansion; depthwise, then the linear projection
            ("features.1.conv.0.0.weight", (32, 1, 3, 3)), *bn_keys("features.1.conv.0.1", 32),
            ("features.1.conv.1.weight", (16, 32, 1, 1)), *bn_keys("features.1.conv.2", 16),
            # t = 6: expansion 1×1, depthwise 3×3, projection 1×1
            ("features.2.conv.0.0.weight", (96, 16, 1, 1)), *bn_keys("features.2.conv.0.1", 96),
            ("features.2.conv.1.0.weight", (96, 1, 3, 3)), *bn_keys("features.2.conv.1.1", 96),
            ("features.2.conv.2.weight", (24, 96, 1, 1)), *bn_keys("features.2.conv.3", 24),
            ("features.18.0.weight", (1280, 320, 1, 1)), *bn_keys("features.18.1", 1280),
            ("classifier.1.weight", (1000, 1280)), ("classifier.1.bias", (1000,))]
    model = default_model("mobilenet_v2")
    got = keys_under(model, "features.0.", "features.1.", "features.2.", "features.18.",
                     "classifier.")
    assert got == want
    assert len(model.features) == 19
    assert isinstance(model.features[18][0], Conv1x1)
    assert isinstance(model.features[2].conv[0][2], nn.ReLU6)


def test_googlenet_tv_inception3a_keys_are_torchvisions():
    def basic(prefix, f, c, k):
        return [(f"{prefix}.conv.weight", (f, c, k, k)), *bn_keys(f"{prefix}.bn", f)]

    p = "inception3a"
    want = [*basic("conv1", 64, 3, 7), *basic(f"{p}.branch1", 64, 192, 1),
            *basic(f"{p}.branch2.0", 96, 192, 1), *basic(f"{p}.branch2.1", 128, 96, 3),
            *basic(f"{p}.branch3.0", 16, 192, 1), *basic(f"{p}.branch3.1", 32, 16, 3),
            *basic(f"{p}.branch4.1", 32, 192, 1),
            ("fc.weight", (1000, 1024)), ("fc.bias", (1000,))]
    model = default_model("googlenet_tv")
    assert keys_under(model, "conv1.", f"{p}.", "fc.") == want
    assert model.conv1.bn.eps == 0.001
    assert not any(k.startswith("aux") for k in model.state_dict())


def test_googlenet_tv_aux_classifiers_keys_and_count():
    torch.manual_seed(0)
    model = pm.create("googlenet_tv", aux_logits=True)
    assert keys_under(model, "aux1.") == [
        ("aux1.conv.conv.weight", (128, 512, 1, 1)), *bn_keys("aux1.conv.bn", 128),
        ("aux1.fc1.weight", (1024, 2048)), ("aux1.fc1.bias", (1024,)),
        ("aux1.fc2.weight", (1000, 1024)), ("aux1.fc2.bias", (1000,))]
    assert model.aux2.conv.conv.in_channels == 528
    assert n_params(model) == 13_004_888  # torchvision's googlenet(aux_logits=True)


# ---------------------------------------------------------------------------------- ResNet
def test_resnet_stride_in_1x1_moves_the_stride_to_the_first_1x1():
    v15, v1 = pm.create("resnet50"), pm.create("resnet50", stride_in_1x1=True)
    for model, s1, s3 in ((v15, (1, 1), (2, 2)), (v1, (2, 2), (1, 1))):
        block = model.layer2[0]
        assert (block.conv1.stride, block.conv2.stride) == (s1, s3)
        assert block.downsample[0].stride == (2, 2)
        assert model.layer1[0].conv1.stride == model.layer1[0].conv2.stride == (1, 1)
    assert n_params(v1) == n_params(v15)
    x = example_input("resnet50", n=1)
    with torch.no_grad():
        assert v1.eval()(x).shape == v15.eval()(x).shape == (1, 1000)


def test_resnet_stride_in_1x1_is_refused_without_bottlenecks():
    with pytest.raises(ValueError, match="stride_in_1x1"):
        pm.create("resnet18", stride_in_1x1=True)


# ------------------------------------------------------------------------------- GoogLeNet
def weights(module: nn.Module) -> int:
    """Weights without biases, as Table 1 of the GoogLeNet paper counts them."""
    return sum(p.numel() for n, p in module.named_parameters() if n.endswith("weight"))


def test_googlenet_weights_per_module_from_table_1s_widths():
    """Our counts from Table 1's widths, by hand: c·#1×1 + c·#3×3r + 9·#3×3r·#3×3 + c·#5×5r +
    25·#5×5r·#5×5 + c·#pool proj. Table 1's own params column agrees within rounding
    (K = 1024) for conv2+conv3 (112K), 3a (159K), 3b (380K), 4b (437K) and the linear layer
    (1000K), and disagrees for conv1 (2.7K printed, 9.2K = 7·7·3·64), 4a, 4c, 4d, 4e, 5a and
    5b; the analyzer's ``--paper`` view lists those side by side."""
    model = default_model("googlenet")
    c_out = 192
    for tag, (c, n1, r3, n3, r5, n5, pp) in googlenet_mod.TABLE1.items():
        assert c == c_out, tag  # each module takes its predecessor's channels
        want = c * n1 + c * r3 + 9 * r3 * n3 + c * r5 + 25 * r5 * n5 + c * pp
        assert weights(getattr(model, f"inception{tag}")) == want, tag
        c_out = n1 + n3 + n5 + pp
    agree = {"inception3a": 159, "inception3b": 380, "inception4b": 437}
    for name, k in agree.items():
        assert abs(weights(getattr(model, name)) / 1024 - k) <= 1, name
    assert round((weights(model.conv2) + weights(model.conv3)) / 1024) == 112
    assert round(weights(model.fc) / 1024) == 1000
    assert weights(model.conv1) == 7 * 7 * 3 * 64
    assert n_params(model) == 6_998_552  # with biases; 6,990,272 weights


def test_googlenet_is_the_papers_not_torchvisions():
    model, tv = default_model("googlenet"), default_model("googlenet_tv")
    assert model.inception3a.branch3[1].conv.kernel_size == (5, 5)  # true 5×5
    assert tv.inception3a.branch3[1].conv.kernel_size == (3, 3)
    assert model.inception3a.branch3[1].bn is None and model.conv1.conv.bias is not None
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert isinstance(model.norm1, nn.LocalResponseNorm)
    assert isinstance(model.norm2, nn.LocalResponseNorm)
    assert model.maxpool4.kernel_size == 3 and tv.maxpool4.kernel_size == 2
    assert (model.dropout.p, tv.dropout.p) == (0.4, 0.2)


def test_googlenet_sizes_at_224_follow_table_1():
    torch.manual_seed(0)
    model = pm.create("googlenet", aux_logits=True).train()  # train: the aux heads run
    sizes = {}
    names = ("conv1", "maxpool1", "conv3", "maxpool2", "inception3b", "maxpool3",
             "inception4e", "maxpool4", "inception5b", "aux1.pool", "aux2.pool")
    hooks = [model.get_submodule(n).register_forward_hook(
                 lambda m, i, o, n=n: sizes.__setitem__(n, tuple(o.shape[1:])))
             for n in names]
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    assert sizes == {
        "conv1": (64, 112, 112), "maxpool1": (64, 56, 56), "conv3": (192, 56, 56),
        "maxpool2": (192, 28, 28), "inception3b": (480, 28, 28), "maxpool3": (480, 14, 14),
        "inception4e": (832, 14, 14), "maxpool4": (832, 7, 7), "inception5b": (1024, 7, 7),
        "aux1.pool": (512, 4, 4), "aux2.pool": (528, 4, 4)}  # 5×5/3 pools: 14 → 4
    assert [t.shape for t in out] == [(1, 1000)] * 3


@pytest.mark.parametrize("name", ["googlenet", "googlenet_tv"])
def test_googlenet_aux_classifiers_train_and_vanish_in_eval(name):
    torch.manual_seed(0)
    model = pm.create(name, aux_logits=True, num_classes=5).train()
    out = model(example_input(name))
    assert [t.shape for t in out] == [(2, 5)] * 3
    sum((t * torch.randn(t.shape)).sum() for t in out).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with torch.no_grad():
        assert model.eval()(example_input(name)).shape == (2, 5)


# ------------------------------------------------------------------------ NiN, MobileNet v1
def test_nin_cifar10_follows_the_release():
    model = default_model("nin_cifar10")
    f = model.features
    assert [type(f.pool1), type(f.pool2)] == [nn.MaxPool2d, nn.AvgPool2d]
    assert f.drop1.p == f.drop2.p == 0.5
    assert [(m.kernel_size, m.padding) for m in (f.mlpconv1.conv, f.mlpconv2.conv,
                                                 f.mlpconv3.conv)] == [
        ((5, 5), (2, 2)), ((5, 5), (2, 2)), ((3, 3), (1, 1))]
    widths = [[m.out_channels for m in b if isinstance(m, (nn.Conv2d, Conv1x1))]
              for b in (f.mlpconv1, f.mlpconv2, f.mlpconv3)]
    assert widths == [[192, 160, 96], [192, 192, 192], [192, 192, 10]]
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 9  # after every conv
    assert n_params(model) == 966_986
    with torch.no_grad():
        x = example_input("nin_cifar10")
        assert f.pool1(f.mlpconv1(x)).shape[-1] == 16  # 32 → 16 → 8, as the release
        assert f[:5](x).shape[-1] == 8


def test_nin_digits_is_small_and_takes_8x8_grey_images():
    model = default_model("nin_digits")
    assert 20_000 <= n_params(model) <= 60_000
    assert model.features.mlpconv1.conv.in_channels == 1
    with torch.no_grad():
        assert model.eval()(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_mobilenet_v1_follows_table_1():
    model = default_model("mobilenet_v1")
    blocks = list(model.features)[1:]
    assert len(blocks) == 13
    assert [b.conv_dw.stride[0] for b in blocks] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    assert [b.conv_pw.out_channels for b in blocks][-2:] == [1024, 1024]
    assert all(isinstance(b.conv_pw, Conv1x1) and b.conv_dw.groups == b.conv_dw.in_channels
               for b in blocks)
    with torch.no_grad():  # /32 overall: the 13th depthwise conv has stride 1
        assert model.features.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 1024, 2, 2)


def test_mobilenet_width_multiplier():
    half = pm.create("mobilenet_v1", width_mult=0.5)
    assert half.features[-1].conv_pw.out_channels == 512
    assert n_params(half) < n_params(default_model("mobilenet_v1")) / 3
    assert pm.create("mobilenet_v2", width_mult=0.5).features[1].conv[1].out_channels == 8
    with pytest.raises(ValueError, match="width_mult"):
        pm.create("mobilenet_v1", width_mult=0)
