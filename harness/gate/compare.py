"""``harness compare``: is the candidate worse than the baseline, beyond noise?

Each side is a report.yaml, a sweep.yaml (what ``harness sweep`` writes, or any file
with a top-level ``cells:`` list naming each cell's ``report``) or a folder (every
report.yaml below it). Reports are matched into cells by what they compute: the
``recipe_hash`` (``config_hash`` for reports older than it) plus the distributed
type and world size, which the config does not hold. Several reports of one cell
are replicates.

Every cell is accounted for: a candidate cell that did not complete is ``failed``,
a baseline cell with no candidate ``missing``, a candidate cell with no baseline
``new``; each fails the gate unless allowed. harness/gate/verdicts.py judges each
metric. Exit status: 0 pass, 1 the gate fails, 2 bad input. docs/compare.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.report import conditions
from harness.config.recipe import differing_keys
from harness.report.figures import dig
from harness.report.sources import Loaded
from harness.report import run_mode
from harness.report.run_mode import mode_label  # ``ddp gloo ×2 bf16``: the mode's one name
from harness.gate import lm_inference as lm_bench
from harness.gate.verdicts import METRICS, OPTIONAL, REGRESSION, SUSPICIOUS, judge, replicates

EXIT_OK, EXIT_FAILED = 0, 1
LAYOUT = ("runtime.sharding", "train.grad_accum_steps", "runtime.activation_checkpointing")
"""The step's layout in ``_mode_key`` (run_mode.layout), by the config keys that set it."""
FAILED, MISSING, NEW = "failed", "missing", "new"


# --------------------------------------------------------------------------- cells

def _mode_key(report: dict) -> tuple:
    """What the config does not hold but a cell's identity needs: the mode, and the
    scenario (an inference report never pairs with a training one; none: training).
    Then the step's layout (sharding, micro-batches per step, activation checkpointing),
    read from what ran as well as from the config: a run that shards, accumulates or
    recomputes runs differently from one that does not, so they are never one cell
    (4 micro-batches of 8 and one batch of 32 differ here and in loader.batch_size);
    a report older than these keys reads as none, 1, off."""
    d = report.get("distributed") or {}
    return (d.get("distributed_type"), d.get("world_size"), report.get("scenario") or "training",
            *run_mode.layout(report))


def cell_label(report: dict) -> str:
    bs = dig(report, "config.loader.batch_size")
    if report.get("scenario") == "inference":
        bs = ",".join(str(b) for b in dig(report, "config.inference.batch_sizes") or []) or None
    ident = report.get("recipe_hash") or report.get("config_hash") or "?"
    label = f"{report.get('name') or '?'} bs={bs if bs is not None else '?'} {mode_label(report)} #{str(ident)[:8]}"
    return f"{label} inference" if report.get("scenario") == "inference" else label


@dataclass
class Cell:
    key: tuple
    label: str
    loaded: list[Loaded] = field(default_factory=list)

    @property
    def reports(self) -> list[dict]:
        return [x.report for x in self.loaded if x.report is not None]

    @property
    def completed(self) -> list[dict]:
        return [r for r in self.reports if r.get("status") == "completed"]

    @property
    def broken(self) -> list[str]:
        """Why each report (or sweep row) of the cell did not complete."""
        out = []
        for x in self.loaded:
            if x.report is None:
                out.append(x.stub)
            elif x.report.get("status") != "completed":
                err = " ".join(str(x.report.get("error") or "no error recorded").split())
                out.append(f"{x.report['status']}: {err[:160]} ({x.path})")
        return out

    @property
    def config(self) -> dict:
        r = self.reports
        return (r[0].get("config") or {}) if r else {}

    def hardware(self) -> tuple:
        r = (self.reports or [{}])[0]
        return (dig(r, "environment.comparability.cpu_model"), dig(r, "environment.comparability.gpu_model"))


def _identity(report: dict) -> tuple:
    """recipe_hash where the report has it; config_hash (older reports) otherwise."""
    if report.get("recipe_hash"):
        return ("recipe", report["recipe_hash"], *_mode_key(report))
    return ("config", report.get("config_hash"), *_mode_key(report))


def group(loaded: list[Loaded]) -> dict[tuple, Cell]:
    cells: dict[tuple, Cell] = {}
    for item in loaded:
        if item.report is None:
            key = ("sweep-row", str(item.path), item.stub)
            cells.setdefault(key, Cell(key, item.stub.split(":")[0])).loaded.append(item)
            continue
        key = _identity(item.report)
        cells.setdefault(key, Cell(key, cell_label(item.report))).loaded.append(item)
    return cells


