"""torchvision's classification models by name (``model.name: torchvision:<name>``).

Any name in ``torchvision.models.list_models(module=torchvision.models)`` builds,
with ``model.kwargs`` passed to its builder, its stem convolution fitted to the
data set's channels and its head to the data set's classes. Pretrained weights
(``model.pretrained: DEFAULT`` or a weights name) come from the local torch hub
cache only, unless ``model.download`` is true.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from harness.errors import BadInput

PREFIX = "torchvision:"

# Inception-style nets train an auxiliary classifier whose output the loop does not
# take (it expects one tensor of scores), so it is off unless the weights need it.
_AUX_MODELS = ("googlenet", "inception_v3")

_WEIGHTS_NAME = re.compile(r"^(\w+_Weights\.)?[A-Z][A-Z0-9_]*$")


def is_zoo(name: str) -> bool:
    return name.startswith(PREFIX)


def names() -> list[str]:
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def unknown_name(name: str) -> str | None:
    """Why ``name`` (``torchvision:<name>``) names no model, with the close matches; None when it does."""
    arch = name[len(PREFIX):]
    known = names()
    if arch in known:
        return None
    close = difflib.get_close_matches(arch, known, n=4, cutoff=0.6)
    hint = (f"did you mean {', '.join(PREFIX + c for c in close)}?" if close
            else f"expected one of torchvision.models.list_models(): {', '.join(known[:6])}, ...")
    return f"{name!r} is not a torchvision classification model; {hint}"


def architecture(name: str) -> str:
    """``torchvision:resnet50`` -> ``resnet50``; an unknown name is bad input naming close matches."""
    why = unknown_name(name)
    if why:
        raise BadInput(f"model.name: {why}")
    return name[len(PREFIX):]


# --- pretrained weights -----------------------------------------------------------

def is_weights_name(spec: str | None) -> bool:
    """``DEFAULT``, ``IMAGENET1K_V1`` or ``ResNet50_Weights.IMAGENET1K_V2``, not a file path."""
    return bool(spec) and _WEIGHTS_NAME.match(spec) is not None and not Path(spec).exists()


def resolve_weights(arch: str, spec: str):
    """The torchvision weights enum member that ``spec`` names for ``arch``."""
    import torchvision.models as tvm

    enum = tvm.get_model_weights(arch)
    key = spec.split(".", 1)[1] if "." in spec else spec
    if "." in spec and spec.split(".", 1)[0] != enum.__name__:
        raise BadInput(f"model.pretrained: {spec} are not weights of {arch} ({enum.__name__})")
    try:
        return enum[key]
    except KeyError:
        have = ", ".join(["DEFAULT", *enum.__members__])
        raise BadInput(f"model.pretrained: {arch} has no weights {spec!r} (expected one of: {have})") from None


def weights_file(weights) -> Path:
    """Where torch.hub keeps ``weights``' file: ``$TORCH_HOME/hub/checkpoints/<file name of its URL>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def _require_file(weights, download: bool) -> Path:
    file = weights_file(weights)
    if not file.is_file() and not download:
        raise BadInput(f"model.pretrained: {weights} needs the file {file.name} at {file} "
                       f"(get it from {weights.url}, or set model.download: true)")
    return file


# --- construction --------------------------------------------------------------------

def _builder_kwargs(arch: str, kwargs: dict, pretrained: bool) -> dict:
    out = dict(kwargs)
    if arch in _AUX_MODELS:
        if out.get("aux_logits"):
            raise BadInput(f"model.kwargs.aux_logits: the harness trains {arch} on its main output only; "
                           "leave aux_logits false")
        if not pretrained:
            out.setdefault("aux_logits", False)
            out.setdefault("init_weights", True)  # torchvision's own initialisation, without its warning
    return out


def _construct(arch: str, kwargs: dict, num_classes: int, weights):
    import torchvision.models as tvm

    try:
        if weights is None:
            return tvm.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
        # The builder shapes the network as the weights need (class count, aux heads, image
        # size) and loads the file through load_state_dict_from_url, which reads a file
        # already in the hub cache and downloads only when it is missing: the caller has
        # checked it is there unless model.download is true.
        return tvm.get_model(arch, weights=weights, progress=False, **kwargs)
    except BadInput:
        raise
    except TypeError as err:
        raise BadInput(f"model.kwargs: torchvision:{arch}: {_why(err)}") from None
    except Exception as err:  # noqa: BLE001 -- the kwargs or the weights file are the user's to fix
        what = f"with {weights} ({weights_file(weights)})" if weights is not None else "(**model.kwargs)"
        raise BadInput(f"model: torchvision:{arch} {what} failed: {_why(err)}") from None


