"""Probability paths: how training places x_t between a source sample x0 and a data sample x1.

A method's `path` (bench/method.py) is one of these. Every path follows bench's time convention:
t = 0 is the source, t = 1 the data, and the target velocity is the time derivative of the path,
u = d x_t / dt. The sampler integrates dx/dt = v(x, t) from the method's source at t = 0 to t = 1,
so it needs nothing else from a path: any path of this convention trains a velocity field that
bench's Euler and Heun solvers integrate unchanged.

- `LinearPath` (every method unless it says otherwise): x_t = (1 - t) x0 + t x1, u = x1 - x0.
- `AffinePath`: x_t = alpha_t x1 + sigma_t x0, u = alpha_t' x1 + sigma_t' x0, for a schedule a
  subclass gives in `schedule(t)` (the affine paths of Lipman et al. 2023; methods/vpfm.py's
  variance-preserving path is one).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PathSample:
    """A point on the path between a source sample x0 and a data sample x1 at time t."""

    x0: torch.Tensor
    x1: torch.Tensor
    t: torch.Tensor  # (B,)
    x_t: torch.Tensor  # the point on the path: (1 - t) x0 + t x1 for the linear path
    u: torch.Tensor  # target velocity d x_t / dt: x1 - x0 (the displacement d) for the linear path


@dataclass
class Schedule:
    """An affine path's coefficients at times t, each shaped like t: x_t = alpha x1 + sigma x0."""

    alpha: torch.Tensor
    sigma: torch.Tensor
    d_alpha: torch.Tensor  # d alpha / dt
    d_sigma: torch.Tensor  # d sigma / dt


def expand_time(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape (B,) times so they broadcast against a batch shaped like `like`."""
    return t.reshape(-1, *([1] * (like.dim() - 1)))


def linear_path(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> PathSample:
    """x_t = (1 - t) x0 + t x1 with target u = x1 - x0 (t = 0 source, t = 1 data)."""
    tt = expand_time(t, x1)
    return PathSample(x0=x0, x1=x1, t=t, x_t=(1 - tt) * x0 + tt * x1, u=x1 - x0)


class ProbabilityPath:
    """A conditional probability path in bench's convention (t = 0 source, t = 1 data).

    A subclass implements `sample(x0, x1, t)`: the point x_t and its target velocity
    u = d x_t / dt, finite at every time the method's `sample_time` draws. `describe` goes into the
    record of a method that states its path.
    """

    name = "path"

    def sample(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> PathSample:
        """x_t and u for source draws x0 (B, *L), data x1 (B, *L) and times t (B,)."""
        raise NotImplementedError(f"{type(self).__name__} must implement sample(x0, x1, t)")

    def describe(self) -> dict:
        """A JSON-able description of the path."""
        return {"name": self.name}


class LinearPath(ProbabilityPath):
    """The linear (rectified, conditional-OT) path every method uses by default."""

    name = "linear"

    def sample(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> PathSample:
        """`linear_path`: x_t = (1 - t) x0 + t x1, u = x1 - x0."""
        return linear_path(x0, x1, t)


class AffinePath(ProbabilityPath):
    """x_t = alpha_t x1 + sigma_t x0 with u = alpha_t' x1 + sigma_t' x0; a subclass gives `schedule`.

    The schedule should run from (alpha, sigma) near (0, 1) at t = 0, where x_t is the source, to
    (1, 0) at t = 1, where it is the data.
    """

    name = "affine"

    def schedule(self, t: torch.Tensor) -> Schedule:
        """alpha_t, sigma_t and their time derivatives at times t (B,)."""
        raise NotImplementedError(f"{type(self).__name__} must implement schedule(t)")

    def sample(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> PathSample:
        """The affine interpolant and its time derivative at t."""
        s = self.schedule(t)
        alpha, sigma, d_alpha, d_sigma = (
            expand_time(c, x1) for c in (s.alpha, s.sigma, s.d_alpha, s.d_sigma)
        )
        return PathSample(x0=x0, x1=x1, t=t, x_t=alpha * x1 + sigma * x0, u=d_alpha * x1 + d_sigma * x0)


LINEAR = LinearPath()  # shared: a path holds no state
