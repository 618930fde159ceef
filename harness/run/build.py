"""Set up a run: the recipe built and handed to the Accelerator.

Everything that can be bad input (config, data, model, mode) is checked in
``build`` before anything is written, so a refused run leaves no files.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from harness.errors import BadInput
from harness.run import accel, sharding
from harness.config.run import Config
from harness.data import DataBundle
from harness.data.loaders import Loaders, build_loaders
from harness.data.resident import DeviceResidentLoader
from harness.run.loop import TrainParts
from harness.models.registry import build_causal_lm, build_model
from harness.run.optim import build_loss, build_optimizer, build_scheduler
from harness.run import act_ckpt
from harness.data.preprocess import recipe_data
from harness.data.text import TextData
from harness.task import Task
from harness.task.load import build_task


@dataclass
class Built:
    cfg: Config
    accelerator: object
    precision: accel.Precision
    data: DataBundle | TextData
    loaders: Loaders
    parts: TrainParts
    model_info: dict
    steps_per_epoch: int
    """Optimizer steps per epoch in a single process (before sharding): micro-batches over
    train.grad_accum_steps, a short last group counted."""
    task: Task
    shards_itself: bool = False
    """runtime.sharding: fsdp2 on the CPU: the harness applied fully_shard (sharding.py), the
    model stays out of ``accelerator.prepare`` and its checkpoints are the ranks' shards."""
    unsharded: object | None = None
    """Under fsdp2: the model before sharding, on the meta device, for the FLOP
    count, which runs on one rank (a sharded forward needs every rank)."""

    def shards(self) -> tuple | None:
        """(model, optimizer) whose checkpoints are the ranks' shards (``shards_itself``), else None."""
        return (self.parts.model, self.parts.optimizer) if self.shards_itself else None

    @property
    def rank_steps_per_epoch(self) -> int:
        """This process's optimizer steps per epoch: its loader's micro-batches (sharded once
        prepared) in groups of train.grad_accum_steps, a short last group counted."""
        return -(-len(self.loaders.train) // self.cfg.train.grad_accum_steps)

    @property
    def text(self) -> bool:
        """A language model's run: windows of a text corpus, throughput in tokens."""
        return isinstance(self.data, TextData)


def recipe_model(cfg: Config, data: DataBundle | TextData):
    """(model, info) that fits ``data``: an image model for its shape and classes, a language
    model for its vocabulary and window. Every command that builds the recipe's model
    (run, validate, launch's preflight) builds it here, with its blocks checkpointed under
    runtime.activation_checkpointing (BadInput when it has none)."""
    if isinstance(data, TextData):
        model, info = build_causal_lm(cfg.model, data.vocab_size, data.seq_len)
    else:
        model, info = build_model(cfg.model, data.sample_shape, data.num_classes)
    info["activation_checkpointing"] = act_ckpt.apply(model, cfg.model.name) \
        if cfg.runtime.activation_checkpointing else None
    return model, info


def check_grad_accum(accum: int, micro_batches: int, world: int, batch_size: int) -> None:
    """train.grad_accum_steps may not exceed the micro-batches of an epoch on one rank: every
    optimizer step would then be the epoch's one short group, never the K asked for."""
    per_rank = -(-micro_batches // world)
    if accum > per_rank:
        ranks = f" on each of {world} ranks" if world > 1 else ""
        raise BadInput(f"train.grad_accum_steps: {accum} is more than the {per_rank} micro-batches (loader.batch_size "
                       f"{batch_size}) of an epoch{ranks}; lower it to at most {per_rank}",
                       key="train.grad_accum_steps")


def check_grad_accum_of(cfg: Config, data: DataBundle | TextData, world: int) -> None:
    """``check_grad_accum`` before any loader exists (launch's preflight, for all ranks at once):
    the micro-batches of an epoch counted from the train split's size."""
    n, bs = len(data.train), cfg.loader.batch_size
    check_grad_accum(cfg.train.grad_accum_steps, n // bs if cfg.loader.drop_last else -(-n // bs), world, bs)


def build(cfg: Config, clock=None) -> Built:
    """The run's parts before ``prepare``; ``clock`` (measure/startup.SetupClock) is told where
    building the Accelerator, the data and the model end."""
    from accelerate.utils import set_seed

    from harness.observe.tracking import accelerator_kwargs

    use_cuda = accel.resolve_device(cfg.runtime)
    plugin = None
    if use_cuda:  # the plugin is for CUDA only; on the CPU the harness shards (below)
        plugin = sharding.gpu_plugin(cfg.runtime, cfg.model.name, accel.resolve_precision(cfg.runtime.precision, True))
    accelerator, precision = accel.build_accelerator(cfg.runtime, **accelerator_kwargs(cfg.tracking, cfg.output.dir),
                                                     grad_accum_steps=cfg.train.grad_accum_steps, fsdp_plugin=plugin)
    sharding.check(cfg.runtime, accelerator.num_processes, use_cuda, accelerator.distributed_type.value)
    set_seed(cfg.seed)
    mark = clock.mark if clock is not None else (lambda phase: None)
    mark("accelerator_s")
    with accelerator.main_process_first():
        data = recipe_data(cfg)
    loaders = build_loaders(data.train, data.dev, data.test, accel.pin_on_gpu(cfg.loader, accelerator), cfg.seed)
    mark("data_s")
    text = isinstance(data, TextData)
    task = build_task(cfg.task, label_smoothing=cfg.loss.label_smoothing,
                      **({"bytes_per_token": data.bytes_per_token} if text else {}))
    set_seed(cfg.seed)  # initial weights do not depend on what the data code drew
    model, info = recipe_model(cfg, data)
    if cfg.runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    info["memory_format"] = "channels_last" if cfg.runtime.channels_last else "contiguous"
    accum = cfg.train.grad_accum_steps
    check_grad_accum(accum, len(loaders.train), accelerator.num_processes, cfg.loader.batch_size)
    steps_per_epoch = -(-len(loaders.train) // accum)
    shards_itself = cfg.runtime.sharding == "fsdp2" and not use_cuda
    unsharded = copy.deepcopy(model).to("meta") if cfg.runtime.sharding == "fsdp2" else None
    if shards_itself:
        model = sharding.shard_on_cpu(model, precision, accelerator.num_processes)
    optimizer = build_optimizer(cfg.optim, model)  # over the shards, when sharded
    scheduler = build_scheduler(cfg.optim, optimizer, steps_per_epoch, cfg.train.epochs)
    parts = TrainParts(accelerator, model, optimizer, scheduler,
                       build_loss(cfg.loss), build_loss(cfg.loss, reduction="none"), task, accum)
    mark("model_s")
    return Built(cfg, accelerator, precision, data, loaders, parts, info, steps_per_epoch, task,
                 shards_itself=shards_itself, unsharded=unsharded)


def _prepare_core(b: Built, *loaders):
    """Hand model, optimizer, scheduler and ``loaders`` to the Accelerator; the prepared loaders."""
    p = b.parts
    # A model the harness sharded itself stays out: under MULTI_CPU Accelerate would wrap it in DDP.
    models = [] if b.shards_itself else [p.model]
    core = [*models, p.optimizer] + ([p.scheduler] if p.scheduler is not None else [])
    prepared = list(b.accelerator.prepare(*core, *loaders))
    if models:
        p.model = prepared.pop(0)
    p.optimizer = prepared[0]
    if p.scheduler is not None:
        p.scheduler = prepared[1]
    return prepared[len(core) - len(models):]


def prepare(b: Built) -> None:
    """Hand model, optimizer, loaders and scheduler to the Accelerator."""
    acc, ld = b.accelerator, b.loaders
    if isinstance(ld.train, DeviceResidentLoader):
        _prepare_device_resident(b)
        return
    (ld.train,) = _prepare_core(b, ld.train)
    sharding.verify(b.cfg.runtime, b.parts.model)
    if ld.dev is not None:
        ld.dev = acc.prepare(ld.dev)
    if ld.test is not None:
        ld.test = acc.prepare(ld.test)


def _prepare_device_resident(b: Built) -> None:
    """loader.kind=device_resident: the loaders stay out of ``accelerate.prepare``.

    Wrapping them would re-batch and copy tensors that are already on the device.
    The train loader takes its rank's shard itself; under DDP the dev/test tensors
    go back through an ordinary DataLoader so Accelerate shards them and
    ``gather_for_metrics`` drops its padding, exactly as on the DataLoader path.
    """
    acc, ld = b.accelerator, b.loaders
    _prepare_core(b)
    sharding.verify(b.cfg.runtime, b.parts.model)
    ld.train = ld.train.to(acc.device).shard(acc.process_index, acc.num_processes)
    for name in ("dev", "test"):
        loader = getattr(ld, name)
        if loader is None:
            continue
        setattr(ld, name, loader.to(acc.device) if acc.num_processes == 1 else acc.prepare(loader.as_dataloader()))
