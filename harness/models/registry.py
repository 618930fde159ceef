"""The model registry, user models by import path, and transfer learning.

Every image builder gets the data set's input channels, image size and class count,
and every language model the vocabulary size and window length, so a model always
fits the data it is trained on.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from harness.errors import BadInput, ConfigValueError
from harness.models.gpt import GPT
from harness.models import hf
from harness.models.hf import HFCausalLM


@dataclass
class ModelConfig:
    name: str = "cnn"
    """mlp, cnn, resnet18, torchvision:<name> for any torchvision classification model
    (harness/models/zoo.py), gpt (a language model, harness/models/gpt.py), hf_causal_lm (a
    transformers causal LM from its config, harness/models/hf.py; the hf extra), or
    package.module:ClassName for your own nn.Module."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra constructor arguments (e.g. mlp: hidden_sizes, dropout; cnn: channels;
    gpt: n_layer, n_head, d_model, seq_len: positions, absent or null for the window)."""
    pretrained: str | None = None
    """Local state_dict file to start from; a head of another class count is replaced.
    torchvision:<name> also takes a weights name (DEFAULT, IMAGENET1K_V1), read from
    $TORCH_HOME/hub/checkpoints."""
    freeze_backbone: bool = False
    """Train only the head (needs pretrained)."""
    download: bool = False
    """Let torchvision download the pretrained weights named by ``pretrained`` (off: never fetch)."""

    def __post_init__(self):
        if self.name.startswith("torchvision:"):
            from harness.models.zoo import unknown_name

            why = unknown_name(self.name)
            if why:
                raise ConfigValueError("name", why)
        if self.name not in MODELS and self.name not in LM_MODELS and ":" not in self.name:
            raise ConfigValueError(
                "name",
                f"unknown model {self.name!r} (expected one of: {', '.join([*MODELS, *LM_MODELS])}, torchvision:<name>, "
                "or package.module:ClassName)",
            )
        if self.name == "hf_causal_lm" and hf.missing():
            raise ConfigValueError("name", hf.missing())
        if self.freeze_backbone and not self.pretrained:
            raise ConfigValueError("freeze_backbone", "needs model.pretrained (a weights file)")
        if self.download and not self.pretrained:
            raise ConfigValueError("download", "needs model.pretrained (a torchvision weights name)")


class MLP(nn.Module):
    """Flatten, then Linear+ReLU(+Dropout) layers, then the classifier head."""

    def __init__(self, in_channels: int, image_size: tuple[int, int], num_classes: int,
                 hidden_sizes: list[int] = (256, 128), dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_channels * image_size[0] * image_size[1]
        for h in hidden_sizes:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class CNN(nn.Module):
    """A small LeNet-style network: two conv blocks, then two fully connected layers."""

    def __init__(self, in_channels: int, image_size: tuple[int, int], num_classes: int,
                 channels: list[int] = (32, 64), hidden: int = 128, dropout: float = 0.25):
        super().__init__()
        c1, c2 = channels
        if min(image_size) < 4:
            raise BadInput(f"model.name: cnn pools twice by 2 and needs images of at least 4x4, got "
                           f"{image_size[0]}x{image_size[1]}; set data.transforms.resize")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c1, c1, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        # The flattened width depends on the image size: measure it once here
        # rather than asking the user to compute it.
        with torch.no_grad():
            flat = self.features(torch.zeros(1, in_channels, *image_size)).numel()
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(flat, hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.classifier(self.features(x)))


def resnet18(in_channels: int, image_size: tuple[int, int], num_classes: int,
             small_input: bool = False) -> nn.Module:
    """torchvision's ResNet-18, never with downloaded weights.

    ``small_input`` swaps the 7x7/2 stem and its max-pool for a 3x3/1 stem, the usual
    change for 32x32 images.
    """
    from torchvision.models import resnet18 as tv_resnet18

    model = tv_resnet18(weights=None, num_classes=num_classes)
    if small_input:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


MODELS: dict[str, Callable[..., nn.Module]] = {"mlp": MLP, "cnn": CNN, "resnet18": resnet18}
LM_MODELS: dict[str, Callable[..., nn.Module]] = {"gpt": GPT, "hf_causal_lm": HFCausalLM}
"""Causal language models: they take ``vocab_size`` and ``seq_len`` and return logits (batch, time, vocab)."""


def _import_model(spec: str) -> Callable[..., nn.Module]:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as err:  # any import-time failure, sys.exit too, is the user's to fix
        raise BadInput(f"model.name: cannot import {module_name!r}: {_why(err)}") from None
    obj = getattr(module, attr, None)
    if obj is None:
        raise BadInput(f"model.name: module {module_name!r} has no attribute {attr!r}")
    if not (inspect.isclass(obj) and issubclass(obj, nn.Module)):
        raise BadInput(f"model.name: {spec} is not an nn.Module subclass")
    return obj


def _call(builder: Callable[..., nn.Module], name: str, standard: dict, kwargs: dict) -> nn.Module:
    """Pass the standard arguments the builder accepts, plus the user's kwargs."""
    params = inspect.signature(builder).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    args = {k: v for k, v in standard.items() if takes_any or k in params}
    unknown = [k for k in kwargs if not takes_any and k not in params]
    if unknown:
        raise BadInput(f"model.kwargs.{unknown[0]}: {name} takes no such argument")
    try:
        return builder(**args, **kwargs)
    except BadInput:
        raise
    except TypeError as err:
        raise BadInput(f"model.kwargs: {name}: {_why(err)}") from None
    except (Exception, SystemExit) as err:  # the user's constructor refused its arguments, or failed
        given = "(**model.kwargs)" if kwargs else "()"
        raise BadInput(f"model: {name}{given} raised {_why(err)}") from None


