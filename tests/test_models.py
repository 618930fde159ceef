"""The model registry, user models by path, shape checks and transfer learning."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.errors import BadInput
from harness.models.registry import ModelConfig, build_model


@pytest.mark.parametrize("name, shape", [("mlp", (1, 8, 8)), ("cnn", (1, 8, 8)), ("cnn", (3, 28, 28)),
                                         ("resnet18", (3, 32, 32)), ("resnet18", (1, 8, 8))])
def test_registry_models_fit_their_data(name, shape):
    model, info = build_model(ModelConfig(name=name), shape, num_classes=7)
    out = model(torch.zeros(2, *shape))
    assert out.shape == (2, 7)
    assert info["parameters"] == sum(p.numel() for p in model.parameters())


def test_model_kwargs_are_passed():
    model, _ = build_model(ModelConfig(name="mlp", kwargs={"hidden_sizes": [5]}), (1, 4, 4), 3)
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [5, 3]


def test_unknown_kwarg_names_the_key():
    with pytest.raises(BadInput, match="model.kwargs.depth: cnn takes no such argument"):
        build_model(ModelConfig(name="cnn", kwargs={"depth": 3}), (1, 8, 8), 10)


def test_custom_model_by_import_path():
    model, _ = build_model(ModelConfig(name="fixtures.custom_models:TinyNet", kwargs={"width": 4}), (1, 8, 8), 10)
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 10)


@pytest.mark.parametrize("spec, match", [
    ("no_such_module_xyz:Net", "model.name: cannot import 'no_such_module_xyz'"),
    ("fixtures.custom_models:Missing", "has no attribute 'Missing'"),
    ("fixtures.custom_models:NotAModule", "is not an nn.Module subclass"),
])
def test_bad_import_paths(spec, match):
    with pytest.raises(BadInput, match=match):
        build_model(ModelConfig(name=spec), (1, 8, 8), 10)


def test_shape_mismatch_names_the_layer():
    with pytest.raises(BadInput) as info:
        build_model(ModelConfig(name="fixtures.custom_models:WrongWidth"), (1, 8, 8), 10)
    msg = str(info.value)
    assert "layer 'fc2' (Linear)" in msg and "(2, 32)" in msg


def test_output_size_must_match_classes():
    with pytest.raises(BadInput, match=r"output has shape \(2, 3\).*expected \(2, 10\)"):
        build_model(ModelConfig(name="fixtures.custom_models:WrongClasses"), (1, 8, 8), 10)


def test_transfer_learning_replaces_head_and_freezes_backbone(tmp_path):
    from torchvision.models import resnet18

    torch.manual_seed(0)
    source = resnet18(weights=None)  # an "ImageNet" model: 1000 classes
    weights = tmp_path / "resnet18.pt"
    torch.save(source.state_dict(), weights)
    cfg = ModelConfig(name="resnet18", pretrained=str(weights), freeze_backbone=True)
    model, info = build_model(cfg, (3, 32, 32), num_classes=10)
    assert model.fc.out_features == 10
    assert info["pretrained"]["head"] == "fc" and info["pretrained"]["head_replaced"]
    assert torch.equal(model.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}
    assert info["trainable_parameters"] == 512 * 10 + 10


def test_pretrained_with_wrong_backbone_shape(tmp_path):
    from torchvision.models import resnet18

    weights = tmp_path / "w.pt"
    torch.save(resnet18(weights=None).state_dict(), weights)
    with pytest.raises(BadInput, match=r"model.pretrained: conv1.weight has shape \(64, 3, 7, 7\)"):
        build_model(ModelConfig(name="resnet18", pretrained=str(weights)), (1, 32, 32), 10)


def test_pretrained_missing_file(tmp_path):
    with pytest.raises(BadInput, match="model.pretrained: .* is not a file"):
        build_model(ModelConfig(name="cnn", pretrained=str(tmp_path / "none.pt")), (1, 8, 8), 10)
