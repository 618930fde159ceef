"""The bad-input battery: one row per way a user can hand the harness something wrong.

Every row must end the same way: exit status 2, exactly one line on stderr
("error: ..." naming the key, file or layer, never a traceback), nothing on stdout,
and nothing written: the output folder absent and every file the row set up
untouched. Most rows call ``harness.cli.main`` in this process (a subprocess costs
~3 s of torch import on a 2-core machine); rows marked ``process`` need a real one
(``sys.exit`` in user code, a recursion limit).
"""

from __future__ import annotations

import importlib.util

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
from PIL import Image

from support.cli import run_cli
from support.paths import REPO, TESTS_PATH
from harness.cli import main
from support.reports import make_report, write

CONFIG = str(REPO / "configs/digits_cnn.yaml")
GPT_CONFIG = str(REPO / "configs/tiny_gpt.yaml")


def gpt_run(*items: str) -> Callable[[Path, Path], list[str]]:
    """`harness run configs/tiny_gpt.yaml ITEMS --output OUT`."""
    return lambda inp, out: ["run", GPT_CONFIG, *items, "--output", str(out)]


@dataclass
class Case:
    id: str
    argv: Callable[[Path, Path], list[str]]
    """(folder for the row's input files, output folder) -> the command line after `harness`."""
    says: tuple[str, ...]
    """Substrings the error line must hold."""
    absent: tuple[str, ...] = ()
    """Substrings it must not hold."""
    process: bool = False
    env: dict = field(default_factory=dict)
    """Environment for the row; ``{in}`` is replaced by its input folder."""


def text(inp: Path, name: str, body: str) -> str:
    path = inp / name
    path.write_text(body)
    return str(path)


def images(root: Path, classes: dict[str, list[tuple[int, int]]]) -> str:
    """An image folder: class name -> the (width, height) of each of its images."""
    for name, sizes in classes.items():
        (root / name).mkdir(parents=True)
        for i, size in enumerate(sizes):
            Image.new("L", size, color=30 * i).save(root / name / f"{i:02d}.png")
    return str(root)


def run(*items: str) -> Callable[[Path, Path], list[str]]:
    """`harness run CONFIG ITEMS --output OUT`."""
    return lambda inp, out: ["run", CONFIG, *items, "--output", str(out)]


def run_with(make: Callable[[Path], list[str]]) -> Callable[[Path, Path], list[str]]:
    """Like ``run``, with items that need the row's input folder."""
    return lambda inp, out: ["run", CONFIG, *make(inp), "--output", str(out)]


def config_file(body: str) -> Callable[[Path, Path], list[str]]:
    return lambda inp, out: ["run", text(inp, "c.yaml", body), "--output", str(out)]


def folder_run(classes: dict, *extra: str) -> Callable[[Path, Path], list[str]]:
    return run_with(lambda inp: ["data.name=imagefolder", f"data.root={images(inp / 'images', classes)}", *extra])


def symlink_loop(inp: Path) -> list[str]:
    root = images(inp / "images", {"a": [(8, 8)] * 3, "b": [(8, 8)] * 3})
    os.symlink("..", Path(root) / "a" / "loop")
    return ["data.name=imagefolder", f"data.root={root}"]


def exits_at_import(inp: Path) -> list[str]:
    text(inp, "exits_at_import.py", "import sys\nsys.exit(4)\n")
    return ["model.name=exits_at_import:Model"]


def a_file(inp: Path, name: str = "file") -> str:
    return text(inp, name, "not a folder\n")


def sweep_file(body: str) -> Callable[[Path, Path], list[str]]:
    return lambda inp, out: ["sweep", text(inp, "s.yaml", f"base: {CONFIG}\n{body}"), "--output", str(out)]


def report_into_file(inp: Path, out: Path) -> list[str]:
    write(inp / "runs", "a", make_report())
    return ["report", str(inp / "runs"), "--output", a_file(inp, "taken")]


def resume_without_config(inp: Path, out: Path) -> list[str]:
    (inp / "empty").mkdir()
    return ["run", "--resume", str(inp / "empty")]


FLOAT_AT_DEPTH = "model:\n  kwargs:\n    deep: " + "[" * 5000 + "]" * 5000 + "\n"
FAKE_1CH = ["data.name=fake", "data.fake.size=40", "data.fake.image_shape=[1,8,8]"]

