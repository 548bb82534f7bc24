"""Bayes-optimal flow-matching risk and its exact reduction by subclass conditioning (paper Eq. 1-2).

Convention: t = 0 source, t = 1 data, x_t = (1 - t) x0 + t x1, displacement d = x1 - x0.
The Bayes-optimal velocity is E[d | x_t, c] and its risk is E[Var(d | x_t, c)] (Eq. 1);
conditioning also on the subclass k lowers it by exactly E[Var(E[d | x_t, c, k] | x_t, c)] >= 0
(Eq. 2, the law of total variance). Both are estimated here by Monte Carlo for the *empirical*
training distribution: class c is the uniform distribution over its training points x1_j, and
point j is transported from its own Gaussian source N(mu_j, diag(sigma_j^2)) (the source of its
class or subclass; vanilla FM has mu = 0, sigma = 1). Given x_t, which point (hence which d) was
drawn is uncertain, with posterior

    w_j ∝ N(x_t; t x1_j + (1 - t) mu_j, (1 - t)^2 diag(sigma_j^2)),   j in class c,

and given j, d_j = (x1_j - x_t) / (1 - t) is determined. So Var(d | x_t, c) = sum_j w_j ||d_j - dbar||^2.
As t -> 1 this posterior collapses onto one point and both risks vanish (an artefact of the finite
sample, not of the population), so t is drawn from U(0, t_max) with t_max < 1.

The collapse does not wait for t -> 1 when the sources are narrow or D is large: a draw whose
posterior sits on one training point contributes zero risk where the population has a positive
one, so the estimate runs low by about the share of such draws. `ess` measures it and `reliable`
judges it (thresholds ESS_MIN, IDENTITY_GAP_MAX, see `reliable`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bench.errors import BenchError

# Reliability thresholds of an estimate (see `reliable`).
ESS_MIN = 20.0  # effective posterior size: below it the estimate may run more than ~5 % low
IDENTITY_GAP_MAX = 1e-6  # above it some draw's posterior sat on one point to rounding precision


# Elements of a float64 temporary of the vectorised estimate (32 MB): the draws, reference rows and
# dimensions are taken in blocks of this size, so memory stays bounded at any D and class size.
BLOCK_ELEMENTS = 2**22
# A shared reference set of M rows in D dimensions takes V_c and V_ck from its distance matrix
# (cost ~ M^2 per draw) when PAIRWISE_COST * D > M, else directly (~ M D elementwise per draw).
PAIRWISE_COST = 16
# Largest distance matrix of a shared reference set (M x M float64, 256 MB: M = 5,792 rows).
GRAM_ELEMENTS_MAX = 2**25


def fm_risk_decomposition(
    x1: torch.Tensor,
    labels: torch.Tensor,
    subclass: torch.Tensor,
    source_mu: torch.Tensor,
    source_sigma: torch.Tensor,
    n_mc: int = 2000,
    t_max: float = 0.95,
    max_reference: int = 2000,
    seed: int = 0,
) -> dict:
    """Monte-Carlo estimate of Eq. 1 (class risk), its subclass version and their gap (Eq. 2).

    x1 (n, D) are training points with class `labels` (n,) and subclass `subclass` (n,) (ids only
    compared within a class); row i's source is N(source_mu[i], diag(source_sigma[i]^2)), with
    source_mu / source_sigma of shape (n, D) or (D,) (shared). Each draw picks a row i uniformly
    (so expectations are over the training distribution, classes weighted by their counts),
    t ~ U(0, t_max), eps ~ N(0, I), x_t = t x1_i + (1 - t)(mu_i + sigma_i eps), and evaluates the
    exact posterior over the points of i's class (a random subset of at most `max_reference`
    points that always contains i, when the class is larger). Risks are per dimension (divided by
    D), matching an element-mean MSE loss. Returns floats:
    `risk_class` = E[V_c] / D, V_c = Var(d | x_t, c); `risk_subclass` = E[V_ck] / D, V_ck the
    posterior-weighted within-subclass variance computed directly; `reduction` = E[R] / D,
    R = sum_k p(k | x_t, c) ||E[d | x_t, c, k] - E[d | x_t, c]||^2; their Monte-Carlo standard
    errors (`*_se`); `max_identity_gap` = max over draws of |V_c - V_ck - R| / V_c, the three
    computed separately in float64 (the law of total variance says 0; it departs from 0 only
    where V_c is rounding noise, i.e. the posterior sat on one point); `ess` = 1 / mean over
    draws of sum_j w_j^2 (the effective posterior size: the harmonic mean over draws of the
    per-draw ESS 1 / sum_j w_j^2; its reciprocal is about the share of collapsed draws);
    `posterior_ess` = the arithmetic mean of the per-draw ESS (dominated by the draws at small
    t, where the posterior is uniform: it hides collapse, kept for older readers); `reliable`
    (see `reliable`); `n_mc`, `t_max`. Deterministic given `seed`.

    The draws are taken in the order of a plain loop over them (`plan_draws`); the draws of a class
    whose reference set is all its rows are then evaluated together (`_shared_reference_draws`),
    the others one at a time (`_one_draw`).
    """
    x1, labels, subclass, mu, sigma = _check_inputs(
        x1, labels, subclass, source_mu, source_sigma, n_mc, t_max, max_reference
    )
    plan = plan_draws(labels, x1.shape[1], n_mc, t_max, max_reference, seed)
    draws = np.empty((n_mc, 4))
    own = dict(plan.own)
    for c, idx in plan.shared.items():
        if len(plan.members[c]) ** 2 <= GRAM_ELEMENTS_MAX:
            draws[idx] = _shared_reference_draws(x1, mu, sigma, subclass, plan, c, idx)
        else:  # its distance matrix would be too large: one draw at a time
            own.update({int(m): plan.members[c] for m in idx})
    for m, ref in own.items():
        x_t = _source_points(x1, mu, sigma, plan, np.array([m]))[0]
        draws[m] = _one_draw(
            x_t, float(plan.t[m]), x1, mu, sigma, subclass, torch.from_numpy(ref).to(x1.device)
        )
    return _summarise(draws, x1.shape[1], t_max)


@dataclass
class DrawPlan:
    """The draws of `fm_risk_decomposition`, in the random stream's order: row (n_mc,), t (n_mc,),
    the generator state before each draw's noise (the noise itself, n_mc x D, is drawn again when
    needed), the rows of each class (`members`), the draws whose reference set is their whole class
    (`shared`: class -> draw indices) and the subsampled reference sets of the others (`own`)."""

    row: np.ndarray
    t: np.ndarray
    noise_state: list
    dim: int
    members: dict
    shared: dict
    own: dict


def plan_draws(
    labels: torch.Tensor, dim: int, n_mc: int, t_max: float, max_reference: int, seed: int
) -> DrawPlan:
    """Every draw's row, t, noise state and reference rows, from one generator seeded with `seed`
    in the order of a loop over the draws (row, t, noise, reference subset): the same draws for
    any way the draws are later evaluated."""
    rng = np.random.default_rng(seed)
    lab = labels.cpu().numpy()
    members = {int(c): np.flatnonzero(lab == c) for c in np.unique(lab)}
    row, t, states, shared, own = np.empty(n_mc, dtype=np.int64), np.empty(n_mc), [], {}, {}
    for m in range(n_mc):
        row[m] = rng.integers(len(lab))
        t[m] = rng.uniform(0.0, t_max)
        states.append(rng.bit_generator.state)
        rng.standard_normal(dim)
        c = int(lab[row[m]])
        if len(members[c]) <= max_reference:
            shared.setdefault(c, []).append(m)
        else:
            own[m] = _reference_rows(members[c], int(row[m]), max_reference, rng)
    return DrawPlan(row, t, states, dim, members, {c: np.array(v) for c, v in shared.items()}, own)


def _noise(plan: DrawPlan, idx: np.ndarray) -> np.ndarray:
    """The N(0, I_D) noise of draws `idx` (len(idx), D), drawn again from their saved states."""
    rng = np.random.Generator(np.random.PCG64())
    out = np.empty((len(idx), plan.dim))
    for r, m in enumerate(idx):
        rng.bit_generator.state = plan.noise_state[m]
        out[r] = rng.standard_normal(plan.dim)
    return out


def _source_points(x1, mu, sigma, plan: DrawPlan, idx: np.ndarray) -> torch.Tensor:
    """x_t = t x1_i + (1 - t)(mu_i + sigma_i eps) of draws `idx` (len(idx), D), float64."""
    rows = torch.from_numpy(plan.row[idx]).to(x1.device)
    t = torch.from_numpy(plan.t[idx]).to(x1.device).unsqueeze(1)
    eps = torch.from_numpy(_noise(plan, idx)).to(x1.device)
    return t * x1[rows].double() + (1 - t) * (mu[rows].double() + sigma[rows].double() * eps)


def _shared_reference_draws(x1, mu, sigma, subclass, plan: DrawPlan, c: int, idx: np.ndarray) -> np.ndarray:
    """(V_c, R, V_ck, ess) of the draws `idx`, all of class c with its whole class as reference set,
    evaluated together a block of draws at a time (at most BLOCK_ELEMENTS values per draw block)."""
    ref = SharedReference(x1, mu, sigma, subclass, torch.from_numpy(plan.members[c]).to(x1.device))
    step = max(1, BLOCK_ELEMENTS // max(x1.shape[1], len(ref.rows)))
    return np.concatenate(
        [
            ref.decompose(_source_points(x1, mu, sigma, plan, idx[s : s + step]), plan.t[idx[s : s + step]])
            for s in range(0, len(idx), step)
        ]
    )


class SharedReference:
    """One reference set shared by many draws, with what each draw's posterior reuses.

    Rows are sorted by subclass (segments of `sizes`). With X_j = x1_j - m and U_j = mu_j - m
    (m the rows' mean, which keeps the sums below small), P_j = sigma_j^-2, q = x_t - m and
    s = 1 - t, the log-weight of row j is, up to a constant in j,

        -0.5 sum_d P_j (q - t X_j - s U_j)^2 / s^2 - sum_d log sigma_j,
        sum_d P_j (q - t X_j - s U_j)^2 = P_j . q^2 - 2 t (P_j X_j) . q - 2 s (P_j U_j) . q
                                          + t^2 a_j + 2 t s b_j + s^2 e_j,

    with a_j, b_j, e_j the sums of P_j X_j^2, P_j X_j U_j, P_j U_j^2 (matrix products over the
    draws instead of an (draws, M, D) tensor). Since d_j - dbar = (X_j - xbar) / s, with xbar and
    xbar_k the posterior means of X over all rows and over subclass k: V_c = sum_j w_j ||X_j -
    xbar||^2 / s^2, V_ck the same about xbar_k, R = sum_k p_k ||xbar_k - xbar||^2 / s^2. When
    D is not small against M, V_c and V_ck are taken as sums of positive pairwise terms (sum_j w_j
    = 1): V_c = sum_jl w_j w_l G_jl / (2 s^2) and V_ck the same within each subclass divided by
    its mass p_k, with G_jl = ||X_j - X_l||^2 computed once (`pairwise`); otherwise directly.
    The dimensions are taken in blocks of at most BLOCK_ELEMENTS / M columns (`_column_blocks`).
    """

    def __init__(self, x1, mu, sigma, subclass, rows: torch.Tensor):
        _, k = torch.unique(subclass[rows], return_inverse=True)
        self.rows = rows[torch.argsort(k, stable=True)]
        self.sizes = torch.bincount(k).tolist()
        self.tables, self.cols = (x1, mu, sigma), _column_blocks(x1.shape[1], len(rows))
        self.centre = torch.cat([self._gather(col, x1)[0].mean(0) for col in self.cols])
        self.cache = {}
        n = len(self.rows)
        self.pairwise = PAIRWISE_COST * x1.shape[1] > n
        self.a, self.b, self.e, self.log_sigma = (
            torch.zeros(n, dtype=torch.float64, device=x1.device) for _ in range(4)
        )
        self.gram = torch.zeros((n, n) if self.pairwise else (0, 0), dtype=torch.float64, device=x1.device)
        for col in self.cols:
            x, u, p, _, _, log_sigma = self._block(col)
            if self.pairwise:
                sq = (x * x).sum(1)
                self.gram += sq[:, None] + sq[None, :] - 2 * x @ x.T
            self.a += (p * x * x).sum(1)
            self.b += (p * x * u).sum(1)
            self.e += (p * u * u).sum(1)
            self.log_sigma += log_sigma
        self.gram.clamp_(min=0.0).fill_diagonal_(0.0)

    def _gather(self, col: slice, *tables) -> list:
        """The reference rows of `tables` in the dimensions `col`, float64."""
        return [torch.index_select(a[:, col], 0, self.rows).to(torch.float64) for a in tables]

    def _block(self, col: slice) -> tuple:
        """(X, U, P, P X, P U, sum_d log sigma) in the dimensions `col`; kept when D is one block."""
        if col.start in self.cache:
            return self.cache[col.start]
        x1, mu, sigma = self._gather(col, *self.tables)
        x, u, p = x1 - self.centre[col], mu - self.centre[col], sigma**-2
        out = (x, u, p, p * x, p * u, torch.log(sigma).sum(1))
        if len(self.cols) == 1:
            self.cache[col.start] = out
        return out

    def decompose(self, x_t: torch.Tensor, t: np.ndarray) -> np.ndarray:
        """(V_c, R, V_ck, ess) (len(t), 4) at the points x_t (len(t), D) of times t."""
        t = torch.from_numpy(t).to(x_t).unsqueeze(1)
        s = 1 - t
        w = self._weights(x_t - self.centre, t, s)
        parts = w.split(self.sizes, dim=1)
        mass = torch.stack([wk.sum(1) for wk in parts], 1)
        divisor = mass.clamp(min=1e-300)
        v_class, reduction, v_sub = (torch.zeros(len(w), dtype=w.dtype, device=w.device) for _ in range(3))
        for col in self.cols:
            x = self._block(col)[0]
            xbar = w @ x
            for k, (wk, xk) in enumerate(zip(parts, x.split(self.sizes))):
                xbar_k = wk @ xk / divisor[:, k : k + 1]
                reduction += mass[:, k] * ((xbar_k - xbar) ** 2).sum(1)
                if not self.pairwise:
                    v_sub += _weighted_spread(wk, xk, xbar_k)
            if not self.pairwise:
                v_class += _weighted_spread(w, x, xbar)
        if self.pairwise:
            v_class = 0.5 * (w * (w @ self.gram)).sum(1)
            start = 0
            for k, wk in enumerate(parts):
                g = self.gram[start : start + self.sizes[k], start : start + self.sizes[k]]
                v_sub += 0.5 * (wk * (wk @ g)).sum(1) / divisor[:, k]
                start += self.sizes[k]
        scale = 1 / (s * s).squeeze(1)
        ess = 1 / (w * w).sum(1)
        return torch.stack([v_class * scale, reduction * scale, v_sub * scale, ess], 1).cpu().numpy()

    def _weights(self, q: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """The posterior w (draws, M) at the centred points q, subnormal weights set to 0 (matrix
        products may flush them to 0 and the other sums not)."""
        quad = t * t * self.a + 2 * t * s * self.b + s * s * self.e
        for col in self.cols:
            _, _, p, px, pu, _ = self._block(col)
            qc = q[:, col]
            quad += (qc * qc) @ p.T - 2 * (t * (qc @ px.T) + s * (qc @ pu.T))
        w = torch.softmax(-0.5 * quad / (s * s) - self.log_sigma, dim=1)
        return torch.where(w < torch.finfo(w.dtype).tiny, 0.0, w)


def _weighted_spread(w: torch.Tensor, x: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """sum_j w_bj ||x_j - centre_b||^2 per draw b (w (B, M), x (M, D), centre (B, D)), a block of
    draws at a time (at most BLOCK_ELEMENTS values per (draws, M, D) block)."""
    step = max(1, BLOCK_ELEMENTS // max(1, x.numel()))
    return torch.cat(
        [
            (w[s : s + step] * ((x[None] - centre[s : s + step, None]) ** 2).sum(2)).sum(1)
            for s in range(0, len(w), step)
        ]
    )


def conditional_variance_decomposition(
    x_t: torch.Tensor,
    t: float,
    x1_ref: torch.Tensor,
    mu_ref: torch.Tensor,
    sigma_ref: torch.Tensor,
    subclass_ref: torch.Tensor,
) -> tuple[float, float, float, float]:
    """(V_c, R, V_ck, ess) at one x_t: Var(d | x_t, c), its between- and within-subclass parts.

    The class is the uniform distribution over the reference points x1_ref (M, D), point j with
    source N(mu_ref[j], diag(sigma_ref[j]^2)). V_c = sum_j w_j ||d_j - dbar||^2 (trace, not per
    dimension), R = sum_k p_k ||dbar_k - dbar||^2 with p_k the posterior mass of subclass k and
    dbar_k its posterior-mean displacement, V_ck = sum_k sum_{j in k} w_j ||d_j - dbar_k||^2, so
    V_c = R + V_ck up to rounding. ess = 1 / sum_j w_j^2.
    """
    rows = torch.arange(len(x1_ref), device=x1_ref.device)
    return _one_draw(x_t.to(torch.float64), t, x1_ref, mu_ref, sigma_ref, subclass_ref, rows)


def _one_draw(x_t, t, x1, mu, sigma, subclass, ref) -> tuple[float, float, float, float]:
    """conditional_variance_decomposition over the rows `ref` of x1, mu, sigma and subclass, taken
    a block of dimensions at a time (BLOCK_ELEMENTS per float64 block; one block: the plain formulas).

    d_j = (x1_j - x_t) / (1 - t); every quantity is a sum over dimensions once the posterior w is
    known, so a first pass over the blocks sums the log-weights and a second the three variances.
    """
    cols = _column_blocks(x1.shape[1], len(ref))

    def block(col, *tables):
        return (torch.index_select(a[:, col], 0, ref).to(torch.float64) for a in tables)

    log_w = sum(_log_weights(x_t[col], t, *block(col, x1, mu, sigma)) for col in cols)
    w = torch.softmax(log_w, dim=0)
    _, k = torch.unique(subclass[ref], return_inverse=True)
    p = torch.zeros(int(k.max()) + 1, dtype=torch.float64, device=w.device).index_add_(0, k, w)
    v_class = reduction = v_sub = 0.0
    for col in cols:
        (x1_ref,) = block(col, x1)
        d = (x1_ref - x_t[col]) / (1 - t)
        dbar = w @ d
        v_class = v_class + w @ ((d - dbar) ** 2).sum(1)
        dbar_k = torch.zeros(len(p), d.shape[1], dtype=torch.float64, device=d.device)
        dbar_k = dbar_k.index_add_(0, k, w.unsqueeze(1) * d) / p.clamp(min=1e-300).unsqueeze(1)
        reduction = reduction + p @ ((dbar_k - dbar) ** 2).sum(1)
        v_sub = v_sub + w @ ((d - dbar_k[k]) ** 2).sum(1)
    return float(v_class), float(reduction), float(v_sub), float(1.0 / (w @ w))


def _log_weights(x_t, t, x1_ref, mu_ref, sigma_ref) -> torch.Tensor:
    """log N(x_t; t x1_j + (1 - t) mu_j, (1 - t)^2 diag(sigma_j^2)) up to a constant (in j)."""
    scale = (1 - t) * sigma_ref
    z = (x_t - t * x1_ref - (1 - t) * mu_ref) / scale
    # The log-determinant differs between points only when their sources' scales differ.
    return -0.5 * (z**2).sum(1) - torch.log(scale).sum(1)


def _column_blocks(dim: int, rows: int) -> list[slice]:
    """Slices of the D dimensions, each at most BLOCK_ELEMENTS / rows wide (at least one column)."""
    width = max(1, BLOCK_ELEMENTS // max(1, rows))
    return [slice(s, s + width) for s in range(0, dim, width)]


def _reference_rows(members: np.ndarray, i: int, max_reference: int, rng: np.random.Generator) -> np.ndarray:
    """Rows of i's class the posterior runs over: all, or i plus a random subset of the others."""
    if len(members) <= max_reference:
        return members
    others = rng.choice(members[members != i], size=max_reference - 1, replace=False)
    return np.concatenate([[i], others])


def _summarise(draws: np.ndarray, dim: int, t_max: float) -> dict:
    """Per-dimension means and standard errors of the per-draw (V_c, R, V_ck), plus diagnostics."""
    v_class, reduction, v_sub, ess = draws.T
    n = len(draws)

    def mean_se(x: np.ndarray) -> tuple[float, float]:
        return float(x.mean() / dim), float(x.std(ddof=1) / np.sqrt(n) / dim)

    (rc, rc_se), (rs, rs_se), (red, red_se) = mean_se(v_class), mean_se(v_sub), mean_se(reduction)
    gap = float((np.abs(v_class - v_sub - reduction) / np.maximum(v_class, np.finfo(float).tiny)).max())
    ess_h = float(1.0 / np.mean(1.0 / ess))
    return {
        "risk_class": rc,
        "risk_class_se": rc_se,
        "risk_subclass": rs,
        "risk_subclass_se": rs_se,
        "reduction": red,
        "reduction_se": red_se,
        "max_identity_gap": gap,
        "ess": ess_h,
        "posterior_ess": float(ess.mean()),
        "reliable": reliable(ess_h, gap),
        "n_mc": n,
        "t_max": float(t_max),
    }


def reliable(ess: float, identity_gap: float) -> bool:
    """Whether an estimate can stand for the population's risk: ess >= ESS_MIN, gap <= IDENTITY_GAP_MAX.

    The estimate is the risk of the empirical training distribution. A draw whose posterior has
    collapsed onto one training point contributes about zero risk, so the estimate runs low by
    up to about 1 / ess (measured on two Gaussian subclasses with known risk, D = 2 to 256:
    1 / ess 0.03 -> 1 % low, 0.08 -> 5 %, 0.26 -> 11 %, 0.45 -> 45 %, 0.7 -> 75 %); ess >= 20
    keeps that under ~5 %. An identity gap above 1e-6 means some draw's class variance was
    rounding noise, i.e. that draw had collapsed completely.
    """
    return bool(ess >= ESS_MIN and identity_gap <= IDENTITY_GAP_MAX)


def _check_inputs(x1, labels, subclass, source_mu, source_sigma, n_mc, t_max, max_reference):
    """Flatten and validate the inputs; broadcast shared (D,) sources to (n, D)."""
    x1 = x1.reshape(len(x1), -1)
    n, dim = x1.shape
    if len(labels) != n or len(subclass) != n or n == 0:
        raise BenchError(
            f"fm_risk_decomposition needs one label and one subclass per point (got {n} points, "
            f"{len(labels)} labels, {len(subclass)} subclasses); pass matching tensors"
        )
    if not 0.0 < t_max < 1.0 or n_mc < 2 or max_reference < 1:
        raise BenchError(
            f"fm_risk_decomposition needs 0 < t_max < 1, n_mc >= 2 and max_reference >= 1 "
            f"(got {t_max}, {n_mc}, {max_reference}); fix the arguments"
        )
    mu, sigma = (
        _per_row(s, n, dim, name).to(x1.device)
        for s, name in ((source_mu, "source_mu"), (source_sigma, "source_sigma"))
    )
    if not bool((sigma > 0).all()):
        raise BenchError(
            "fm_risk_decomposition needs source_sigma > 0 everywhere; pass scales, not log-scales"
        )
    return x1, labels.reshape(-1).to(x1.device), subclass.reshape(-1).to(x1.device), mu, sigma


def _per_row(source: torch.Tensor, n: int, dim: int, name: str) -> torch.Tensor:
    """A source parameter as (n, D): given per row, or one (D,) vector shared by all rows."""
    source = torch.as_tensor(source)
    if source.numel() == dim:
        return source.reshape(1, dim).expand(n, dim)
    if source.numel() != n * dim:
        raise BenchError(f"{name} must have shape (n, D) = ({n}, {dim}) or (D,); got {tuple(source.shape)}")
    return source.reshape(n, dim)
