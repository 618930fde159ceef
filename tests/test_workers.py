"""Workers, persistent or not, never change what a run computes.

Augmentation is seeded per batch (SeededBatchSampler), and the order of samples is
drawn from a generator that no DataLoader iterator draws its workers' base seed
from, so 0 workers, 2 workers and 2 persistent workers end at the same weights, and
so does a persistent-worker run stopped mid-epoch by a signal and resumed.
"""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor

import pytest

from support.cli import run_cli, run_in_process
from support.paths import TESTS_PATH
from support.recipes import CONFIG, TINY
from support.runs import assert_same_run
from support.threads import one_torch_thread

# Augmentation on, so a seed that does not reach the workers changes the result.
# One torch thread: the CNN's steps are too small to share between threads, and two
# threads on a busy 2-core machine spin (a tiny run's CPU time halves with one).
ENV = {"PYTHONPATH": TESTS_PATH, "OMP_NUM_THREADS": "1"}
RECIPE = [CONFIG, *TINY, "train.epochs=3", "data.transforms.augment.rotation_deg=15",
          "measure.count_flops=false", "measure.measure_peak=false"]


@pytest.mark.slow
def test_persistent_workers_and_their_restart_on_resume_match_zero_workers(tmp_path):
    model = f"model.kwargs={{step: 12, signum: {int(signal.SIGTERM)}, marker: {tmp_path / 'sent'}}}"
    common = [*RECIPE, "model.name=fixtures.custom_models:SignalAt", model]
    (tmp_path / "sent").write_text("the reference runs must not be signalled\n")
    runs = {"w0": [], "w2_persistent": ["loader.num_workers=2", "loader.persistent_workers=true"]}
    # The two reference runs at once: nothing here is timed, and one's waits for its workers
    # are the other's turn. The zero-worker run is the reference the others must match: it
    # runs in this process (one torch thread, as ENV gives the processes), the runs with
    # workers are processes of their own.
    with ThreadPoolExecutor(1) as pool:
        persistent = pool.submit(run_cli, "run", *common, *runs["w2_persistent"],
                                 "--output", str(tmp_path / "w2_persistent"), env=ENV)
        with one_torch_thread():
            assert run_in_process(common, tmp_path / "w0") == 0
        assert persistent.result().returncode == 0, persistent.result().stderr[-3000:]
    assert_same_run(tmp_path / "w0", tmp_path / "w2_persistent")

    (tmp_path / "sent").unlink()  # step 12 is the 4th of epoch 2: the stop lands inside an epoch
    part = tmp_path / "resumed"
    proc = run_cli("run", *common, *runs["w2_persistent"], "--output", str(part), env=ENV)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    proc = run_cli("run", "--resume", str(part), env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_run(tmp_path / "w0", part)