CASES = [
    # --- the config file ----------------------------------------------------------------
    Case("missing_config", lambda inp, out: ["run", str(inp / "nope.yaml")], ("nope.yaml", "no such config file")),
    Case("config_is_a_folder", lambda inp, out: ["run", str(inp)], ("cannot read config",)),
    Case("config_never_ends", lambda inp, out: ["run", "/dev/zero", "--output", str(out)],
         ("/dev/zero", "larger than")),
    Case("config_not_utf8", lambda inp, out: ["run", _binary(inp)], ("not UTF-8",)),
    Case("malformed_yaml", config_file("loader: {batch_size: 8\n"), ("c.yaml", "malformed YAML at line")),
    Case("top_level_not_mapping", config_file("- 1\n- 2\n"), ("c.yaml", "mapping of sections")),
    Case("duplicate_key", config_file("optim:\n  lr: 0.1\n  lr: 0.2\n"), ("c.yaml", "optim.lr: the key is given twice", "lines 2 and 3")),
    Case("duplicate_section", config_file("loader: {batch_size: 8}\nseed: 1\nloader: {batch_size: 9}\n"),
         ("loader", "lines 1 and 3")),
    Case("nested_thousands_deep", config_file(FLOAT_AT_DEPTH), ("c.yaml", "nested more than"), process=True),
    Case("unknown_key", config_file("loader:\n  batch_sise: 8\n"), ("loader.batch_sise: unknown key", "batch_size")),
    Case("wrong_type", config_file("loader:\n  batch_size: many\n"), ("loader.batch_size: expected an integer",)),
    Case("exponent_int_for_int", config_file("loader:\n  batch_size: 1e2\n"), ("loader.batch_size", "100.0")),
    Case("two_config_files", lambda inp, out: ["run", CONFIG, CONFIG], ("a second config file",)),
    Case("validate_duplicate_key", lambda inp, out: ["validate", text(inp, "c.yaml", "seed: 1\nseed: 2\n")],
         ("seed", "lines 1 and 2")),
    # --- values -------------------------------------------------------------------------
    Case("seed_beyond_32_bits", run("seed=4294967296"), ("seed", "2**32")),
    Case("negative_seed", run("seed=-1"), ("seed",)),
    Case("collective_timeout_1e20", run("runtime.collective_timeout_s=1.0e+20"), ("runtime.collective_timeout_s",)),
    Case("nan_learning_rate", run("optim.lr=.nan"), ("optim.lr", "finite")),
    Case("lr_not_a_number", run("optim.lr=fast"), ("optim.lr", "expected a number")),
    Case("std_subnormal", run("data.transforms.std=[1.0e-320]"), ("data.transforms.std",)),
    Case("resize_one_value_list", run("data.transforms.resize=[8]"), ("data.transforms.resize",)),
    Case("split_not_summing_to_1", run("data.split={train: 0.7, dev: 0.2, test: 0.2}"), ("data.split", "sum to 1")),
    Case("persistent_without_workers", run("loader.persistent_workers=true"), ("loader.persistent_workers",)),
    Case("unknown_model", run("model.name=transformer9000"), ("model.name: unknown model",)),
    Case("unknown_data_set", run("data.name=imagenet"), ("data.name: unknown data set",)),
    Case("freeze_without_pretrained", run("model.freeze_backbone=true"), ("model.freeze_backbone",)),
    Case("compile_without_warmup", run("runtime.compile.enabled=true", "measure.warmup_steps=0"),
         ("measure.warmup_steps",)),
    # --- overrides ----------------------------------------------------------------------
    Case("override_names_the_override", run("loader.batch_size=0"), ("override 'loader.batch_size=0'",),
         absent=("digits_cnn.yaml",)),
    Case("override_after_output",
         lambda inp, out: ["run", CONFIG, "--output", str(out), "loader.batch_size=0"],
         ("override 'loader.batch_size=0'",)),
    Case("override_into_a_scalar", run("seed.x=1"), ("override 'seed.x=1'", "not a section")),
    Case("override_bad_yaml", run("loader.batch_size=[1"), ("override", "not valid YAML")),
    Case("grad_accum_zero", run("train.grad_accum_steps=0"), ("train.grad_accum_steps", ">= 1", "got 0")),
    Case("grad_accum_beyond_the_epoch", run("data.subset=360", "loader.batch_size=64", "train.grad_accum_steps=8"),
         ("train.grad_accum_steps: 8", "the 4 micro-batches", "loader.batch_size 64")),
    Case("grad_accum_beyond_each_ranks_epoch",
         lambda inp, out: ["launch", "--mode", "ddp", "--nproc", "2", CONFIG, "data.subset=360", "loader.batch_size=64",
                           "train.grad_accum_steps=3", "--output", str(out)],
         ("train.grad_accum_steps: 3", "the 2 micro-batches", "each of 2 ranks")),
    Case("resume_without_config", resume_without_config, ("--resume", "no config.yaml")),
    # --- data ---------------------------------------------------------------------------
    Case("split_train_rounds_to_0", run("data.subset=2", "data.split={train: 0.2, dev: 0.4, test: 0.4}"),
         ("data.split.train", "no training sample")),
    Case("digits_root_is_a_file", run_with(lambda inp: [f"data.root={a_file(inp)}"]), ("data.root", "is a file")),
    Case("imagefolder_root_is_a_file", run_with(lambda inp: ["data.name=imagefolder", f"data.root={a_file(inp)}"]),
         ("data.root", "is a file")),
    Case("imagefolder_without_root", run("data.name=imagefolder"), ("data.root", "needs root")),
    Case("imagefolder_missing_root", run_with(lambda inp: ["data.name=imagefolder", f"data.root={inp / 'nope'}"]),
         ("data.root", "not a folder")),
    Case("unwritable_cache", run("data.subset=40"), ("HARNESS_CACHE", "cannot write the digits cache"),
         env={"HARNESS_CACHE": "{in}/cache-file"}),
    Case("mixed_image_sizes", folder_run({"a": [(8, 8), (8, 8)], "b": [(8, 8), (12, 10)]}),
         ("data.transforms.resize", "a/00.png is 8x8", "b/01.png is 12x10")),
    Case("single_class_folder", folder_run({"only": [(8, 8)] * 4}), ("data.root", "at least 2")),
    Case("empty_class_folder", folder_run({"a": [(8, 8)] * 2, "b": []}), ("data.root", "no valid file")),
    Case("symlink_loop", run_with(symlink_loop), ("data.root", "symlink loop")),
    Case("corrupt_image", run_with(lambda inp: ["data.name=imagefolder", f"data.root={_corrupt(inp)}"]),
         ("data.corrupt_images", "bad.png")),
    Case("mean_for_3_channels_on_1", run(*FAKE_1CH, "data.transforms.mean=[0.5,0.5,0.5]",
                                         "data.transforms.std=[0.5,0.5,0.5]"),
         ("data.transforms.mean", "1 channel(s); give 1"), absent=("1 or 1",)),
    Case("drop_last_leaves_nothing", run("data.subset=20", "loader.drop_last=true"), ("loader.drop_last",)),
    # --- models -------------------------------------------------------------------------
    Case("cnn_on_tiny_images", run("data.name=fake", "data.fake.size=40", "data.fake.image_shape=[1,2,2]"),
         ("cnn", "at least 4x4", "2x2")),
    Case("kwargs_the_model_rejects", run("model.name=fixtures.bad_models:RejectsKwargs", "model.kwargs={width: -1}"),
         ("fixtures.bad_models:RejectsKwargs(**model.kwargs)", "ValueError", "width must be positive")),
    Case("kwargs_the_model_lacks", run("model.kwargs={depth: 3}"), ("model.kwargs.depth",)),
    Case("model_init_raises", run("model.name=fixtures.bad_models:InitRaises"), ("RuntimeError", "cannot be built")),
    Case("model_without_parameters", run("model.name=fixtures.bad_models:NoParameters"), ("no parameters",)),
    Case("model_exits_in_init", run("model.name=fixtures.bad_models:ExitsInInit"), ("SystemExit(5)", "sys.exit"),
         process=True),
    Case("model_exits_at_import", run_with(exits_at_import), ("exits_at_import", "SystemExit(4)"), process=True),
    Case("model_module_missing", run("model.name=no_such_module:Net"), ("model.name", "cannot import")),
    Case("model_not_a_module", run("model.name=fixtures.custom_models:NotAModule"), ("not an nn.Module",)),
    Case("model_layers_do_not_fit", run("model.name=fixtures.custom_models:WrongWidth"), ("layer 'fc2'",)),
    Case("model_output_wrong_classes", run("model.name=fixtures.custom_models:WrongClasses"), ("output has shape",)),
    Case("pretrained_missing", run_with(lambda inp: [f"model.pretrained={inp / 'w.pt'}"]),
         ("model.pretrained", "not a file")),
    Case("pretrained_not_a_state_dict", run_with(lambda inp: [f"model.pretrained={text(inp, 'w.pt', 'garbage')}"]),
         ("model.pretrained", "not a loadable state_dict")),
    Case("fake_with_one_class", run("data.name=fake", "data.fake.num_classes=1"), ("data.fake.num_classes",)),
    Case("digits_root_not_a_cache", run_with(lambda inp: [f"data.root={Path(a_file(inp)).parent}"]),
         ("data.root", "not a complete digits cache")),
    Case("mnist_files_missing", run_with(lambda inp: ["data.name=mnist", f"data.root={inp}"]),
         ("data.root", "mnist files not found")),
    Case("target_accuracy_over_1", run("train.target_accuracy=1.5"), ("train.target_accuracy",)),
    Case("stop_at_target_without_target", run("train.stop_at_target=true", "train.target_accuracy=null"),
         ("train.stop_at_target",)),
    # --- modes and output ---------------------------------------------------------------
    Case("repeats_refuse_resume", lambda inp, out: ["run", CONFIG, "measure.repeats=2", "measure.repeat_unit=run",
                                                    "--resume", str(inp)], ("measure.repeat_unit",)),
    Case("fp16_on_cpu", run("runtime.device=cpu", "runtime.precision=fp16"), ("runtime.precision",)),
    Case("output_under_a_file", lambda inp, out: ["run", CONFIG, "data.subset=40", "--output",
                                                   str(Path(a_file(inp)) / "out")], ("output.dir: cannot write",)),
    Case("launch_bad_config", lambda inp, out: ["launch", "--mode", "ddp", "--nproc", "2", CONFIG,
                                                 "loader.batch_size=-4", "--output", str(out)],
         ("loader.batch_size",)),
    # --- sweep, report, compare ---------------------------------------------------------
    Case("sweep_time_limit_nan", sweep_file("cells: [{seed: 1}]\ntime_limit_s: .nan\n"), ("time_limit_s", "finite")),
    Case("sweep_unknown_key", sweep_file("cells: [{seed: 1}]\nretries: 3\n"), ("retries: unknown key",)),
    Case("sweep_bad_cell", sweep_file("cells: [{loader.batch_size: -4}]\n"), ("cell", "loader.batch_size")),
    Case("sweep_duplicate_key", sweep_file("cells: [{seed: 1}]\ncells: [{seed: 2}]\n"), ("cells", "given twice")),
    Case("report_output_is_a_file", report_into_file, ("--output", "is a file")),
    Case("compare_unknown_schema",
         lambda inp, out: ["compare", _report(inp), text(inp, "bad.yaml", "schema_version: 99\n")],
         ("bad.yaml", "schema_version 99")),
    Case("report_unknown_schema", lambda inp, out: ["report", text(inp, "bad.yaml", "schema_version: 99\n"),
                                                     "--output", str(out)], ("bad.yaml",)),
    Case("sweep_grid_and_cells", sweep_file("cells: [{seed: 1}]\ngrid: {seed: [1, 2]}\n"), ("exactly one of grid",)),
    Case("compare_bad_threshold", lambda inp, out: ["compare", _report(inp), _report(inp), "--threshold", "speed=5"],
         ("--threshold speed=5",)),
    Case("zoo_kwargs_fail_at_any_size", run("model.name=torchvision:efficientnet_b0", "data.transforms.grayscale=false",
                                            "model.kwargs={stochastic_depth_prob: 1.5}"),
         ("model.kwargs", "stochastic_depth", "StochasticDepth", "at any image size"), absent=("resize",)),
    Case("predict_grey_png_on_an_rgb_run", lambda inp, out: ["predict", _rgb_run(inp), _png(inp, "grey.png", "L")],
         ("grey.png", "1-channel", "3x8x8")),
    Case("model_pt_holding_a_list", lambda inp, out: ["predict", _rgb_run(inp, [1.0, 2.0]),
                                                       _png(inp, "rgb.png", "RGB")],
         ("model.pt", "'features.0.weight' holds a list, not a tensor")),
    Case("pretrained_holding_a_string",
         run_with(lambda inp: [f"model.pretrained={_torch_file(inp, _digits_state_with('abc'))}"]),
         ("model.pretrained", "w.pt", "'features.0.weight' holds a str, not a tensor")),
    # --- output folders: locks, earlier runs, special places ----------------------------
    Case("lock_holds_binary", lambda inp, out: _into(_locked(inp, b"\xff\xfe\x00garbage\x89")),
         (".lock", "not a lock this harness wrote")),
    Case("lock_is_a_folder", lambda inp, out: _into(_locked(inp, None)), (".lock", "a folder, not a lock file")),
    Case("output_through_a_link_to_proc_self", lambda inp, out: _into(_link(inp, "/proc/self")),
         ("output.dir: cannot write",)),
    Case("output_under_proc_self_fd", lambda inp, out: _into(_link(inp, "/proc/self") + "/fd"),
         ("output.dir: cannot write",)),
    Case("bench_inference_into_proc_self", lambda inp, out: ["bench-inference", CONFIG, "data.subset=40",
                                                              "--output", _link(inp, "/proc/self")],
         ("output.dir: cannot write",)),
    Case("run_into_an_earlier_run", lambda inp, out: _into(_used(inp)),
         ("holds an earlier run (report.yaml)", "--resume", "--overwrite")),
    Case("inference_into_an_earlier_run", lambda inp, out: _into(_used(inp), "scenario=inference"),
         ("holds an earlier run (report.yaml)", "--overwrite"), absent=("--resume",)),
    Case("overwrite_with_resume", lambda inp, out: ["run", "--resume", _used(inp), "--overwrite"],
         ("--overwrite: not with --resume",)),
    # --- files a harness command wrote, read back (issue 23) -----------------------------
    Case("evaluate_output_is_a_file", lambda inp, out: ["evaluate", _run_folder(inp), "--output", a_file(inp)],
         ("--output", "is a file", "eval.yaml")),
    Case("evaluate_output_under_a_file",
         lambda inp, out: ["evaluate", _run_folder(inp), "--output", str(Path(a_file(inp)) / "out")],
         ("--output", "is a file")),
    Case("evaluate_target_is_a_folder", lambda inp, out: ["evaluate", _run_folder(inp, folder="eval-test.yaml")],
         ("eval-test.yaml is a folder",)),
    Case("evaluate_report_is_a_list", lambda inp, out: ["evaluate", _run_folder(inp, report="- 1\n- 2\n")],
         ("report.yaml", "not a report", "got list")),
    Case("evaluate_report_nested_deep", lambda inp, out: ["evaluate", _run_folder(inp, report=DEEP_REPORT)],
         ("report.yaml", "nested more than 72 levels")),
    Case("predict_report_nested_deep",
         lambda inp, out: ["predict", _run_folder(inp, report=DEEP_REPORT, card=False), a_file(inp, "x.png")],
         ("report.yaml", "nested more than 72 levels")),
    Case("compare_report_nested_deep", lambda inp, out: ["compare", _report(inp), text(inp, "deep.yaml", DEEP_REPORT)],
         ("deep.yaml", "nested more than 72 levels")),
    Case("compare_report_nested_100", lambda inp, out: ["compare", _report(inp), text(inp, "deep.yaml", DEEP_100)],
         ("deep.yaml", "nested more than 72 levels", "line 2")),
    Case("report_report_is_a_list", lambda inp, out: ["report", text(inp, "list.yaml", "- 1\n"), "--output", str(out)],
         ("list.yaml", "got list")),
    Case("report_report_nested_deep", lambda inp, out: ["report", _run_folder(inp, report=DEEP_REPORT),
                                                         "--output", str(out)], ("report.yaml", "nested more than")),
    Case("compare_report_is_a_folder", lambda inp, out: ["compare", _report(inp), _folder_named(inp, "x.yaml")],
         ("x.yaml", "no report.yaml below")),
    Case("compare_report_not_utf8", lambda inp, out: ["compare", _report(inp), _binary(inp)],
         ("binary.yaml", "not UTF-8")),
    Case("compare_report_is_dev_zero", lambda inp, out: ["compare", _report(inp), "/dev/zero"],
         ("/dev/zero", "not a regular file")),
    Case("resume_metrics_step_not_a_number",
         lambda inp, out: ["run", "--resume", _trained(inp, '"abc"'), "train.epochs=2"],
         ("metrics.jsonl line 2", "step is 'abc'")),
    Case("resume_metrics_not_utf8", lambda inp, out: ["run", "--resume", _trained(inp, None), "train.epochs=2"],
         ("metrics.jsonl line 2", "not UTF-8")),
    # --- the language-model workload (issue 26) -----------------------------------------
    Case("text_task_with_an_image_model", gpt_run("model.name=cnn", "model.kwargs={}"),
         ("model.name", "cnn is an image model", "data.name: text")),
    Case("gpt_on_images", run("model.name=gpt"), ("model.name", "gpt is a language model", "digits")),
    Case("causal_lm_task_on_images", run("task=causal_lm"), ("task", "causal_lm needs a text corpus")),
    Case("classification_task_on_text", gpt_run("task=classification"), ("task", "classification", "causal_lm")),
    Case("unknown_task", run("task=regression"), ("task", "unknown task 'regression'")),
    Case("seq_len_on_images", run("data.seq_len=64"), ("data.seq_len", "only a text corpus")),
    Case("seq_len_past_the_models_positions", gpt_run("data.seq_len=128"),
         ("data.seq_len", "128 is longer than", "model.kwargs.seq_len = 64")),
    Case("seq_len_past_the_corpus", lambda inp, out: ["run", GPT_CONFIG, f"data.root={text(inp, 'c.txt', 'short')}",
                                                      "--output", str(out)],
         ("data.seq_len", "c.txt", "fewer than one window")),
    Case("two_targets", gpt_run("train.target_loss=2.0", "train.target_accuracy=0.5"),
         ("train.target_loss", "not both")),
    Case("text_on_device_resident", gpt_run("loader.kind=device_resident"), ("loader.kind", "text corpus")),
    Case("text_channels_last", gpt_run("runtime.channels_last=true"), ("runtime.channels_last", "language model")),
    Case("text_corpus_missing", gpt_run("data.root=/nonexistent/corpus.txt"), ("data.root", "does not exist")),
    Case("text_corpus_empty", lambda inp, out: ["run", GPT_CONFIG, f"data.root={text(inp, 'e.txt', '')}",
                                                "--output", str(out)], ("data.root", "is empty")),
    Case("tokenizer_does_not_parse", lambda inp, out: ["run", GPT_CONFIG, f"data.tokenizer={text(inp, 't.json', '{')}",
                                                       "--output", str(out)],
         # tokenizers is the `text` extra: without it the same file is refused for that reason
         ("data.tokenizer", "t.json") if importlib.util.find_spec("tokenizers")
         else ("data.tokenizer", "needs the tokenizers package")),
    # --- trackers: what would stop them is refused before the run writes anything ---------
    Case("tracking_project_dotdot", run("tracking.project=.."), ("tracking.project", "plain name")),
    Case("tracking_project_absolute", run("tracking.project=/tmp/elsewhere"), ("tracking.project", "plain name")),
    Case("tracking_project_300_chars", run("tracking.project=" + "p" * 300), ("tracking.project", "255 bytes")),
    Case("tensorboard_folder_is_a_file", lambda inp, out: ["run", CONFIG, "tracking.log_with=[tensorboard]",
                                                           "--output", _run_folder_with_file(inp, "harness")],
         ("tracking.project", "harness exists and is not a folder")),
    Case("tensorboard_kwarg_unknown", run("tracking.log_with=[tensorboard]",
                                          "tracking.init_kwargs={tensorboard: {bogus: 1}}"),
         ("tracking.init_kwargs.tensorboard.bogus", "no such argument", "flush_secs")),
    Case("tensorboard_kwarg_wrong_type", run("tracking.log_with=[tensorboard]",
                                             "tracking.init_kwargs={tensorboard: {filename_suffix: 3}}"),
         ("tracking.init_kwargs.tensorboard.filename_suffix", "expected str")),
    Case("tensorboard_kwarg_the_harness_sets", run("tracking.log_with=[tensorboard]",
                                                   "tracking.init_kwargs={tensorboard: {log_dir: /tmp/x}}"),
         ("tracking.init_kwargs.tensorboard.log_dir", "set by the harness")),
    # --- the command line: argparse's own errors, one line naming the option ---------------
    Case("launch_nnodes_not_an_int", lambda inp, out: ["launch", "--mode", "ddp", "--nnodes", "abc", CONFIG,
                                                        "--output", str(out)],
         ("harness launch", "--nnodes", "invalid int value: 'abc'"), process=True),
    Case("evaluate_unknown_split", lambda inp, out: ["evaluate", str(inp), "--split", "nope", "--output", str(out)],
         ("--split", "invalid choice: 'nope'"), process=True),
    # `harness run` alone would train the built-in defaults into runs/latest: it asks for a config
    Case("run_without_config", lambda inp, out: ["run", "--output", str(out)], ("harness run: needs CONFIG",)),
    Case("run_progress_interval_zero", run("output.progress_interval_s=0"), ("output.progress_interval_s",)),
]