def _config_keys(cell: Cell) -> set:
    return {("config", r.get("config_hash"), *_mode_key(r)) for r in cell.reports}


def match(bcells: dict, ccells: dict) -> list[tuple[Cell, Cell]]:
    """Pairs by recipe_hash; a cell whose reports predate it pairs by config_hash."""
    pairs, taken = [], set()
    for bk, bc in bcells.items():
        partner = ccells.get(bk) if bk[0] == "recipe" else None
        if partner is None:
            partner = next((cc for ck, cc in ccells.items() if ck not in taken and ck[0] != "sweep-row"
                            and (bk[0] == "config" or ck[0] == "config") and _config_keys(bc) & _config_keys(cc)),
                           None)
        if partner is not None and partner.key not in taken:
            pairs.append((bc, partner))
            taken.add(partner.key)
    return pairs


def nearest(cell: Cell, others: list[Cell]) -> str:
    """The closest cell on the other side and the dotted keys in which it differs."""
    if not cell.reports or not others:
        return "nothing to match on the other side"
    best, best_keys = None, None
    for other in others:
        if not other.reports:
            continue
        keys = differing_keys(cell.config, other.config)
        if _mode_key(cell.reports[0])[:2] != _mode_key(other.reports[0])[:2]:
            keys = ["distributed (type, world size)"] + keys
        if _mode_key(cell.reports[0])[2] != _mode_key(other.reports[0])[2]:
            keys = ["scenario"] + keys
        for name, a, b in zip(LAYOUT, _mode_key(cell.reports[0])[3:], _mode_key(other.reports[0])[3:]):
            if a != b and name not in keys:
                keys = [name] + keys
        if best_keys is None or len(keys) < len(best_keys):
            best, best_keys = other, keys
    if best is None:
        return "nothing to match on the other side"
    if not best_keys:
        return f"nearest {best.label}: same config, other data content (files under data.root)"
    shown = ", ".join(best_keys[:6]) + (f" and {len(best_keys) - 6} more" if len(best_keys) > 6 else "")
    return f"nearest {best.label} differs in {shown}"


# --------------------------------------------------------------------------- rows

@dataclass
class Row:
    cell: str
    metric: str
    baseline: float | None
    candidate: float | None
    change: str
    threshold: str
    verdict: str
    note: str
    guarded: bool = True
    conditions: str = ""
    """For a timing: what qualifies either side (``candidate: contended 62%``); empty when both were quiet."""
    contended: bool = False
    """A timing where either side was contended: marked, and ``--strict`` fails it."""


@dataclass
class Options:
    thresholds: dict[str, float] = field(default_factory=dict)
    allow_missing: bool = False
    allow_new: bool = False
    strict: bool = False


@dataclass
class Comparison:
    baseline: str
    candidate: str
    rows: list[Row]
    cells: int
    """Matched cells whose metrics were compared."""
    hardware: list[str]
    """One line per matched cell whose baseline and candidate ran on different hardware."""
    options: Options = field(default_factory=Options)

    def count(self, verdict: str, guarded_only: bool = True) -> int:
        return len({r.cell for r in self.rows if r.verdict == verdict and (r.guarded or not guarded_only)})

    @property
    def failing(self) -> list[Row]:
        """The rows that fail the gate."""
        fails = {REGRESSION, FAILED} | ({SUSPICIOUS} if self.options.strict else set())
        fails |= set() if self.options.allow_missing else {MISSING}
        fails |= set() if self.options.allow_new else {NEW}
        return [r for r in self.rows if r.guarded and (r.verdict in fails or (self.options.strict and r.contended))]

    @property
    def contended(self) -> int:
        """Cells with a timing verdict from a contended machine."""
        return len({r.cell for r in self.rows if r.contended and r.guarded})

    @property
    def exit_status(self) -> int:
        return EXIT_FAILED if self.failing else EXIT_OK


TRAINING_ONLY = ("test_accuracy", "time_to_target_s")
"""Metrics an inference report does not measure: its cells leave them out."""


