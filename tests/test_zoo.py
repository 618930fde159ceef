"""torchvision's model zoo by name, pretrained weights offline, FLOPs against torchvision's
published figures, channels-last, and the shipped hardware suite."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision.models as tvm
from accelerate import init_empty_weights
from torch import nn

from support.paths import REPO
from harness.models import zoo
from harness.cli import main
from harness.config.run import load_config
from harness.errors import BadInput
from harness.measure.flops import extra_formulas, training_flops
from harness.models.registry import ModelConfig
from harness.report.io import load_report

DIGITS = str(REPO / "configs/digits_cnn.yaml")
ONE_STEP = ["data.subset=64", "train.epochs=1", "train.max_steps=1", "measure.warmup_steps=0",
            "loader.batch_size=4", "output.progress=false", "output.save_model=false",
            "measure.measure_peak=false"]
# Nothing may be fetched: every proxy variable points at a closed local port.
OFFLINE = {k: "http://127.0.0.1:9" for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}


# --- names ------------------------------------------------------------------------------

def test_an_unknown_name_is_refused_at_load_naming_close_matches():
    with pytest.raises(BadInput) as err:
        load_config(DIGITS, ["model.name=torchvision:resnt50"])
    assert "torchvision:resnet50" in str(err.value) and "model.name" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_every_torchvision_classifier_builds_for_digits_and_224_or_is_refused_with_a_reason():
    """On the meta device: nothing allocated; 80 models x 2 shapes."""
    names = zoo.names()
    assert {"resnet50", "vit_b_16", "swin_t", "regnet_y_400mf", "squeezenet1_0"} <= set(names)
    refused_small = {}
    for name in names:
        model = zoo.meta_model(name, {}, 10)  # built once, its stem refitted for each shape
        zoo.probe(name, {}, (3, 224, 224), 10, model)  # every one takes ImageNet's size
        try:
            zoo.probe(name, {}, (1, 8, 8), 10, model)
        except BadInput as err:
            refused_small[name] = str(err)
    for name, why in refused_small.items():
        assert f"torchvision:{name} cannot take 1x8x8 images" in why and "data.transforms.resize" in why
        assert "\n" not in why
    # Those that pool an 8x8 image away or want exactly 224 are refused; adaptive ones are not.
    assert {"vit_b_16", "alexnet", "vgg11", "inception_v3", "densenet121"} <= set(refused_small)
    assert not {"resnet18", "mobilenet_v3_small", "efficientnet_b0", "regnet_y_400mf"} & set(refused_small)


@pytest.mark.parametrize("shape", [(4, 8, 8), (3, 8, 8), (3, 8)], ids=["fits", "channels", "dims"])
def test_the_probes_batch_norm_fails_where_torchs_fails_and_is_put_back(shape):
    """The probe passes a BatchNorm's input on (its shape is the input's) rather than run
    torch's meta decomposition: it must fail on the same inputs, naming the same layer."""
    model = nn.Sequential(nn.Identity(), nn.BatchNorm2d(4)).to("meta").eval()
    out, failure = zoo._meta_forward(model, shape)
    assert "forward" not in vars(model[1])  # torch's own forward again
    try:
        with torch.no_grad():
            real = model(torch.zeros(2, *shape, device="meta"))
    except (RuntimeError, ValueError) as err:
        assert out is None and failure == (("1", "BatchNorm2d"), zoo._why(err))
    else:
        assert failure is None and out.shape == real.shape


@pytest.mark.parametrize("name,stem,head", [
    ("resnet18", "conv1", "fc"), ("vit_b_16", "conv_proj", "heads.head"), ("swin_t", "features.0.0", "head"),
    ("densenet121", "features.conv0", "classifier"), ("squeezenet1_1", "features.0", "classifier.1"),
    ("googlenet", "conv1.conv", "fc"), ("shufflenet_v2_x0_5", "conv1.0", "fc"),
    ("efficientnet_b0", "features.0.0", "classifier.1"), ("regnet_y_400mf", "stem.0", "fc"),
])
def test_stem_and_head_are_found_in_each_family(name, stem, head):
    with init_empty_weights():
        model = tvm.get_model(name, **({"aux_logits": False, "init_weights": True} if name == "googlenet" else {}))
    assert zoo.stem(model)[0] == stem
    assert zoo.head(model, 1000) == head
    zoo.fit_stem(model, 1, keep_weights=False)
    assert zoo.stem(model)[1].in_channels == 1
    assert zoo.replace_head(model, head, 7)
    layer = model.get_submodule(head)
    assert (layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels) == 7


