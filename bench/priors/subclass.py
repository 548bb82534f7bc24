"""Subclass induction: split one class's latent residuals into K submodes by a diagonal GMM and EBIC.

This is the offline step 2 of optprior (paper section 2, "Subclass conditioning"; NOTES section 1,
item 2). For one class c with residuals r = z - m_c (shape (n_c, D), flattened by the caller) we
fit diagonal Gaussian mixtures for K = 1..min(k_max, n_c // min_size), pick K by

    EBIC_gamma(K) = -2 log L_K + p_K log n_c + 2 gamma log C(P, p_K),   P = p_{2 k_max},

then guard tiny tail subclasses: a K whose hard assignments leave any subclass below `min_size`
is skipped for the next-best K by EBIC (K = 1 always qualifies), and a class with fewer than
2 * min_size samples gets K = 1 without fitting anything larger.

Cost: each EM step of a diagonal GMM is O(n K D) in time and O(n D + n K) in memory, so even
D = 16,384 without PCA fits in memory: a fit peaks at INDUCTION_COPY_FACTOR (3.1, measured)
float64 n x D arrays, the residuals and sklearn's copies (n = 5,000: about 2 GB); optprior adds
these estimates up to induce several classes at once within a memory budget (`run_within_budget`).
What grows is time (fitting K = 1..8 costs the EM time of 36 single components), which is what
the optional `pca_dim` is for: n = 5,000, D = 16,384, pca_dim = 64 takes under half a minute on
2 CPU cores, mostly the randomized PCA. optprior leaves it off: it changes the subclasses, most on
small classes (measurements in docs/methods.md).

Why P = p_{2 k_max} [our choice] and not p_{k_max} (the form in NOTES): log C(P, p) rises only
up to p = P / 2 and falls back to 0 at p = P. With P = p_{k_max} the gamma term therefore
*favours* K near k_max once K > k_max / 2 (on a noisy ring BIC picked K = 4 and gamma = 0.5 picked
K = 8), the opposite of the conservative gamma the paper's discussion relies on for tiny tail
classes. With P = p_{2 k_max} = 2 p_{k_max} + 1 every candidate has p_K < P / 2, the term increases
with K, and a larger gamma never selects more subclasses.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np

from bench.config.checks import is_int, is_real
from bench.errors import BenchError

_SHOWN_ROWS = 5  # how many offending row indices a non-finite error names

# Peak memory of one class's induction (optprior's `_induce` closure: the float32 slice, its float64
# residuals r, then k-means' copy of r and np.var's temporary inside sklearn), in float64 (n_c, D)
# arrays over the resident memory before it. Measured in a child process by ru_maxrss, one class of
# two Gaussian subclasses at D = 16,384, K = 1..8 fitted, no PCA: 3.10 (n_c = 1,000), 3.05 (2,000),
# 3.02 (4,339, the offline case's largest class), i.e. 3.0 arrays plus ~12 MB of fixed overhead.
INDUCTION_COPY_FACTOR = 3.1


@dataclass
class SubclassFit:
    """The induced partition of one class: K, hard assignments, weights pi_k and the EBIC curve."""

    k: int  # selected number of subclasses
    assignment: np.ndarray  # (n,) int64 in [0, k), relabelled so subclass 0 is the largest
    weights: np.ndarray  # (k,) pi_k = n_k / n
    sizes: list[int]  # n_k
    ebic: dict[int, float]  # K -> EBIC for every K that was fitted
    note: str  # why this K


def n_free_parameters(k: int, d: int) -> int:
    """p_K of a diagonal GMM: k means and k variances in d dims plus k - 1 free weights."""
    return k * 2 * d + (k - 1)


def ebic(log_likelihood: float, n: int, d: int, k: int, k_max: int, gamma: float) -> float:
    """EBIC_gamma(K) = -2 log L + p_K log n + 2 gamma log C(P, p_K) with P = p_{2 k_max}.

    gamma = 0 is BIC; the extra term charges for how many models of size p_K the search covers,
    increasingly in K (see the module docstring for the choice of P).
    """
    if not 1 <= k <= k_max:
        raise ValueError(f"ebic needs 1 <= k <= k_max, got k={k}, k_max={k_max}")
    p, big_p = n_free_parameters(k, d), n_free_parameters(2 * k_max, d)
    log_choose = math.lgamma(big_p + 1) - math.lgamma(p + 1) - math.lgamma(big_p - p + 1)
    return -2.0 * log_likelihood + p * math.log(n) + 2.0 * gamma * log_choose


def induction_peak_bytes(n: int, d: int) -> int:
    """Estimated peak bytes of inducing one class of n residuals in d dims (no PCA): the measured
    INDUCTION_COPY_FACTOR float64 (n, d) arrays. What optprior's induction budget adds up."""
    return int(INDUCTION_COPY_FACTOR * n * d * 8)