def _digits_state_with(first) -> dict:
    """The recipe's own model's state_dict (digits: 1x8x8, 10 classes), its first tensor replaced."""
    from harness.config.run import load_config
    from harness.models.registry import build_model

    state = build_model(load_config(CONFIG).model, (1, 8, 8), 10)[0].state_dict()
    state[next(iter(state))] = first
    return state


def _torch_file(inp: Path, obj, name: str = "w.pt") -> str:
    import torch

    torch.save(obj, inp / name)
    return str(inp / name)


def _png(inp: Path, name: str, mode: str) -> str:
    Image.new(mode, (8, 8)).save(inp / name)
    return str(inp / name)


def _rgb_run(inp: Path, first=None) -> str:
    """A run folder as `harness run` leaves it, of a 3-channel recipe whose data set (fake)
    hands its images as they are; ``first``: what model.pt holds in place of its first tensor."""
    import json

    import yaml

    from harness.config.run import load_config, to_dict
    from harness.models.registry import build_model

    run = inp / "run"
    run.mkdir()
    cfg = load_config(CONFIG, ["data.name=fake", "data.fake.image_shape=[3,8,8]", "data.fake.num_classes=3",
                               "data.transforms.grayscale=false", "data.transforms.mean=[0.5,0.5,0.5]",
                               "data.transforms.std=[0.5,0.5,0.5]"])
    (run / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    (run / "classes.json").write_text(json.dumps({"classes": ["0", "1", "2"], "sample_shape": [3, 8, 8]}))
    state = build_model(cfg.model, (3, 8, 8), 3)[0].state_dict()
    if first is not None:
        state[next(iter(state))] = first
    _torch_file(run, state, "model.pt")
    return str(run)


def _into(folder: str, *items: str) -> list[str]:
    return ["run", CONFIG, "data.subset=40", *items, "--output", folder]


def _locked(inp: Path, body: bytes | None) -> str:
    """A folder whose .lock is no lock: binary content, or a folder (``body`` None)."""
    folder = inp / "locked"
    folder.mkdir()
    (folder / ".lock").mkdir() if body is None else (folder / ".lock").write_bytes(body)
    return str(folder)


def _link(inp: Path, target: str) -> str:
    os.symlink(target, inp / "link")
    return str(inp / "link")


def _used(inp: Path) -> str:
    """A folder holding an earlier run's report."""
    write(inp, "used", make_report())
    return str(inp / "used")


def _binary(inp: Path) -> str:
    path = inp / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    return str(path)


def _run_folder_with_file(inp: Path, name: str) -> str:
    (inp / "run").mkdir()
    a_file(inp / "run", name)
    return str(inp / "run")


def _corrupt(inp: Path) -> str:
    root = images(inp / "images", {"a": [(8, 8)] * 3, "b": [(8, 8)] * 3})
    Path(root, "b", "bad.png").write_bytes(b"not a png")
    return root


def _report(inp: Path) -> str:
    path = inp / "r" / "report.yaml"
    if not path.exists():
        write(inp, "r", make_report())
    return str(path)


DEEP_REPORT = "schema_version: 2\nx: " + "[" * 5000 + "]" * 5000 + "\n"
DEEP_100 = "schema_version: 2\nx: " + "[" * 100 + "]" * 100 + "\n"  # under libyaml's own cap of 1000


def _run_folder(inp: Path, report: str | None = None, folder: str | None = None, card: bool = True) -> str:
    """A run folder as evaluate and predict open it (config, model card, weights never loaded)."""
    import json
    import shutil

    run = inp / "run"
    run.mkdir()
    shutil.copy(CONFIG, run / "config.yaml")
    (run / "model.pt").write_bytes(b"never loaded: every row is refused before")
    if card:
        (run / "classes.json").write_text(json.dumps({"classes": [str(d) for d in range(10)],
                                                      "sample_shape": [1, 8, 8]}))
    if report is not None:
        (run / "report.yaml").write_text(report)
    if folder is not None:
        (run / folder).mkdir()
    return str(run)


def _folder_named(inp: Path, name: str) -> str:
    (inp / name).mkdir()
    return str(inp / name)


def _trained(inp: Path, step: str | None) -> str:
    """A real one-epoch run with a checkpoint, its metrics.jsonl's second line hand-edited:
    ``step`` replaces its step, None puts a byte that is not UTF-8 in it."""
    import contextlib
    import io
    import re

    run = inp / "trained"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main(["run", CONFIG, "data.subset=120", "loader.batch_size=8", "train.epochs=1",
                     "optim.scheduler.name=none", "measure.warmup_steps=0", "output.progress=false",
                     "tracking.every_n_steps=2", "--output", str(run)])
    assert code == 0
    path = run / "metrics.jsonl"
    lines = path.read_bytes().split(b"\n")
    assert len(lines) > 3, "the run should log several lines"
    lines[1] = re.sub(rb'"step": \d+', b'"step": ' + step.encode(), lines[1]) if step else lines[1] + b"\xff"
    path.write_bytes(b"\n".join(lines))
    return str(run)


def _snapshot(folder: Path) -> dict[str, tuple]:
    """Every file and folder under ``folder`` (Python's own bytecode cache aside)."""
    return {str(p.relative_to(folder)): (p.is_dir(), None if p.is_dir() else p.stat().st_mtime_ns)
            for p in folder.rglob("*") if not p.is_symlink() and "__pycache__" not in p.parts}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path, capsys, monkeypatch):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    argv = case.argv(inp, out)
    env = {k: v.replace("{in}", str(inp)) for k, v in case.env.items()}
    if "HARNESS_CACHE" in env:
        Path(env["HARNESS_CACHE"]).write_text("a file where the cache folder would go\n")
    before = _snapshot(tmp_path)
    if case.process:
        proc = run_cli(*argv, env={"PYTHONPATH": os.pathsep.join([TESTS_PATH, str(inp)]), **env}, timeout=120)
        code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    else:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.syspath_prepend(str(inp))
        code = main(argv)
        stdout, stderr = capsys.readouterr()
    lines = stderr.splitlines()
    assert code == 2, stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-2000:]
    assert "Traceback" not in stderr
    for part in case.says:
        assert part in lines[0], lines[0]
    for part in case.absent:
        assert part not in lines[0], lines[0]
    assert stdout == ""
    assert not out.exists()
    assert _snapshot(tmp_path) == before, "the row wrote or changed a file"


