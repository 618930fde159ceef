"""``harness predict RUN_DIR IMAGE_OR_FOLDER...``: class names and probabilities for images.

Each file is read as the run's data set read its images (a folder-backed set, digits
or imagefolder, through torchvision's ImageFolder loader: RGB; mnist and the like as
their grey or colour pictures), passed through the run's eval transforms
(``preprocess.eval_transform``: the weights' own under the weights preset) and the
model under ``eval()`` and ``inference_mode``, in the run's precision. A file that is
not an image, or that the transforms do not turn into the shape the model takes
(another channel count, another size without a resize), is bad input naming it.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import BadInput
from harness.infer.reload import RunFolder, build_trained_model, open_run
from harness.report.columns import aligned

FOLDER_SETS = ("digits", "imagefolder")


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]] = field(default_factory=list)
    """(class name, probability), most probable first."""


def expand(inputs: list[str]) -> list[Path]:
    """Files as given; a folder: every file below it (hidden ones left out), sorted."""
    out = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file()
                          and not any(part.startswith(".") for part in f.relative_to(p).parts))
        elif p.is_file():
            out.append(p)
        else:
            raise BadInput(f"{p}: no such file or folder")
    if not out:
        raise BadInput(f"{', '.join(inputs)}: no file to predict")
    return out


def read_image(path: Path, data_name: str):
    """The PIL image as the run's data set would hand it to the transforms."""
    from PIL import Image

    if data_name in FOLDER_SETS:
        from torchvision.datasets.folder import default_loader

        return default_loader(str(path))
    with Image.open(path) as img:
        img.load()
        # mnist hands "L" images, cifar10 "RGB": other modes are brought to the nearer one.
        return img.convert("L") if img.mode in ("1", "L", "LA", "I", "I;16", "F") else img.convert("RGB")


def load_inputs(run: RunFolder, paths: list[Path]) -> tuple[list[tuple[Path, object]], list[str]]:
    """(path, tensor) of each usable image, and one line per file that is not."""
    from harness.data.preprocess import eval_transform

    transform = eval_transform(run.cfg, run.sample_shape[0])
    good, bad = [], []
    for path in paths:
        try:
            image = read_image(path, run.cfg.data.name)
        except Exception as err:  # noqa: BLE001 -- PIL raises many kinds for a non-image
            from PIL import UnidentifiedImageError

            why = "no image format PIL reads" if isinstance(err, UnidentifiedImageError) else _why(err)
            bad.append(f"{path}: not a readable image ({why})")
            continue
        try:
            x = transform(image)
        except Exception as err:  # noqa: BLE001 -- e.g. Normalize's 3 means on a grey image
            bad.append(f"{path}: a {len(image.getbands())}-channel {image.width}x{image.height} image the "
                       f"recipe's transforms cannot take ({_why(err)}); the model takes "
                       f"{_shape(run.sample_shape)} (channels x height x width)")
            continue
        if tuple(x.shape) != tuple(run.sample_shape):
            bad.append(f"{path}: becomes {_shape(x.shape)} after the recipe's transforms, but the model takes "
                       f"{_shape(run.sample_shape)} (channels x height x width)")
            continue
        good.append((path, x))
    return good, bad


def _why(err: BaseException) -> str:
    return f"{err.__class__.__name__}: {' '.join(str(err).split())[:120]}"


def _shape(shape) -> str:
    return "x".join(str(v) for v in shape)


def predict(run: RunFolder, inputs: list[tuple[Path, object]], top_k: int) -> list[Prediction]:
    import torch

    from harness.run import accel

    accelerator, _ = accel.build_accelerator(run.cfg.runtime)
    model = accelerator.prepare(build_trained_model(run))
    model.eval()
    k = min(top_k, len(run.classes))
    bs = run.cfg.loader.eval_batch_size or run.cfg.loader.batch_size
    out = []
    with torch.inference_mode():
        for start in range(0, len(inputs), bs):
            chunk = inputs[start:start + bs]
            x = torch.stack([t for _, t in chunk]).to(accelerator.device)
            probs = model(x).float().softmax(dim=1)
            values, indices = probs.topk(k, dim=1)
            for (path, _), vs, ix in zip(chunk, values.tolist(), indices.tolist()):
                out.append(Prediction(str(path), [(run.classes[i], v) for v, i in zip(vs, ix)]))
    return out


def render(preds: list[Prediction], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([{"image": p.path, "top": [{"class": c, "probability": v} for c, v in p.top]}
                           for p in preds], indent=1) + "\n"
    k = max((len(p.top) for p in preds), default=0)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["image"] + [f"{kind}_{r}" for r in range(1, k + 1) for kind in ("class", "probability")])
        for p in preds:
            w.writerow([p.path] + [x for c, v in p.top for x in (c, f"{v:.6f}")])
        return buf.getvalue()
    rows = [["image"] + [f"top {r}" for r in range(1, k + 1)]]
    rows += [[p.path] + [f"{c} ({v:.3f})" for c, v in p.top] for p in preds]
    return "".join(line + "\n" for line in aligned(rows))


def cmd_predict(args) -> int:
    run = open_run(args.run_dir)
    if run.text:
        from harness.infer.text_predict import cmd_predict_text

        return cmd_predict_text(run, args)
    if args.top_k is None:
        args.top_k = 3
    if args.top_k <= 0:
        raise BadInput(f"--top-k: expected an integer > 0, got {args.top_k}")
    good, bad = load_inputs(run, expand(args.inputs))
    if bad and not args.skip_bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise BadInput(f"{bad[0]}{more}; remove it, or give --skip-bad to predict the others")
    for line in bad:
        print(f"skipped {line}", file=sys.stderr)
    if not good:
        raise BadInput("predict: no readable image among the files given")
    sys.stdout.write(render(predict(run, good, args.top_k), args.format))
    return 0