def _why(err: BaseException) -> str:
    """``Type: first line of the message``, one line whatever the message held."""
    if isinstance(err, SystemExit):
        return f"SystemExit({err.code!r}): the model code called sys.exit"
    text = str(err).strip().splitlines()
    return f"{err.__class__.__name__}: {text[0]}" if text else err.__class__.__name__


def head_name(model: nn.Module) -> str:
    """The classifier head: the last nn.Linear registered in the model."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        raise BadInput("model.pretrained: the model has no nn.Linear layer to use as its head")
    return last


def not_tensors(state: dict) -> str | None:
    """Why ``state`` is not a state_dict of tensors (its first entry that is not), or None.

    ``torch.load(weights_only=True)`` accepts lists, numbers and strings too; a later
    ``.shape`` on one would end in a traceback."""
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            shown = repr(key) if len(repr(key)) <= 60 else repr(key)[:57] + "..."
            return f"{shown} holds a {type(value).__name__}, not a tensor"
    return None


def load_pretrained(model: nn.Module, path: str, freeze_backbone: bool) -> dict:
    """Load local weights; a head whose shape differs is left freshly initialised.

    Returns a summary for the report.
    """
    file = Path(path)
    if not file.is_file():
        raise BadInput(f"model.pretrained: {file} is not a file")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:
        raise BadInput(f"model.pretrained: {file} is not a loadable state_dict ({err.__class__.__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise BadInput(f"model.pretrained: {file} does not hold a state_dict")
    why = not_tensors(state)
    if why:
        raise BadInput(f"model.pretrained: {file}: {why}; expected a state_dict of tensors")
    head = head_name(model)
    own = model.state_dict()
    in_head = lambda k: k.startswith(head + ".")  # noqa: E731
    loadable, head_replaced = {}, False
    for key, tensor in state.items():
        if key not in own:
            raise BadInput(f"model.pretrained: {file} has {key!r}, which the model does not")
        if tuple(tensor.shape) != tuple(own[key].shape):
            if in_head(key):
                head_replaced = True
                continue
            raise BadInput(
                f"model.pretrained: {key} has shape {tuple(tensor.shape)} in {file} "
                f"but {tuple(own[key].shape)} in the model"
            )
        loadable[key] = tensor
    missing = [k for k in own if k not in loadable and not in_head(k)]
    if missing:
        raise BadInput(f"model.pretrained: {file} lacks {missing[0]!r}")
    model.load_state_dict(loadable, strict=False)
    if freeze_backbone:
        for name, param in model.named_parameters():
            param.requires_grad = name.startswith(head + ".")
    return {"file": str(file), "head": head, "head_replaced": head_replaced,
            "frozen_backbone": freeze_backbone}


def build_model(cfg: ModelConfig, sample_shape: tuple[int, ...], num_classes: int) -> tuple[nn.Module, dict]:
    """Build, load pretrained weights, and run one probe batch (see ``check_fits``).

    The probe also materialises lazy layers, so parameter counts are real.
    """
    from harness.models import zoo

    loaded = None
    if zoo.is_zoo(cfg.name):
        model, loaded = zoo.build(cfg, tuple(sample_shape), num_classes)
    else:
        builder = MODELS.get(cfg.name) or _import_model(cfg.name)
        standard = {"in_channels": sample_shape[0], "image_size": tuple(sample_shape[1:]),
                    "num_classes": num_classes}
        model = _call(builder, cfg.name, standard, cfg.kwargs)
    if not isinstance(model, nn.Module):
        raise BadInput(f"model.name: {cfg.name} did not return an nn.Module")
    if not any(True for _ in model.parameters()):
        raise BadInput(f"model.name: {cfg.name} has no parameters, so there is nothing to train")
    check_fits(model, tuple(sample_shape), num_classes)
    info: dict = {"name": cfg.name}
    if loaded is not None:  # torchvision weights by name, loaded by the zoo
        info["pretrained"] = loaded
    elif cfg.pretrained:
        info["pretrained"] = load_pretrained(model, cfg.pretrained, cfg.freeze_backbone)
    info["parameters"] = sum(p.numel() for p in model.parameters())
    info["trainable_parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return model, info


def check_fits(model: nn.Module, sample_shape: tuple[int, ...], num_classes: int) -> None:
    """Run one tiny batch through the model before training.

    A shape mismatch between two layers is the classic error in hand-written
    models; here it is reported with the layer's name and the shape that met it,
    instead of a stack trace from deep inside a training step.
    """
    entered: list[tuple[str, nn.Module, tuple]] = []

    def pre_hook(name):
        def hook(module, args):
            shapes = tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor))
            entered.append((name, module, shapes))
        return hook

    handles = [m.register_forward_pre_hook(pre_hook(n)) for n, m in model.named_modules()
               if n and not list(m.children())]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *sample_shape))
    except (Exception, SystemExit) as err:
        detail = str(err).splitlines()[0] if str(err) else err.__class__.__name__
        if entered:
            name, module, shapes = entered[-1]
            got = shapes[0] if len(shapes) == 1 else shapes
            raise BadInput(
                f"model: layer {name!r} ({module.__class__.__name__}) cannot take input of shape "
                f"{got}: {detail}"
            ) from None
        raise BadInput(f"model: input of shape {(2, *sample_shape)} fails: {detail}") from None
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise BadInput(
            f"model: output has shape {got} for a batch of 2, expected (2, {num_classes}): "
            f"one score per class of the data set"
        )


def build_causal_lm(cfg: ModelConfig, vocab_size: int, seq_len: int) -> tuple[nn.Module, dict]:
    """A language model for a vocabulary of ``vocab_size`` trained on windows of ``seq_len``.

    gpt's positions default to the window (``model.kwargs.seq_len`` may give more, for
    generation; null is the default, so a sweep's base can let a ``data.seq_len`` axis alone
    size the model); a user's model gets ``vocab_size`` and ``seq_len`` when it takes them.
    One probe window checks the output is (batch, time, vocab) before training.
    """
    builder = LM_MODELS.get(cfg.name) or _import_model(cfg.name)
    kwargs = dict(cfg.kwargs)
    positions = kwargs.pop("seq_len", None)
    standard = {"vocab_size": vocab_size, "seq_len": seq_len if positions is None else positions}
    if cfg.pretrained:
        raise BadInput("model.pretrained: loading weights into a language model is not supported yet")
    model = _call(builder, cfg.name, standard, kwargs)
    if not isinstance(model, nn.Module):
        raise BadInput(f"model.name: {cfg.name} did not return an nn.Module")
    if not any(True for _ in model.parameters()):
        raise BadInput(f"model.name: {cfg.name} has no parameters, so there is nothing to train")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, seq_len, dtype=torch.long))
    except (Exception, SystemExit) as err:
        raise BadInput(f"model: a window of data.seq_len = {seq_len} tokens fails: {_why(err)}") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, seq_len, vocab_size):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise BadInput(f"model: output has shape {got} for one window of {seq_len} tokens, expected "
                       f"(1, {seq_len}, {vocab_size}): one logit per token of the vocabulary")
    info: dict = {"name": cfg.name, "parameters": sum(p.numel() for p in model.parameters()),
                  "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    return model, info
