"""Bayes FM risk and its reduction by subclass conditioning for a fitted Gaussian mixture (paper Eq. 1-2).

Convention as in `bench.priors.bayes_risk`: t = 0 source, t = 1 data, x_t = (1 - t) x0 + t x1,
d = x1 - x0. That module estimates the risk of the *empirical* training distribution, whose
posterior over training points collapses in high dimension (effective size ~2 on digits_lt, the
class risk ~3x low). Here each class c is instead modelled as the mixture over its subclasses k
(weights p_ck = subclass size / class size) of diagonal Gaussians N(m_ck, diag(s_ck^2)) fitted by
moments to the points assigned to k, and a point of group (c, k) is transported from the source
N(mu_ck, diag(sigma_ck^2)) (the standard source: 0, 1). Nothing collapses, because each component
has a positive variance.

Given k, per dimension x_t and d are jointly Gaussian:
    E[x_t | k] = a_k = (1 - t) mu + t m,   Var(x_t | k) = v_k = (1 - t)^2 sigma^2 + t^2 s^2,
    E[d | k] = m - mu,   Var(d | k) = s^2 + sigma^2,   Cov(x_t, d | k) = g_k = t s^2 - (1 - t) sigma^2,
so E_k = E[d | x_t, k] = m - mu + g_k / v_k (x_t - a_k), Var(d | x_t, k) = s^2 + sigma^2 - g_k^2 / v_k,
and p(k | x_t, c) ∝ p_ck N(x_t; a_k, diag v_k). With Ebar = sum_k p(k | x_t, c) E_k:
    V_ck = sum_k p(k | x_t, c) tr Var(d | x_t, k),   R = sum_k p(k | x_t, c) ||E_k - Ebar||^2,
    V_c = V_ck + R   (the law of total variance, exact here by construction).
Monte Carlo runs only over (row i uniform -> its class c and group k; t ~ U(0, t_max); x_t drawn
from the model's component k), fully vectorised in float64. Risks are per dimension (divided by D).

Variance floor: a component's moment variance is floored at VAR_FLOOR_REL x the mean per-dimension
variance of its class (and at VAR_FLOOR_ABS), so a singleton subclass or a constant pixel keeps a
proper density; with the standard source v_k > 0 anyway, the floor matters only for the data side.

`random_partition_null` is claim (a)'s null (issue 25): Eq. 2 lowers the risk for *any*
partition, so the induced subclasses are compared with size-matched random partitions (each
class's subclass ids permuted), all scored with the same draws (common random numbers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bench.errors import BenchError

VAR_FLOOR_REL = 1e-4  # floor on a component's variance, relative to its class's mean per-dim variance
VAR_FLOOR_ABS = 1e-12
GROUP_CHUNK_ELEMENTS = 2**20  # rows x D per chunk of a group's moments (8 MB of float64)
CHUNK_ELEMENTS = (
    2**17
)  # draws x components x D per vectorised chunk (1 MB per float64 array: 3x faster than 4 MB)


@dataclass
class MixtureModel:
    """Per group g = (c, k): class, mixture weight, data moments and source, all float64 numpy.

    row_group (n,) is every training row's group; members (C, K) lists each class's groups,
    padded with -1.
    """

    row_group: np.ndarray
    group_class: np.ndarray
    weight: np.ndarray  # (G,) p_ck = |k| / |c|
    m: np.ndarray  # (G, D)
    s2: np.ndarray  # (G, D)
    mu: np.ndarray  # (G, D)
    sig2: np.ndarray  # (G, D)
    members: np.ndarray  # (C, K)


def fit_mixture(x1, labels, subclass, source_mu, source_sigma) -> MixtureModel:
    """Moment-fit the per-subclass diagonal Gaussians; per-group sources from per-row or shared ones.

    source_mu / source_sigma: (D,) shared, (n, D) per row (rows of one group must share their
    source: the group's mean row is used), or (G, D) is not accepted (pass per row).
    """
    x = _as_numpy(x1).reshape(len(x1), -1)
    n, dim = x.shape
    lab, sub = (
        _as_numpy(labels).reshape(-1).astype(np.int64),
        _as_numpy(subclass).reshape(-1).astype(np.int64),
    )
    if len(lab) != n or len(sub) != n or n == 0:
        raise BenchError(
            f"gmm_risk_decomposition needs one label and one subclass per point (got {n} points, "
            f"{len(lab)} labels, {len(sub)} subclasses); pass matching tensors"
        )
    pairs, row_group = np.unique(np.stack([lab, sub], 1), axis=0, return_inverse=True)
    row_group = row_group.reshape(-1)
    n_groups = len(pairs)
    group_class = pairs[:, 0]
    count = np.bincount(row_group, minlength=n_groups).astype(np.float64)
    class_count = np.bincount(lab)[group_class].astype(np.float64)
    m = _group_mean(x, row_group, count)
    s2 = np.maximum(_group_mean(x, row_group, count, square=True) - m * m, 0.0)
    class_var = {c: x[lab == c].var(0).mean() for c in np.unique(lab)}
    floor = np.array([max(VAR_FLOOR_REL * class_var[c], VAR_FLOOR_ABS) for c in group_class])
    s2 = np.maximum(s2, floor[:, None])
    mu = _group_mean(_per_row(source_mu, n, dim, "source_mu"), row_group, count)
    sigma = _group_mean(_per_row(source_sigma, n, dim, "source_sigma"), row_group, count)
    if not (sigma > 0).all():
        raise BenchError(
            "gmm_risk_decomposition needs source_sigma > 0 everywhere; pass scales, not log-scales"
        )
    classes = np.unique(group_class)
    k_max = int(max((group_class == c).sum() for c in classes))
    members = -np.ones((int(classes.max()) + 1, k_max), dtype=np.int64)
    for c in classes:
        g = np.flatnonzero(group_class == c)
        members[c, : len(g)] = g
    return MixtureModel(row_group, group_class, count / class_count, m, s2, mu, sigma**2, members)


@dataclass
class Draws:
    """The Monte-Carlo draws: rows, times and unit noise (shared across partitions for CRN)."""

    rows: np.ndarray  # (n_mc,)
    t: np.ndarray  # (n_mc,)
    eps: np.ndarray  # (n_mc, D)


def make_draws(n_rows: int, dim: int, n_mc: int, t_max: float, seed: int) -> Draws:
    """Row i uniform over the training rows, t ~ U(0, t_max), eps ~ N(0, I_D); deterministic given seed."""
    if not 0.0 < t_max < 1.0 or n_mc < 2:
        raise BenchError(f"gmm_risk_decomposition needs 0 < t_max < 1 and n_mc >= 2 (got {t_max}, {n_mc})")
    rng = np.random.default_rng(seed)
    return Draws(
        rng.integers(n_rows, size=n_mc), rng.uniform(0.0, t_max, size=n_mc), rng.standard_normal((n_mc, dim))
    )


def gmm_risk_decomposition(
    x1, labels, subclass, source_mu, source_sigma, n_mc: int = 2000, t_max: float = 0.95, seed: int = 0
) -> dict:
    """Closed-form-posterior estimate of Eq. 1-2 for the fitted mixture (see the module docstring).

    Same inputs as `bench.priors.bayes_risk.fm_risk_decomposition` (sources per row or shared, per
    group in effect). Returns floats `risk_class` = E[V_c] / D, `risk_subclass` = E[V_ck] / D,
    `reduction` = E[R] / D, their Monte-Carlo standard errors `*_se`, `n_mc`, `t_max`,
    `n_components` (groups in the mixture). Deterministic given `seed`.
    """
    model = fit_mixture(x1, labels, subclass, source_mu, source_sigma)
    draws = make_draws(len(model.row_group), model.m.shape[1], n_mc, t_max, seed)
    out = summarise(risk_draws(model, draws), model.m.shape[1], t_max)
    out["n_components"] = int(len(model.weight))
    return out


def risk_draws(model: MixtureModel, draws: Draws) -> np.ndarray:
    """Per-draw (V_c, R, V_ck) (traces, not per dimension), shape (n_mc, 3).

    Draws are processed class by class (the candidates of a draw are its class's components, so
    their parameters broadcast instead of being gathered per draw), in chunks of CHUNK_ELEMENTS.
    """
    n_mc, dim = draws.eps.shape
    out = np.empty((n_mc, 3))
    own_class = model.group_class[model.row_group[draws.rows]]
    for c in np.unique(own_class):
        groups = model.members[c][model.members[c] >= 0]
        idx = np.flatnonzero(own_class == c)
        chunk = max(1, CHUNK_ELEMENTS // (len(groups) * dim))
        for s in range(0, len(idx), chunk):
            out[idx[s : s + chunk]] = _chunk(model, groups, draws, idx[s : s + chunk])
    return out


def _chunk(model: MixtureModel, groups: np.ndarray, draws: Draws, idx: np.ndarray) -> np.ndarray:
    """(V_c, R, V_ck) for draws `idx` of one class: x_t from the drawn row's component, posterior
    over the class's components `groups`."""
    t, eps = draws.t[idx, None], draws.eps[idx]
    own = model.row_group[draws.rows[idx]]
    v_own = (1 - t) ** 2 * model.sig2[own] + t**2 * model.s2[own]
    x_t = (1 - t) * model.mu[own] + t * model.m[own] + np.sqrt(v_own) * eps
    t3 = t[:, :, None]
    m, s2, mu, sig2 = model.m[groups], model.s2[groups], model.mu[groups], model.sig2[groups]  # (K, D)
    v = (1 - t3) ** 2 * sig2 + t3**2 * s2  # (B, K, D)
    cov = t3 * s2 - (1 - t3) * sig2
    z = x_t[:, None, :] - ((1 - t3) * mu + t3 * m)
    gain = cov / v
    log_p = -0.5 * (z * z / v + np.log(v)).sum(2) + np.log(model.weight[groups])
    p = np.exp(log_p - log_p.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    e_k = (m - mu) + gain * z
    e_bar = np.einsum("bk,bkd->bd", p, e_k)
    e_k -= e_bar[:, None, :]
    reduction = np.einsum("bk,bk->b", p, np.einsum("bkd,bkd->bk", e_k, e_k))
    v_sub = np.einsum("bk,bk->b", p, (s2 + sig2).sum(1) - np.einsum("bkd,bkd->bk", gain, cov))
    return np.stack([v_sub + reduction, reduction, v_sub], 1)


def summarise(draws: np.ndarray, dim: int, t_max: float) -> dict:
    """Per-dimension means and Monte-Carlo standard errors of the per-draw (V_c, R, V_ck)."""
    n = len(draws)
    mean, se = draws.mean(0) / dim, draws.std(0, ddof=1) / np.sqrt(n) / dim
    return {
        "risk_class": float(mean[0]),
        "risk_class_se": float(se[0]),
        "risk_subclass": float(mean[2]),
        "risk_subclass_se": float(se[2]),
        "reduction": float(mean[1]),
        "reduction_se": float(se[1]),
        "n_mc": n,
        "t_max": float(t_max),
    }


def random_partition_null(
    x1,
    labels,
    subclass,
    n_partitions: int = 20,
    n_mc: int = 2000,
    t_max: float = 0.95,
    seed: int = 0,
    source_mu=None,
    source_sigma=None,
) -> dict:
    """The induced partition's GMM reduction against size-matched random partitions (claim a's null).

    Each random partition permutes the subclass ids within each class (so every random subclass
    has the size of an induced one); each is scored by the GMM estimator with the same rows, times
    and noise as the induced one (common random numbers). Source: standard N(0, I) unless given
    (shared (D,) only: a per-group source has no meaning for a random group). Returns
    `observed` (the induced reduction), `reductions` (the random ones, list), `reduction_mean`,
    `reduction_std` (ddof 1), `excess` = observed - mean, `p_rank` = (1 + #{random >= observed})
    / (1 + n_partitions), `n_partitions`, `n_mc`, `t_max`. Deterministic given `seed`.
    """
    if n_partitions < 1:
        raise BenchError(f"random_partition_null needs n_partitions >= 1 (got {n_partitions})")
    x = _as_numpy(x1).reshape(len(x1), -1)
    dim = x.shape[1]
    mu = np.zeros(dim) if source_mu is None else _as_numpy(source_mu)
    sigma = np.ones(dim) if source_sigma is None else _as_numpy(source_sigma)
    if mu.size != dim or sigma.size != dim:
        raise BenchError("random_partition_null takes a shared (D,) source only; leave it out for N(0, I)")
    lab, sub = (
        _as_numpy(labels).reshape(-1).astype(np.int64),
        _as_numpy(subclass).reshape(-1).astype(np.int64),
    )
    draws = make_draws(len(x), dim, n_mc, t_max, seed)

    def score(partition: np.ndarray) -> float:
        return summarise(risk_draws(fit_mixture(x, lab, partition, mu, sigma), draws), dim, t_max)[
            "reduction"
        ]

    observed = score(sub)
    rng = np.random.default_rng([seed, 1])
    reductions = [score(_permute_within(lab, sub, rng)) for _ in range(n_partitions)]
    r = np.asarray(reductions)
    return {
        "observed": observed,
        "reductions": reductions,
        "reduction_mean": float(r.mean()),
        "reduction_std": float(r.std(ddof=1)) if len(r) > 1 else 0.0,
        "excess": float(observed - r.mean()),
        "p_rank": float((1 + (r >= observed).sum()) / (1 + len(r))),
        "n_partitions": int(len(r)),
        "n_mc": int(n_mc),
        "t_max": float(t_max),
    }


def _permute_within(labels: np.ndarray, subclass: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The subclass ids shuffled within each class: same sizes, random membership."""
    out = subclass.copy()
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        out[rows] = subclass[rows][rng.permutation(len(rows))]
    return out


def _group_mean(
    values: np.ndarray, row_group: np.ndarray, count: np.ndarray, square: bool = False
) -> np.ndarray:
    """Mean of `values` (n, D), or of their squares, over the rows of each group: a chunk of a
    group's rows at a time (GROUP_CHUNK_ELEMENTS), without an (n, D) temporary; a broadcast row
    shared by all rows (a shared source) is every group's mean itself."""
    if values.strides[0] == 0:
        return np.repeat(values[:1] ** 2 if square else values[:1], len(count), axis=0)
    out = np.zeros((len(count), values.shape[1]))
    step = max(1, GROUP_CHUNK_ELEMENTS // values.shape[1])
    for g in range(len(count)):
        rows = np.flatnonzero(row_group == g)
        for s in range(0, len(rows), step):
            part = values[rows[s : s + step]]
            out[g] += (part * part if square else part).sum(0)
    return out / count[:, None]


def _per_row(source, n: int, dim: int, name: str) -> np.ndarray:
    """A source parameter as (n, D) float64: given per row, or one (D,) vector shared by all rows."""
    s = _as_numpy(source)
    if s.size == dim:
        return np.broadcast_to(s.reshape(1, dim), (n, dim))
    if s.size != n * dim:
        raise BenchError(f"{name} must have shape (n, D) = ({n}, {dim}) or (D,); got {tuple(s.shape)}")
    return s.reshape(n, dim)


def _as_numpy(a) -> np.ndarray:
    """float64/int numpy view of a tensor or array."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu()
        return a.double().numpy() if a.is_floating_point() else a.numpy()
    a = np.asarray(a)
    return a.astype(np.float64) if np.issubdtype(a.dtype, np.floating) else a