# --- FLOPs and parameters against torchvision's published metadata ------------------------

@pytest.mark.parametrize("name", ["resnet18", "resnet50", "efficientnet_b0", "convnext_tiny",
                                  "mobilenet_v3_small", "vit_b_16"])
def test_forward_flops_and_parameters_match_torchvision_metadata(name):
    """``_ops`` is GMACs of one 224x224 forward; FLOPs count 2 per multiply-add."""
    weights = tvm.get_model_weights(name).DEFAULT
    published = 2 * weights.meta["_ops"] * 1e9
    with init_empty_weights():  # the harness's build, parameters on the meta device
        model, _ = zoo.build(ModelConfig(name=f"torchvision:{name}"), (3, 224, 224), 1000)
    assert sum(p.numel() for p in model.parameters()) == weights.meta["num_params"]
    forward, total = training_flops(model, torch.zeros(2, 3, 224, 224), torch.zeros(2, dtype=torch.long),
                                    nn.CrossEntropyLoss(), device="meta")
    assert forward == pytest.approx(published, rel=0.02)
    # The backward is about twice the forward (less the stem's unneeded input gradient).
    assert 2.8 < total / forward < 3.0


def test_fused_cpu_attention_is_counted_forward_and_backward():
    """torch leaves the CPU's fused attention kernel uncounted; the harness counts it as the
    math path's two matmuls forward, and the flash backward's five (scores recomputed)."""
    from torch.utils.flop_counter import FlopCounterMode

    b, h, s, d = 2, 3, 17, 8
    q, k, v = (torch.randn(b, h, s, d, requires_grad=True) for _ in range(3))
    with FlopCounterMode(display=False, custom_mapping=extra_formulas()) as counter:
        out = nn.functional.scaled_dot_product_attention(q, k, v)
        forward = counter.get_total_flops()
        out.sum().backward()
    matmul = 2 * b * h * s * s * d
    assert forward == 2 * matmul
    assert counter.get_total_flops() - forward == 5 * matmul


@pytest.mark.parametrize("groups", [1, 4, 64])
def test_grouped_convolution_backward_counts_twice_its_forward(groups):
    """torch counts a grouped conv's weight gradient as dense (64x too much for depthwise)."""
    conv = nn.Conv2d(64, 64, 3, padding=1, groups=groups)
    x = torch.zeros(2, 64, 8, 8, requires_grad=True)  # so the input gradient is computed too
    forward, total = training_flops(conv, x, torch.zeros(2, 64, 8, 8), nn.MSELoss())
    assert forward == (64 * 64 // groups) * 9 * 8 * 8 * 2  # per sample: one multiply-add is 2
    assert total == 3 * forward


# --- pretrained weights, offline ------------------------------------------------------------

def _weights_file(torch_home: Path, name: str, state: dict) -> Path:
    file = torch_home / "hub" / "checkpoints" / Path(tvm.get_model_weights(name).DEFAULT.url).name
    file.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, file)
    return file