def _why(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{err.__class__.__name__}: {text[0]}" if text else err.__class__.__name__


def _set_module(model: nn.Module, dotted: str, new: nn.Module) -> None:
    parent, _, attr = dotted.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)


def stem(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The first convolution, the one that sees the image (registered first in every torchvision net)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise BadInput("model: the network has no Conv2d to take the images")


def fit_stem(model: nn.Module, in_channels: int, keep_weights: bool) -> str | None:
    """Refit the stem to ``in_channels``; its name when changed.

    Pretrained stem weights are kept: summed over RGB for one channel (a grey image
    then gives the response of the same grey in RGB), otherwise tiled and rescaled so
    the activation's scale is the same (timm's ``adapt_input_conv``).
    """
    name, old = stem(model)
    if old.in_channels == in_channels:
        return None
    new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, old.dilation,
                    old.groups, old.bias is not None, old.padding_mode, device=old.weight.device,
                    dtype=old.weight.dtype)
    if keep_weights:
        with torch.no_grad():
            w = old.weight
            if in_channels == 1:
                new.weight.copy_(w.sum(dim=1, keepdim=True))
            else:
                reps = -(-in_channels // w.shape[1])
                new.weight.copy_(w.repeat(1, reps, 1, 1)[:, :in_channels] * (w.shape[1] / in_channels))
            if old.bias is not None:
                new.bias.copy_(old.bias)
    _set_module(model, name, new)
    # googlenet/inception_v3 re-normalise three ImageNet channels in forward(); meaningless otherwise.
    if hasattr(model, "transform_input"):
        model.transform_input = False
    return name


def head(model: nn.Module, classes: int) -> str:
    """The classifier: the last Linear (or 1x1 Conv2d, squeezenet) with ``classes`` outputs."""
    found = None
    for name, module in model.named_modules():
        out = module.out_features if isinstance(module, nn.Linear) else \
            module.out_channels if isinstance(module, nn.Conv2d) else None
        if out == classes:
            found = name
    if found is None:
        raise BadInput(f"model: found no layer with {classes} outputs to use as the classifier head")
    return found


def replace_head(model: nn.Module, name: str, num_classes: int) -> bool:
    old = model.get_submodule(name)
    size = old.out_features if isinstance(old, nn.Linear) else old.out_channels
    if size == num_classes:
        return False
    kw = {"device": old.weight.device, "dtype": old.weight.dtype}
    if isinstance(old, nn.Linear):
        new = nn.Linear(old.in_features, num_classes, old.bias is not None, **kw)
    else:
        new = nn.Conv2d(old.in_channels, num_classes, old.kernel_size, old.stride, old.padding,
                        bias=old.bias is not None, **kw)
    _set_module(model, name, new)
    return True


# --- the refusal of a model that cannot take the data ---------------------------------

def min_size(arch: str) -> tuple[int, int] | None:
    import torchvision.models as tvm

    try:
        size = tvm.get_model_weights(arch).DEFAULT.meta.get("min_size")
    except (ValueError, AttributeError):
        return None
    return tuple(size) if size else None


def meta_model(arch: str, kwargs: dict, num_classes: int) -> nn.Module:
    """``arch`` with its parameters and buffers on the meta device: nothing allocated."""
    from accelerate import init_empty_weights

    # Parameters on the meta device, but not every tensor (as torch.device("meta") would):
    # regnet computes its block widths with tensors it reads back (.tolist()). The
    # buffers (BatchNorm statistics, position indices) are small and follow afterwards.
    with init_empty_weights(include_buffers=False):
        model = _construct(arch, _builder_kwargs(arch, kwargs, False), num_classes, None)
    return model.to("meta").eval()


def probe(arch: str, kwargs: dict, sample_shape: tuple[int, ...], num_classes: int,
          model: nn.Module | None = None) -> None:
    """Run a batch of 2 of ``sample_shape`` through ``arch`` built on the meta device.

    Nothing is allocated or computed, so even the largest model is refused in a
    fraction of a second when it cannot take the data set's images (a ViT wants
    exactly its image size; a deep CNN pools an 8x8 image away), with the reason.
    ``model``: a ``meta_model`` to reuse (its stem is refitted to the channels).
    """
    model = model if model is not None else meta_model(arch, kwargs, num_classes)
    fit_stem(model, sample_shape[0], keep_weights=False)
    out, failure = _meta_forward(model, sample_shape)
    if failure is not None:
        layer, why = failure
        larger = (sample_shape[0], *(max(2 * v, 224) for v in sample_shape[1:]))
        if _meta_forward(model, larger)[1] == failure:
            # The same layer fails with the same words at another size: the kwargs (or the
            # architecture) are at fault, and advice to resize would send the user astray.
            where = f" in layer {layer[0]!r} ({layer[1]})" if layer else ""
            key, given = ("model.kwargs", f" (given: {', '.join(sorted(kwargs))})") if kwargs else ("model.name", "")
            raise BadInput(f"{key}: torchvision:{arch} fails{where} at any image size: {why}{given}")
        size = min_size(arch)
        need = f" (torchvision's DEFAULT weights take {size[0]}x{size[1]} or more)" if size else ""
        raise BadInput(f"model.name: torchvision:{arch} cannot take {'x'.join(map(str, sample_shape))} "
                       f"images{need}: {why}; set data.transforms.resize")
    if tuple(out.shape) != (2, num_classes):
        raise BadInput(f"model.name: torchvision:{arch} gives outputs of shape {tuple(out.shape)} for a batch "
                       f"of 2, expected (2, {num_classes})")


def _meta_forward(model: nn.Module, sample_shape: tuple[int, ...]):
    """(output, None), or (None, failure): a failure is the leaf layer the batch of 2 had
    reached, (name, class) or None, and the error's class and first line."""
    entered: list[tuple[str, str]] = []
    handles = [m.register_forward_pre_hook(lambda mod, args, n=n: entered.append((n, type(mod).__name__)))
               for n, m in model.named_modules() if n and not list(m.children())]
    norms = {m: vars(m).get("forward") for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    for m in norms:
        m.forward = functools.partial(_batch_norm_shape, m)
    try:
        with torch.no_grad():
            return model(torch.zeros(2, *sample_shape, device="meta")), None
    except Exception as err:  # noqa: BLE001 -- any failure here is the input's size or the kwargs
        return None, (entered[-1] if entered else None, _why(err))
    finally:
        for h in handles:
            h.remove()
        for m, own in norms.items():  # the module's forward as it was
            if own is None:
                del m.forward
            else:
                m.forward = own


def _batch_norm_shape(norm: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """A BatchNorm's output on the meta device: its input, once the checks it makes pass.

    Its shape is the input's. torch computes it through a Python decomposition
    (``native_batch_norm_helper``) that took about half of a probe's time (cProfile over
    the 80 zoo models at two sizes); only the shape matters here.
    """
    check = getattr(norm, "_check_input_dim", None)
    if check is not None:
        check(x)
    if x.dim() < 2 or x.shape[1] != norm.num_features:
        raise RuntimeError(f"running_mean should contain {x.shape[1] if x.dim() > 1 else 1} elements not "
                           f"{norm.num_features}")
    return x


# --- the build -------------------------------------------------------------------------

def build(cfg, sample_shape: tuple[int, ...], num_classes: int) -> tuple[nn.Module, dict | None]:
    """The model for ``cfg`` (a ModelConfig), and the pretrained block when weights were loaded.

    A ``pretrained`` that is a file path is left to ``models.load_pretrained``, as for
    every other model (the second value is then None).
    """
    arch = architecture(cfg.name)
    weights = resolve_weights(arch, cfg.pretrained) if is_weights_name(cfg.pretrained) else None
    probe(arch, cfg.kwargs, sample_shape, num_classes)
    if weights is None:
        model = _construct(arch, _builder_kwargs(arch, cfg.kwargs, False), num_classes, None)
        fit_stem(model, sample_shape[0], keep_weights=False)
        return model, None
    file = _require_file(weights, cfg.download)
    model = _construct(arch, _builder_kwargs(arch, cfg.kwargs, True), num_classes, weights)
    stem_name = fit_stem(model, sample_shape[0], keep_weights=True)
    head_name = head(model, len(weights.meta["categories"]))
    replaced = replace_head(model, head_name, num_classes)
    if cfg.freeze_backbone:
        for name, param in model.named_parameters():
            param.requires_grad = name.startswith(head_name + ".")
    return model, {"weights": str(weights), "file": str(file), "head": head_name, "head_replaced": replaced,
                   "stem_refitted": stem_name, "frozen_backbone": cfg.freeze_backbone}


def preset_transform(cfg):
    """``data.transforms.preset: weights``: the preprocessing of the run's weights (or the
    architecture's DEFAULT weights when it trains from scratch)."""
    if not is_zoo(cfg.name):
        raise BadInput(f"data.transforms.preset: weights needs a torchvision:<name> model, got {cfg.name!r}")
    arch = architecture(cfg.name)
    if cfg.pretrained and not is_weights_name(cfg.pretrained):
        raise BadInput("data.transforms.preset: weights needs model.pretrained to be a weights name "
                       f"(DEFAULT, IMAGENET1K_V1, ...), not the file {cfg.pretrained}")
    weights = resolve_weights(arch, cfg.pretrained or "DEFAULT")
    return weights.transforms()