def _metric_rows(bc: Cell, cc: Cell, opts: Options, guarded: bool) -> list[Row]:
    rows = []
    inference = any(r.get("scenario") == "inference" for r in bc.reports)
    timing_conditions, contended = _timing_conditions(bc, cc)
    for metric in METRICS:
        if inference and metric.name in TRAINING_ONLY:
            continue
        if metric.name in OPTIONAL and not (replicates(bc.completed, metric) and replicates(cc.completed, metric)):
            continue
        limit = opts.thresholds.get(metric.name, metric.threshold)
        j = judge(metric, bc.completed, cc.completed, limit)
        row = Row(bc.label, metric.label, j.baseline, j.candidate, j.change, f"{limit:g}{metric.unit}",
                  j.verdict, j.note, guarded)
        if metric.timed:
            row.conditions, row.contended = timing_conditions, contended
        rows.append(row)
    return rows


def _lm_inference_rows(bc: Cell, cc: Cell, opts: Options, guarded: bool) -> list[Row]:
    """A language model's bench-inference figures, read beside each completed run's report
    (gate/lm_inference.py), as the rows of ``<cell> inference``; none where neither side has them."""
    base, cand = (lm_bench.files([x.path for x in c.loaded if x.report is not None
                                  and x.report.get("status") == "completed"]) for c in (bc, cc))
    if not base and not cand:
        return []
    cell = f"{bc.label} inference"
    if not base or not cand:  # as an inference report.yaml with no partner: missing, or new
        lacking = "candidate" if base else "baseline"
        return [Row(cell, "-", None, None, "-", "-", MISSING if base else NEW,
                    f"no {lacking} run has inference/inference.yaml (harness bench-inference RUN)")]
    words, contended = lm_bench.timing_conditions(base, cand)
    return [Row(cell, text, j.baseline, j.candidate, j.change, f"{limit:g}{metric.unit}", j.verdict, j.note,
                guarded, words, contended) for text, metric, limit, j in lm_bench.judgements(base, cand, opts.thresholds)]


def _timing_conditions(bc: Cell, cc: Cell) -> tuple[str, bool]:
    """What qualifies the cell's timings on either side, and whether a side was contended."""
    sides = {"baseline": conditions.side(bc.completed), "candidate": conditions.side(cc.completed)}
    words = "; ".join(f"{name}: {tags}" for name, (_, tags) in sides.items() if tags)
    return words, any(v == conditions.CONTENDED for v, _ in sides.values())


def _cell_row(cell: Cell, verdict: str, note: str) -> Row:
    return Row(cell.label, "-", None, None, "-", "-", verdict, note)


def compare(baseline: list[Loaded], candidate: list[Loaded], opts: Options | None = None,
            names: tuple[str, str] = ("baseline", "candidate")) -> Comparison:
    opts = opts or Options()
    bcells, ccells = group(baseline), group(candidate)
    pairs = match(bcells, ccells)
    rows, hardware, compared = [], [], 0
    for bc, cc in pairs:
        if cc.broken:
            rows.append(_cell_row(cc, FAILED, "did not complete: " + "; ".join(cc.broken)))
        if not bc.completed or not cc.completed:
            side = names[0] if not bc.completed else names[1]
            rows.append(_cell_row(bc, "insufficient data", f"no completed report in the {side}"))
            continue
        different = bc.hardware() != cc.hardware()
        if different:
            hardware.append(f"{bc.label}: {_hw(bc.hardware())} vs {_hw(cc.hardware())}")
        compared += 1
        rows += _metric_rows(bc, cc, opts, guarded=not different)
        rows += _lm_inference_rows(bc, cc, opts, guarded=not different)
    paired_b = {id(b) for b, _ in pairs}
    paired_c = {id(c) for _, c in pairs}
    lone_b = [c for c in bcells.values() if id(c) not in paired_b]
    lone_c = [c for c in ccells.values() if id(c) not in paired_c]
    for cell in lone_b:
        near = nearest(cell, list(ccells.values()))
        rows.append(_cell_row(cell, MISSING, f"no candidate cell ({cell.loaded[0].path}); {near}"))
    for cell in lone_c:
        if cell.broken and not cell.completed:
            rows.append(_cell_row(cell, FAILED, "did not complete, and has no baseline: " + "; ".join(cell.broken)))
        else:
            near = nearest(cell, list(bcells.values()))
            rows.append(_cell_row(cell, NEW, f"no baseline cell ({cell.loaded[0].path}); {near}"))
    return Comparison(names[0], names[1], rows, compared, hardware, opts)


def _hw(hw: tuple) -> str:
    cpu, gpu = hw
    return gpu or cpu or "unknown"
