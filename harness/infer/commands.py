"""The commands that reload a finished run's model: evaluate, predict, bench-inference.

Only the parsers live here (torch-free, so ``harness --help`` stays cheap); each
command imports its module (evaluate.py, predict.py, inference.py) when it runs.
"""

from __future__ import annotations


def cmd_evaluate(args) -> int:
    from harness.infer.evaluate import cmd_evaluate as run

    return run(args)


def cmd_predict(args) -> int:
    from harness.infer.predict import cmd_predict as run

    return run(args)


def cmd_bench_inference(args) -> int:
    from harness.infer.bench import cmd_bench_inference as run

    return run(args)


def add_parsers(sub) -> None:
    """evaluate, predict, bench-inference: a finished run's model reloaded (reload.py)."""
    ev = sub.add_parser("evaluate", help="evaluate a run's model.pt on its own split or another data set; "
                                         "write eval-<split>.yaml")
    ev.add_argument("items", nargs="*", metavar="RUN_DIR [KEY=VALUE ...]",
                    help="the run's folder, and overrides such as data.name=imagefolder data.root=DIR")
    ev.add_argument("--split", choices=("test", "dev", "train", "all"),
                    help="default: test (the run's own data), all (another data set)")
    ev.add_argument("--output", metavar="DIR", help="write DIR/eval.yaml (default: RUN_DIR/eval-<split>.yaml)")
    ev.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="print the top-k classes of each image with a run's model, or the "
                                        "continuation of a prompt with a language model's")
    pr.add_argument("run_dir", metavar="RUN_DIR")
    pr.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER | PROMPT")
    pr.add_argument("--top-k", type=int, default=None,
                    help="images: classes shown (default 3); text: sample among the k likeliest tokens")
    pr.add_argument("--max-new-tokens", type=int, default=None,
                    help="text: tokens to write (default 64, or what the model's positions leave)")
    pr.add_argument("--temperature", type=float, default=0.0, help="text: 0 is greedy (default); above, sampled")
    pr.add_argument("--seed", type=int, default=0, help="text: the sampling generator's seed (default 0)")
    pr.add_argument("--format", choices=("table", "csv", "json"), default="table")
    pr.add_argument("--skip-bad", action="store_true",
                    help="predict the readable images and name the others on stderr (default: exit 2)")
    pr.set_defaults(func=cmd_predict)

    bi = sub.add_parser("bench-inference", help="measure inference latency and samples/s (scenario: inference)")
    bi.add_argument("items", nargs="+", metavar="CONFIG_OR_RUN_DIR [KEY=VALUE ...]",
                    help="a config (random weights) or a run folder (its model.pt), and overrides")
    bi.add_argument("--output", metavar="DIR", help="default: <output.dir>/inference (CONFIG) or RUN_DIR/inference")
    bi.add_argument("--overwrite", action="store_true", help="the output folder holds an earlier measurement: "
                                                             "delete its files first")
    bi.set_defaults(func=cmd_bench_inference)
