"""Change points (harness/history/changepoints.py) on seeded synthetic series."""

import numpy as np
import pytest

from harness.history.changepoints import ALPHA, MIN_SEGMENT, Settings, detect

pytestmark = pytest.mark.usefixtures("one_thread")


def _commits(n):
    return [f"{i:02d}" * 20 for i in range(n)]


def _series(levels, noise, seed, replicates=1):
    rng = np.random.default_rng(seed)
    return [list(level * (1 + noise * rng.standard_normal(replicates))) for level in levels]


def test_a_ten_percent_step_in_twenty_points_is_found_at_its_commit():
    points = _series([100.0] * 10 + [90.0] * 10, 0.02, seed=1)
    seg = detect(points, _commits(20))
    assert [c.index for c in seg.changes] == [10]
    change = seg.changes[0]
    assert change.commit == _commits(20)[10]
    assert -0.13 < change.size < -0.07
    assert change.p_value < ALPHA and change.permutations == 499 and change.seed == 0
    assert detect(points, _commits(20)) == seg  # rerun: the same verdict, p-value included


def test_two_steps_are_both_found():
    points = _series([100.0] * 8 + [85.0] * 8 + [100.0] * 8, 0.02, seed=2)
    assert [c.index for c in detect(points, _commits(24)).changes] == [8, 16]


def test_forty_aa_points_raise_no_more_false_alarms_than_alpha():
    # 50 seeded A/A series (docs/history.md gives 200: none alarmed); the
    # permutation test at alpha 0.01 may alarm on 0.5 of 50.
    alarms = sum(bool(detect(_series([100.0] * 40, 0.02, seed=1000 + i), _commits(40)).changes)
                 for i in range(50))
    assert alarms <= 50 * ALPHA


def test_a_step_hidden_in_the_replicates_is_found_with_them():
    # 10% noise per value hides an 8% step in one value per commit; ten per commit show it.
    points = _series([100.0] * 10 + [92.0] * 10, 0.10, seed=3, replicates=10)
    assert [c.index for c in detect([p[:1] for p in points], _commits(20)).changes] == []
    assert [c.index for c in detect(points, _commits(20)).changes] == [10]


def test_a_constant_series_has_no_change():
    seg = detect([[5.0]] * 20, _commits(20))
    assert seg.changes == [] and seg.reason == ""


def test_a_short_series_has_no_change_and_says_why():
    seg = detect([[100.0]] * 3 + [[50.0]] * 2, _commits(5))
    assert seg.changes == []
    assert "5 point(s)" in seg.reason and f"min segment {MIN_SEGMENT}" in seg.reason


def test_a_tiny_significant_drift_in_a_quiet_series_is_not_raised():
    points = _series([100.0] * 10 + [99.0] * 10, 0.001, seed=4)
    assert detect(points, _commits(20)).changes == []
    assert [c.index for c in detect(points, _commits(20), Settings(min_size=0.0)).changes] == [10]


def test_bad_settings_name_the_setting():
    with pytest.raises(ValueError, match="alpha"):
        Settings(alpha=1.5)


def test_q_hat_matches_the_energy_statistic_written_out():
    from harness.history.changepoints import _q_hat

    x = np.random.default_rng(7).standard_normal(9)

    def q(t, k):
        a, b = x[:t], x[t:k]
        m, n = len(a), len(b)
        cross = np.abs(a[:, None] - b[None, :]).mean()
        wa = np.abs(a[:, None] - a[None, :]).sum() / (m * (m - 1)) if m > 1 else 0.0
        wb = np.abs(b[:, None] - b[None, :]).sum() / (n * (n - 1)) if n > 1 else 0.0
        return m * n / (m + n) * (2 * cross - wa - wb)

    got = _q_hat(np.abs(x[:, None] - x[None, :])[None], 2)[0]
    want = [max((q(t, k) for k in range(t + 2, 10)), default=-np.inf) if t >= 2 else -np.inf for t in range(10)]
    assert np.allclose(got, want)
