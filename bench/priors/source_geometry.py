"""Claim (b)'s transport geometry of several sources, scored by one rule over several noise draws.

Every source s (x0 = mu_s[g] + sigma_s[g] * eps, grouped by optprior's subclass g = c * K + k) is
scored the same way, so that no source is favoured by its prototypes:

- prototypes: each group's unit mean displacement direction, estimated on a held-out noise draw
  (draw 0) and never on the draws it scores. In-sample mean directions would flatter a source in
  proportion to its noise (a small group's in-sample mean direction fits that group's own noise),
  and the learned prototypes exist for the optimised sources only;
- statistics (`displacement_geometry` against those prototypes) on each of the other draws
  1..R, reported as their mean and standard error over the R draws (`<stat>_se`, R >= 2). The SE
  describes the Monte Carlo noise of the draws for fixed data, subclasses and sources; it is no
  seed-to-seed spread.

`matched_spreads` tunes the length-matched isotropic class-mean source N(m_c, s_c^2 I): the
s_c >= 0 at which its mean path length in class c, over the scoring draws, equals a target's
(the optimised source's). Per row, ||r - s eps||^2 = |r|^2 - 2 s <r, eps> + s^2 |eps|^2 with
r = x - m_c, so the class mean path length is a convex function of s computed from three numbers
per row and draw, and the largest root is found by bisection.

Noise draw j of seed `seed` uses generator seed `draw_seed(seed, j)`, far from the seeds the
offline stage uses elsewhere (seed, seed + 1) and distinct across the cell seeds: the training
data are the same for every seed, so seeds that shared draws would share their geometry noise.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from bench.priors.displacement import displacement_geometry, mean_directions, per_sample_geometry
from bench.priors.source_opt import DISPLACEMENT_CHUNK_ELEMENTS, displacements, normal_like

STATS = ("alignment", "radial_std", "radial_cv", "path_length", "angular_overlap")
LEARNED = "alignment_learned"  # alignment against a source's learned prototypes (an extra, not the rule)
_DRAW_STRIDE = 1_000_003  # a prime above any number of draws: seed s uses s * stride + 7919 + j
_BISECTIONS = 200


def draw_seed(seed: int, draw: int) -> int:
    """Generator seed of noise draw `draw` (0 = the prototype draw) for the cell seed `seed`."""
    return (int(seed) + 1) * _DRAW_STRIDE + 7919 + int(draw)


def held_out_geometry(
    x: torch.Tensor,
    group: torch.Tensor,
    parent: torch.Tensor,
    sources: dict,
    seed: int,
    draws: int,
    learned: dict | None = None,
) -> dict:
    """{name: {stat: mean over draws, stat_se: SE, "n", "draws", "prototypes": "held_out"}} for
    every source name -> (mu, sigma) ((G, D) tables or (G, 1) spreads; None = 0 and 1).

    `learned` maps a source name to its learned prototypes (G, D): its stage also gets
    `alignment_learned` (mean and SE over the same scoring draws), the alignment optprior's
    objective targets. Rows are ordered by group so that a chunk meets only its own groups'
    prototypes; the displacements of each source reuse one (n, D) buffer.
    """
    learned = learned or {}
    order = torch.argsort(group, stable=True)
    g = group[order]
    n_groups = len(parent)
    buffer = torch.empty_like(x)
    prototypes, per_draw = {}, {name: [] for name in sources}
    for j in range(draws + 1):
        eps = normal_like(x, draw_seed(seed, j))
        for name, (mu, sigma) in sources.items():
            d = displacements(x, eps, group, mu, sigma, rows=order, out=buffer)
            if j == 0:
                prototypes[name] = mean_directions(d, g, n_groups)
                continue
            values = displacement_geometry(d, g, prototypes[name], parent)
            if name in learned:
                values[LEARNED] = float(per_sample_geometry(d, g, learned[name])[1].mean())
            per_draw[name].append(values)
        del eps
    return {name: summarise(values) for name, values in per_draw.items()}


def summarise(per_draw: list[dict]) -> dict:
    """Mean and standard error (sample std / sqrt(R), R >= 2) of every statistic over the draws."""
    out = {"n": per_draw[0]["n"], "draws": len(per_draw), "prototypes": "held_out"}
    for stat in (*STATS, LEARNED):
        values = [v[stat] for v in per_draw if v.get(stat) is not None]
        if len(values) != len(per_draw):
            continue
        out[stat] = float(np.mean(values))
        if len(values) >= 2:
            out[f"{stat}_se"] = float(np.std(values, ddof=1) / math.sqrt(len(values)))
    return out


def matched_spreads(
    x: torch.Tensor,
    labels: torch.Tensor,
    means: torch.Tensor,
    target_source: tuple,
    group: torch.Tensor,
    seed: int,
    draws: int,
) -> tuple[list[float], list[int], list[float]]:
    """(s_c per class, the classes no s >= 0 reaches (s_c = 0 there), the target path length per
    class) for N(m_c, s_c^2 I) against `target_source` = (mu, sigma) of the groups `group`, on
    the scoring draws 1..draws of `held_out_geometry`."""
    n_classes = len(means)
    a, b, c, rho = _row_terms(x, labels, means, target_source, group, seed, draws)
    spreads, unreached, targets = [], [], []
    for k in range(n_classes):
        rows = (labels == k).numpy()
        if not rows.any():
            spreads.append(0.0), targets.append(0.0)
            continue
        target = float(rho[:, rows].mean())
        s, reached = matched_spread(a[rows], b[:, rows], c[:, rows], target)
        spreads.append(s), targets.append(target)
        if not reached:
            unreached.append(k)
    return spreads, unreached, targets


def _row_terms(x, labels, means, target_source, group, seed, draws):
    """|r|^2 (n,), <r, eps_j> and |eps_j|^2 (R, n) with r = x - m_c, and the target source's path
    lengths (R, n), over the scoring draws; float64, a chunk of rows at a time."""
    mu, sigma = target_source
    step = max(1, DISPLACEMENT_CHUNK_ELEMENTS // max(1, x.shape[1]))
    a = torch.cat(
        [
            (x[s : s + step].double() - means[labels[s : s + step]].double()).pow(2).sum(1)
            for s in range(0, len(x), step)
        ]
    )
    b, c, rho = (torch.empty(draws, len(x), dtype=torch.float64) for _ in range(3))
    buffer = torch.empty_like(x)
    for j in range(1, draws + 1):
        eps = normal_like(x, draw_seed(seed, j))
        for s in range(0, len(x), step):
            rows = slice(s, s + step)
            r = x[rows].double() - means[labels[rows]].double()
            e = eps[rows].double()
            b[j - 1, rows], c[j - 1, rows] = (r * e).sum(1), e.pow(2).sum(1)
        d = displacements(x, eps, group, mu, sigma, out=buffer)
        rho[j - 1] = torch.cat([d[s : s + step].double().norm(dim=1) for s in range(0, len(x), step)])
        del eps
    return a.numpy(), b.numpy(), c.numpy(), rho.numpy()


def matched_spread(a: np.ndarray, b: np.ndarray, c: np.ndarray, target: float) -> tuple[float, bool]:
    """The largest s >= 0 with mean sqrt(a - 2 s b + s^2 c) = target (a (n,), b and c (R, n)),
    and whether one exists; (0.0, False) when every s >= 0 gives a longer mean path.

    The mean is convex in s (a mean of norms of affine functions of s), so {s : f(s) <= target}
    is an interval and its right end is found by bisection, from the minimiser (golden section)
    when f(0) is already above the target.
    """
    f = lambda s: float(np.sqrt(np.maximum(a - 2 * s * b + s * s * c, 0.0)).mean())  # noqa: E731
    # ||r - s eps|| >= s ||eps|| - ||r||, so f(hi) >= target at this hi
    hi = (target + float(np.sqrt(a).mean())) / max(float(np.sqrt(c).mean()), 1e-300) + 1e-12
    lo = 0.0
    if f(0.0) > target:
        lo = _argmin(f, 0.0, hi)
        if f(lo) > target:
            return 0.0, False
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        if f(mid) <= target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * max(hi, 1e-300):
            break
    return 0.5 * (lo + hi), True


def _argmin(f, lo: float, hi: float) -> float:
    """Golden-section minimiser of the convex f on [lo, hi]."""
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(_BISECTIONS):
        m1, m2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if f(m1) <= f(m2):
            hi = m2
        else:
            lo = m1
        if hi - lo <= 1e-13 * max(hi, 1e-300):
            break
    return 0.5 * (lo + hi)
