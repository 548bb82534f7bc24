"""The convergence verdict against hand-computed window means, and in a training record."""

import numpy as np
import pytest

from bench.pipeline.convergence import convergence


def test_relative_change_is_the_drop_between_the_last_two_windows():
    losses = list(np.linspace(2.0, 1.0, 100))  # still falling steadily
    out = convergence(losses, fraction=0.2, tol=0.02)
    previous, last = np.mean(losses[60:80]), np.mean(losses[80:])
    assert out["window"] == 20
    assert out["rel_change"] == pytest.approx((previous - last) / last)
    assert out["converged"] is False and out["threshold"] == 0.02
    assert convergence(losses)["threshold"] == 0.05  # the default


def test_a_noisy_plateau_converges_and_a_rising_loss_counts_as_no_improvement():
    rng = np.random.default_rng(0)
    plateau = list(np.r_[np.linspace(5, 1, 200), 1 + 0.05 * rng.standard_normal(800)])
    assert convergence(plateau)["converged"] is True
    rising = list(np.linspace(1.0, 1.5, 100))
    assert convergence(rising)["rel_change"] < 0 and convergence(rising)["converged"] is True


def test_too_few_steps_or_non_finite_losses_give_no_verdict():
    assert convergence([1.0, 0.5]) is None  # a 20 % window of 2 steps rounds to 0
    assert convergence([1.0] * 9 + [float("nan")]) is None
    assert convergence([1.0] * 5, fraction=0.5)["converged"] is True