def test_the_battery_covers_every_case_once():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 60


# --- not errors, but a user must be told ------------------------------------------------

def test_summary_says_why_throughput_is_missing():
    from harness.cli import _summary_table

    report = {"status": "completed", "accuracy": {}, "timing": {}, "memory": {},
              "distributed": {"distributed_type": "NO", "world_size": 1, "precision": "no"},
              "throughput": {"train_samples_per_s": None, "measured_steps": 0, "warmup_steps": 12}}
    row = next(line for line in _summary_table(report, Path("r.yaml")).splitlines()
               if line.startswith("train samples/s"))
    assert "warm-up took all 12 steps" in row and "measure.warmup_steps" in row
    report["throughput"] = {"train_samples_per_s": 1234.5, "measured_steps": 30, "warmup_steps": 2}
    assert "warm-up" not in _summary_table(report, Path("r.yaml"))


def test_a_single_process_accelerate_launch_is_pointed_at_harness_launch(monkeypatch, capsys):
    """`accelerate launch --cpu --num_processes 2` starts one process: MASTER_ADDR, no WORLD_SIZE."""
    from harness.cli import _warn_single_process_launch

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    _warn_single_process_launch()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "harness launch --mode ddp" in err
    monkeypatch.setenv("WORLD_SIZE", "2")  # a real multi-process launch
    _warn_single_process_launch()
    assert capsys.readouterr().err == ""


def test_skip_bad_skips_a_grey_png_on_an_rgb_run_and_predicts_the_others(tmp_path, capsys):
    run = _rgb_run(tmp_path)
    grey, rgb = _png(tmp_path, "grey.png", "L"), _png(tmp_path, "rgb.png", "RGB")
    assert main(["predict", run, grey, rgb, "--skip-bad", "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith(f"skipped {grey}: a 1-channel") and "Traceback" not in err
    assert [row.split(",")[0] for row in out.splitlines()[1:]] == [rgb]