@pytest.mark.slow
def test_pretrained_weights_load_from_the_hub_cache_and_the_head_is_replaced(tmp_path, monkeypatch, capsys):
    home = tmp_path / "torch"
    monkeypatch.setenv("TORCH_HOME", str(home))
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    argv = ["run", DIGITS, "model.name=torchvision:mobilenet_v3_small", "model.pretrained=DEFAULT",
            "model.freeze_backbone=true", *ONE_STEP]
    # Without the file: bad input naming where it must go, nothing written.
    out = tmp_path / "missing"
    assert main([*argv, "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    expected = home / "hub" / "checkpoints" / "mobilenet_v3_small-047dcff4.pth"
    assert str(expected) in err and "model.download: true" in err and len(err.splitlines()) == 1
    assert not out.exists()
    # A file that is not a state_dict: bad input naming it.
    expected.parent.mkdir(parents=True)
    expected.write_bytes(b"not a checkpoint")
    assert main([*argv, "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert str(expected) in err and len(err.splitlines()) == 1 and not out.exists()
    # With a file of ImageNet's shapes (a fresh model's state_dict under torchvision's name).
    torch.manual_seed(1)
    state = tvm.mobilenet_v3_small().state_dict()
    _weights_file(home, "mobilenet_v3_small", state)
    out = tmp_path / "run"
    assert main([*argv, "output.save_model=true", "--output", str(out)]) == 0
    report = load_report(out)
    info = report["model"]["pretrained"]
    assert info["weights"] == "MobileNet_V3_Small_Weights.IMAGENET1K_V1" and info["file"] == str(expected)
    assert info["head"] == "classifier.3" and info["head_replaced"] and info["stem_refitted"] == "features.0.0"
    head = 1024 * 10 + 10
    assert report["model"]["trainable_parameters"] == head
    trained = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    trained = trained.get("state_dict", trained)
    # The frozen backbone still holds the file's weights; the grey stem is the RGB one summed.
    key = "features.1.block.0.0.weight"
    assert torch.equal(trained[key], state[key])
    assert torch.allclose(trained["features.0.0.weight"], state["features.0.0.weight"].sum(1, keepdim=True))
    assert trained["classifier.3.weight"].shape == (10, 1024)


def test_kwargs_reach_the_builder():
    zoo.probe("vit_b_32", {"image_size": 32}, (3, 32, 32), 10)  # a ViT told its image size
    with pytest.raises(BadInput) as err:
        zoo.probe("vit_b_32", {}, (3, 32, 32), 10)
    assert "Expected 224 but got 32" in str(err.value)
    with pytest.raises(BadInput) as err:
        zoo.probe("resnet18", {"no_such_argument": 1}, (3, 32, 32), 10)
    assert "model.kwargs" in str(err.value) and "no_such_argument" in str(err.value)


def test_a_weights_name_the_model_lacks_is_refused_with_the_names_it_has():
    with pytest.raises(BadInput) as err:
        zoo.resolve_weights("resnet50", "IMAGENET1K_V9")
    assert "IMAGENET1K_V1" in str(err.value) and "IMAGENET1K_V2" in str(err.value)
    assert zoo.resolve_weights("resnet50", "ResNet50_Weights.IMAGENET1K_V2") is tvm.ResNet50_Weights.IMAGENET1K_V2
    assert zoo.is_weights_name("DEFAULT") and not zoo.is_weights_name("weights/resnet.pt")


def test_the_weights_preset_is_the_weights_own_preprocessing():
    from PIL import Image

    from harness.data.transforms import TransformConfig, build_transform

    preset = zoo.preset_transform(ModelConfig(name="torchvision:resnet18", pretrained="IMAGENET1K_V1"))
    tf = build_transform(TransformConfig(preset="weights"), train=False, preset=preset)
    grey = Image.new("L", (8, 8), color=255)
    x = tf(grey)
    assert x.shape == (3, 224, 224)
    reference = tvm.ResNet18_Weights.IMAGENET1K_V1.transforms()
    mean, std = reference.mean, reference.std
    assert torch.allclose(x[:, 0, 0], (1 - torch.tensor(mean)) / torch.tensor(std))
    with pytest.raises(BadInput):
        load_config(DIGITS, ["data.transforms.preset=weights"])  # digits sets grayscale: true


# --- channels-last, and three families train one step -----------------------------------------

def test_channels_last_batches_are_channels_last():
    from harness.run.accel import ChannelsLast

    batches = [[torch.zeros(2, 3, 4, 4), torch.zeros(2)], [torch.zeros(2, 5), torch.zeros(2)]]
    out = list(ChannelsLast(batches))
    assert out[0][0].is_contiguous(memory_format=torch.channels_last) and not out[0][0].is_contiguous()
    assert out[1][0].is_contiguous()  # not an image batch: untouched


def test_a_resumed_epoch_keeps_channels_last_and_the_compile_mark():
    from accelerate import Accelerator
    from accelerate.data_loader import DataLoaderShard
    from torch.utils.data import DataLoader, TensorDataset

    from harness.run.accel import ChannelsLast, DynamicBatchDim
    from harness.run.fit import skip_in_epoch

    acc = Accelerator(cpu=True)
    data = TensorDataset(torch.arange(20 * 12, dtype=torch.float32).reshape(20, 3, 2, 2), torch.zeros(20))
    loader = ChannelsLast(DynamicBatchDim(acc.prepare(DataLoader(data, batch_size=6))))
    skipped = skip_in_epoch(loader, 2, acc)
    assert isinstance(skipped, ChannelsLast) and isinstance(skipped.loader, DynamicBatchDim)
    assert isinstance(skipped.loader.loader, DataLoaderShard)
    batches = list(skipped)
    assert [len(x) for x, _ in batches] == [6, 2]  # batches 3 and 4 of 4
    assert torch.equal(batches[0][0][0], data[12][0])
    assert all(x.is_contiguous(memory_format=torch.channels_last) for x, _ in batches)


@pytest.mark.slow
@pytest.mark.parametrize("overrides,shape", [
    (["model.name=torchvision:resnet18", "runtime.channels_last=true"], [1, 8, 8]),
    (["model.name=torchvision:squeezenet1_1", "data.name=fake", "data.fake.size=16",
      "data.fake.image_shape=[3,32,32]"], [3, 32, 32]),
], ids=["resnet18-channels-last", "squeezenet-conv-head"])
def test_three_families_train_one_step(overrides, shape, tmp_path):
    """A CNN with a Linear head, one with a convolution head; the third family, a ViT (with
    model.kwargs), trains in ``test_hardware_config_smoke_run[vit_b_16_224]``, as do resnet50
    and mobilenet_v3_small (channels-last, depthwise)."""
    assert main(["run", DIGITS, *ONE_STEP, *overrides, "data.transforms.grayscale=false" if shape[0] == 3 else
                 "data.transforms.grayscale=true", "--output", str(tmp_path)]) == 0
    report = load_report(tmp_path)
    assert report["status"] == "completed" and report["throughput"]["measured_steps"] == 1
    assert report["data"]["sample_shape"] == shape
    assert report["compute"]["forward_flops_per_sample"] > 0
    assert report["compute"]["flops_per_sample"] > 2 * report["compute"]["forward_flops_per_sample"]
    channels_last = "runtime.channels_last=true" in overrides
    assert report["model"]["memory_format"] == ("channels_last" if channels_last else "contiguous")
    assert report["config"]["runtime"]["channels_last"] is channels_last


# --- the hardware suite ---------------------------------------------------------------------

HARDWARE = sorted((REPO / "configs" / "hardware").glob("*.yaml"))


def test_the_hardware_sweep_runs_every_hardware_config_each_with_a_step_budget():
    from harness.sweep.spec import load_sweep

    spec = load_sweep(REPO / "configs" / "sweeps" / "hardware.yaml")
    assert sorted(c.config_file for c in spec.cells) == HARDWARE
    assert {c.config.model.name for c in spec.cells} >= {"torchvision:resnet50", "torchvision:vit_b_16",
                                                       "torchvision:mobilenet_v3_small", "cnn", "gpt"}
    assert all(c.config.train.max_steps for c in spec.cells)


@pytest.mark.slow
@pytest.mark.parametrize("config", [p for p in HARDWARE if p.stem != "gpt_small"], ids=lambda p: p.stem)
def test_hardware_config_smoke_run(config, tmp_path):
    """Each image workload end to end at a tiny size (32x32 images; the ViT told its size); the
    language model, gpt_small, is smoke-run with the shipped configs (tests/test_configs_smoke.py)."""
    small = ["data.fake.size=8", "data.fake.image_shape=[3,32,32]", "data.subset=64", "loader.batch_size=2",
             "train.max_steps=2", "measure.warmup_steps=1", "measure.measure_peak=false"]
    if "vit" in config.stem:
        small.append("model.kwargs={image_size: 32}")
    assert main(["run", str(config), *small, "--output", str(tmp_path)]) == 0
    assert load_report(tmp_path)["status"] == "completed"