def run_within_budget(
    fn: Callable,
    items: Iterable[Hashable],
    cost: dict,
    budget: float | None,
    workers: int,
    on_start: Callable | None = None,
) -> dict:
    """{item: fn(item)} for every item, on `workers` threads, under a memory budget.

    Items start in the given order, each once a thread is free and the costs in flight plus its
    own are <= budget (None: no limit); an item that does not fit waits while a later one that
    fits may start, so small items keep the threads busy beside a large one. An item always
    starts when nothing is in flight, even alone over budget. The sum of the costs in flight is
    therefore <= max(budget, the largest single cost) at every moment, whatever the timing.
    `on_start(item, in_flight)` is called at each start with the cost then in flight (its own
    included). The first exception of fn is raised after the items in flight have finished.
    """
    pending, running, results = list(items), {}, {}
    with ThreadPoolExecutor(max(1, workers)) as pool:
        while pending or running:
            for item in list(pending):
                held = sum(cost[i] for i in running.values())
                if len(running) >= max(1, workers):
                    break
                if running and budget is not None and held + cost[item] > budget:
                    continue
                pending.remove(item)
                if on_start is not None:
                    on_start(item, held + cost[item])
                running[pool.submit(fn, item)] = item
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                results[running.pop(future)] = future.result()
    return results


def check_subclass_config(k_max, gamma, min_size, pca_dim, owner: str = "optprior") -> None:
    """Raise BenchError naming the gin parameter (`owner.name`) when a setting is out of range."""
    if not is_int(k_max) or k_max < 1:
        raise BenchError(f"{owner}.k_max must be an integer >= 1, got {k_max!r}")
    if not is_real(gamma) or not 0.0 <= gamma <= 1.0:
        raise BenchError(f"{owner}.gamma must be in [0, 1] (0 is BIC), got {gamma!r}")
    if not is_int(min_size) or min_size < 1:
        raise BenchError(f"{owner}.min_size must be an integer >= 1, got {min_size!r}")
    if pca_dim is not None and (not is_int(pca_dim) or pca_dim < 1):
        raise BenchError(f"{owner}.pca_dim must be None (no PCA) or an integer >= 1, got {pca_dim!r}")


def induce_subclasses(
    residuals: np.ndarray,
    k_max: int = 8,
    gamma: float = 0.5,
    min_size: int = 10,
    seed: int = 0,
    pca_dim: int | None = None,
    n_init: int = 1,
    max_iter: int = 100,
    reg_covar: float = 1e-6,
    owner: str = "optprior",
) -> SubclassFit:
    """Partition one class's residuals (n_c, D) into EBIC-selected, size-guarded GMM subclasses.

    `owner` is the gin name of the calling method, used only in error messages.
    """
    check_subclass_config(k_max, gamma, min_size, pca_dim, owner)
    residuals = np.asarray(residuals)
    if residuals.ndim != 2:
        raise ValueError(f"residuals must be (n_c, D); flatten the latents first, got {residuals.shape}")
    _check_finite(residuals)
    n = len(residuals)
    if n < 2 * min_size:
        return _single_subclass(residuals, seed, reg_covar, k_max, gamma, min_size)
    x, pca_note = _project(residuals, pca_dim, seed)
    gmm_args = dict(seed=seed, n_init=n_init, max_iter=max_iter, reg_covar=reg_covar)
    curve, labels, unconverged = {}, {}, []
    for k in range(1, min(k_max, n // min_size) + 1):
        log_lik, labels[k], converged = _fit_gmm(x, k, **gmm_args)
        curve[k] = ebic(log_lik, n, x.shape[1], k, k_max, gamma)
        if not converged:
            unconverged.append(k)
    k, note = _select(curve, labels, min_size, gamma)
    note += pca_note + (f"; EM did not converge for K={unconverged}" if unconverged else "")
    return _relabelled(labels[k], k, curve, note)


def _single_subclass(residuals, seed, reg_covar, k_max, gamma, min_size) -> SubclassFit:
    """K = 1 for a class too small to split; its EBIC is still recorded when it can be fitted."""
    n = len(residuals)
    curve = {}
    if n >= 2:  # sklearn's GMM needs two samples even for one component
        log_lik, _, _ = _fit_gmm(residuals.astype(np.float64), 1, seed, 1, 100, reg_covar)
        curve[1] = ebic(log_lik, n, residuals.shape[1], 1, k_max, gamma)
    note = f"tiny class (n={n} < 2*min_size={2 * min_size}): K=1"
    return _relabelled(np.zeros(n, dtype=np.int64), 1, curve, note)


def _project(residuals: np.ndarray, pca_dim, seed) -> tuple[np.ndarray, str]:
    """The GMM's input: the residuals, or their top `pca_dim` principal components (float64)."""
    if pca_dim is None:
        return residuals.astype(np.float64, copy=False), ""
    n, d = residuals.shape
    if pca_dim >= d:  # a full-rank rotation cannot speed the GMM up
        return residuals.astype(np.float64, copy=False), f"; PCA skipped (pca_dim {pca_dim} >= D={d})"
    # Centred residuals have rank <= n - 1; a zero-variance component would only add reg_covar noise.
    dim = min(pca_dim, n - 1)
    note = f" (pca_dim {pca_dim} clamped to n-1)" if dim < pca_dim else ""
    from sklearn.decomposition import PCA  # scikit-learn loads only where a prior is fitted (a fast CLI)

    projected = PCA(n_components=dim, random_state=seed).fit_transform(residuals)
    return projected.astype(np.float64, copy=False), f"; GMM on {dim} PCA components" + note


def _fit_gmm(x, k, seed, n_init, max_iter, reg_covar) -> tuple[float, np.ndarray, bool]:
    """Fit one diagonal GMM; return its total log-likelihood, hard labels and convergence flag."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    gmm = GaussianMixture(
        n_components=k,
        covariance_type="diag",
        random_state=seed,
        n_init=n_init,
        max_iter=max_iter,
        reg_covar=reg_covar,
    )
    with warnings.catch_warnings():
        # Non-convergence is reported in the fit's note instead of as a warning per K.
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(x)
    return float(gmm.score(x)) * len(x), gmm.predict(x), bool(gmm.converged_)


def _select(curve: dict, labels: dict, min_size: int, gamma: float) -> tuple[int, str]:
    """The EBIC-best K whose hard assignments give every subclass >= min_size samples."""
    smallest = {k: int(np.bincount(labels[k], minlength=k).min()) for k in curve}
    ranked = sorted(curve, key=lambda k: (curve[k], k))
    best = ranked[0]
    chosen = next(k for k in ranked if smallest[k] >= min_size)  # K = 1 holds all n >= min_size
    if chosen == best:
        return best, f"K={best} minimises EBIC(gamma={gamma}) over K=1..{max(curve)}"
    return chosen, (
        f"K={best} reduced to {chosen}: a subclass of K={best} had {smallest[best]} < "
        f"min_size={min_size} samples; K={chosen} is the next-best EBIC with all subclasses >= min_size"
    )


def _relabelled(labels: np.ndarray, k: int, curve: dict, note: str) -> SubclassFit:
    """Renumber subclasses by decreasing size (ties by old label) and derive pi_k = n_k / n."""
    counts = np.bincount(labels, minlength=k)
    order = np.argsort(-counts, kind="stable")
    new_label = np.empty(k, dtype=np.int64)
    new_label[order] = np.arange(k)
    sizes = counts[order]
    n = int(sizes.sum())
    weights = sizes / n if n else np.full(k, 1.0 / k)  # an empty class still needs a distribution
    return SubclassFit(
        k=k,
        assignment=new_label[labels].astype(np.int64),
        weights=weights.astype(np.float64),
        sizes=[int(s) for s in sizes],
        ebic={int(key): float(v) for key, v in curve.items()},
        note=note,
    )


def _check_finite(residuals: np.ndarray) -> None:
    """BenchError naming the first rows with NaN or inf: they come from a broken latent or encoder."""
    bad = np.flatnonzero(~np.isfinite(residuals).all(axis=1))
    if len(bad):
        shown = ", ".join(str(i) for i in bad[:_SHOWN_ROWS]) + (", ..." if len(bad) > _SHOWN_ROWS else "")
        raise BenchError(
            f"{len(bad)} residual row(s) are not finite (rows {shown}); "
            f"check the cached latents and the encoder that produced them"
        )


def split_classes(labels: np.ndarray, subclass: np.ndarray) -> list[int]:
    """The classes whose samples fall into at least two subclasses."""
    return [int(c) for c in np.unique(labels) if len(np.unique(subclass[labels == c])) >= 2]
