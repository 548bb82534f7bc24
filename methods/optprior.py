"""optprior: flow matching with GMM-induced subclasses and optimised subclass sources (the paper).

Offline (`fit_prior`), per class c: residuals r = z - m_c, a diagonal GMM selected by EBIC gives
hard subclass assignments k(x) and weights pi_ck; every (c, k) gets a learned diagonal Gaussian
source N(mu_ck, sigma_ck^2) and a unit prototype u_ck, fitted by the proxy objective of
`bench.priors.source_opt` with fixed outlier caps. Training conditions the velocity field on (c, k)
tokens and draws x0 from the (c, k) source; sampling class c draws k ~ Categorical(pi_c), never
inferring k from data. The ablations switch either half off: `optprior_sub` keeps the subclass
tokens with the N(0, I) source, `optprior_opt` keeps the learned source with K = 1 per class.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from bench.config.checks import is_real
from bench.errors import BenchError
from bench.method import Condition, Method
from bench.prior import Prior, class_means
from bench.priors.bayes_risk import fm_risk_decomposition
from bench.priors.bayes_risk_gmm import gmm_risk_decomposition, random_partition_null
from bench.priors.displacement import displacement_geometry, mean_directions
from bench.priors.source_geometry import held_out_geometry, matched_spreads
from bench.priors.source_opt import (
    OBJECTIVE_SCALES,
    ProxyConfig,
    SourceParams,
    displacements,
    fixed_caps,
    normal_like,
    optimize_sources,
)
from bench.priors.subclass import (
    check_subclass_config,
    induce_subclasses,
    induction_peak_bytes,
    run_within_budget,
)
from bench.registry import register_method
from bench.runtime.heap import release_freed_memory
from bench.runtime.stopwatch import Stopwatch

log = logging.getLogger(__name__)

# [our default] GiB of induction memory in flight: the sum of the running classes' estimates
# (bench.priors.subclass.induction_peak_bytes). At the offline case's shape (n = 20,000, D = 16,384,
# 20 classes of 4,339 down to 43 rows) the induction starts with 1.6 GiB resident (latents 1.25 GiB +
# the process): 1.6 + 2.5 = 4.1 GiB is no more than the stage's other parts (initialisation 4.1,
# geometry 4.3 GiB), and leaves 1.9 GiB of the 6 GiB target for the estimate's error and for the
# allocator's retained pages. 2.5 keeps only the two largest classes (1.64 + 1.29 GiB) apart; on
# 2 threads that cost no time (induction 68.7 / 72.8 s against 68.4 / 69.6 s without a budget).
INDUCTION_MEMORY_GIB = 2.5


class SubclassPrior(Prior):
    """optprior's fitted prior. Tensors (D = flattened latent size, K = k_max):

    class_mean (C, D); weights (C, K) = pi_ck (0 beyond K_c); assignment (N,) = k of every
    training row; mu, log_sigma, prototype (C*K, D) = the source of group g = c*K + k;
    caps (C*K,) = the fixed 99th-percentile radii r_ck.
    """

    def validate(self, latent_shape: tuple, n_classes: int, n_rows: int) -> SubclassPrior:
        """The base checks plus the shapes above (K read from `weights`)."""
        super().validate(latent_shape, n_classes, n_rows)
        weights = self.tensors.get("weights")
        if weights is None or weights.dim() != 2:
            raise ValueError("prior tensor 'weights' is missing or not (C, K)")
        d, k = int(torch.Size(latent_shape).numel()), int(weights.shape[1])
        self.require_shape("class_mean", (n_classes, d))
        self.require_shape("weights", (n_classes, k))
        self.require_shape("assignment", (n_rows,))
        for name in ("mu", "log_sigma", "prototype"):
            self.require_shape(name, (n_classes * k, d))
        self.require_shape("caps", (n_classes * k,))
        return self


@register_method("optprior")
class OptPrior(Method):
    """Subclass tokens + optimised subclass sources (the paper's full method)."""

    subclasses_default = True
    learned_source_default = True
    # 2: the offline stage records the Gaussian-mixture Bayes risk against random partitions and the
    # geometry against the initialisation and a length-matched source (issue 25); sources unchanged
    prior_version = 2

    def __init__(
        self,
        k_max: int = 8,
        gamma: float = 0.5,
        min_size: int = 10,
        pca_dim: int | None = None,
        gmm_n_init: int = 1,
        kappa: float = 0.5,
        lambda_cap: float = 1.0,
        lambda_scale: float = 0.1,
        steps: int = 2500,
        lr: float = 1e-2,
        batch_size: int = 4096,
        cap_quantile: float = 0.99,
        objective_scale: str = "per_dim",
        subclasses: bool | None = None,
        learned_source: bool | None = None,
        risk_samples: int = 1000,
        risk_gmm_samples: int = 2000,
        risk_partitions: int = 20,
        risk_empirical_max_dim: int | None = 256,
        geometry_draws: int = 5,
        kappa_sweep: tuple = (),
        induction_memory_gib: float | None = INDUCTION_MEMORY_GIB,
    ):
        super().__init__()
        self.subclasses = self.subclasses_default if subclasses is None else bool(subclasses)
        self.learned_source = self.learned_source_default if learned_source is None else bool(learned_source)
        self.k_max = k_max if self.subclasses else 1
        self.gamma, self.min_size, self.pca_dim, self.gmm_n_init = gamma, min_size, pca_dim, gmm_n_init
        check_subclass_config(self.k_max, gamma, min_size, pca_dim, owner=self.name)
        self.proxy = ProxyConfig(
            kappa=kappa,
            lambda_cap=lambda_cap,
            lambda_scale=lambda_scale,
            steps=steps,
            lr=lr,
            batch_size=batch_size,
            cap_quantile=cap_quantile,
            objective_scale=objective_scale,
        )
        _check_proxy(self.proxy)
        self.risk_samples = risk_samples
        self.risk_gmm_samples, self.risk_partitions = risk_gmm_samples, risk_partitions
        self.risk_empirical_max_dim = risk_empirical_max_dim
        self.geometry_draws, self.kappa_sweep = _check_geometry(geometry_draws, kappa_sweep)
        self.induction_memory_gib = _check_budget(induction_memory_gib)

    def check_data(self, train_counts: list) -> None:
        """k_max subclasses of min_size samples must fit in the largest class."""
        largest = max(train_counts)
        if self.k_max * self.min_size > largest:
            raise BenchError(
                f"{self.name}.k_max={self.k_max} needs a class of at least k_max * min_size = "
                f"{self.k_max * self.min_size} samples, but the largest has {largest}; lower "
                f"{self.name}.k_max or {self.name}.min_size"
            )

    def prior_class(self):
        """optprior stores a SubclassPrior."""
        return SubclassPrior

    # -- offline stage ------------------------------------------------------------------
    def fit_prior(self, latents, labels, n_classes, seed):
        """Subclass induction, source initialisation and optimisation, plus analysis numbers.

        info["seconds"] says where the offline stage's time went (induction, init, optimisation,
        geometry, bayes_risk).
        """
        clock = Stopwatch()
        x = latents.reshape(len(latents), -1).float()
        means = class_means(x, labels, n_classes)
        release_freed_memory()  # each phase starts without what the one before freed (bench.runtime.heap)
        fits = self._induce(x, means, labels, n_classes, seed)
        sub = _assignment(fits, labels)
        release_freed_memory()
        clock.lap("induction")
        group = labels * self.k_max + sub
        n_groups = n_classes * self.k_max
        caps = fixed_caps(x, means, labels, group, n_groups, self.proxy.cap_quantile)
        init, decisions = self._initial_sources(x, labels, group, means, n_groups, seed)
        info = {
            "k": [f.k for f in fits],
            "sizes": [f.sizes for f in fits],
            "ebic": [{str(k): v for k, v in f.ebic.items()} for f in fits],
            "notes": [f.note for f in fits],
            "init": decisions,
            "subclasses": self.subclasses,
            "learned_source": self.learned_source,
        }
        params = init
        release_freed_memory()
        clock.lap("init")
        if self.learned_source:
            result = optimize_sources(init, x, group, caps, self.proxy, seed)
            params, info["loss_trace"] = result.params, result.trace
        release_freed_memory()
        clock.lap("optimisation")
        info["geometry"] = self._geometry(x, labels, group, init, params, n_classes, seed)
        release_freed_memory()
        clock.lap("geometry")
        info["bayes_risk"] = self._bayes_risk(x, labels, sub, group, params, seed)
        clock.lap("bayes_risk")
        info["seconds"] = clock.laps
        tensors = {
            "class_mean": means,
            "weights": _weights(fits, self.k_max),
            "assignment": sub,
            "mu": params.mu,
            "log_sigma": params.log_sigma,
            "prototype": torch.nn.functional.normalize(params.prototype, dim=1),
            "caps": caps,
        }
        return SubclassPrior(tensors, info)

    def _induce(self, x, means, labels, n_classes, seed) -> list:
        """One SubclassFit per class (K = 1 everywhere when subclasses are switched off), each from
        its class's residuals x - m_c.

        The classes are fitted on torch.get_num_threads() threads, largest first, each fit with
        one BLAS and one OpenMP thread: sklearn's EM is partly serial numpy, so classes side by
        side keep the cores busy where one fit's threads would not. A fit holds about
        induction_peak_bytes(n_c, D) at its peak (its float64 residuals and sklearn's copies), and
        a class starts only while the estimates in flight plus its own stay within
        `induction_memory_gib` (a class alone always runs): the induction's peak is bounded by
        the budget, not by how the fits happen to overlap. The fits depend neither on the number
        of threads nor on the order nor on the budget.
        """

        def fit(c: int):
            r = (x[labels == c] - means[c]).double().numpy()
            if len(r) == 0:
                raise BenchError(f"class {c} has no training samples; optprior needs at least one per class")
            with threadpool_limits(limits=1, user_api="openmp"):  # this thread's OpenMP (sklearn's k-means)
                return induce_subclasses(
                    r,
                    k_max=self.k_max,
                    gamma=self.gamma,
                    min_size=self.min_size,
                    seed=seed,
                    pca_dim=self.pca_dim,
                    n_init=self.gmm_n_init,
                    owner=self.name,
                )

        counts = torch.bincount(labels, minlength=n_classes).tolist()
        order = sorted(range(n_classes), key=lambda c: -counts[c])
        cost = {c: induction_peak_bytes(counts[c], x.shape[1]) for c in order}
        budget = None if self.induction_memory_gib is None else self.induction_memory_gib * 2**30
        with threadpool_limits(limits=1, user_api="blas"):
            done = run_within_budget(fit, order, cost, budget, torch.get_num_threads())
        fits = [done[c] for c in range(n_classes)]
        for c, f in enumerate(fits):
            log.info("optprior: class %d: K=%d sizes %s%s", c, f.k, f.sizes, f" ({f.note})" if f.note else "")
        return fits

    def _initial_sources(self, x, labels, group, means, n_groups, seed):
        """Class-mean or standard initialisation per class, by the paper's rule (logged).

        Every displacement set is written into one reused (n, D) buffer (`displacements`).
        """
        d_dim = x.shape[1]
        mu = torch.zeros(n_groups, d_dim)
        eps, buffer = normal_like(x, seed), torch.empty_like(x)
        parent = torch.arange(n_groups) // self.k_max
        decisions = []
        for c in range(len(means)):
            rows = torch.nonzero(labels == c).flatten()
            standard = displacement_geometry(
                displacements(x, eps, labels, rows=rows, out=buffer), group[rows], parent=parent
            )
            centred = displacement_geometry(
                displacements(x, eps, labels, means, rows=rows, out=buffer), group[rows], parent=parent
            )
            use_mean = _lowers(centred, standard)
            if use_mean and self.learned_source:
                mu[c * self.k_max : (c + 1) * self.k_max] = means[c]
            decisions.append(
                {
                    "class": c,
                    "init": "class_mean" if use_mean else "standard",
                    "overlap_standard": standard.get("angular_overlap"),
                    "overlap_class_mean": centred.get("angular_overlap"),
                    "radial_std_standard": standard["radial_std"],
                    "radial_std_class_mean": centred["radial_std"],
                }
            )
            log.info("optprior: class %d source init: %s", c, decisions[-1]["init"])
        prototype = mean_directions(displacements(x, eps, group, mu, out=buffer), group, n_groups).float()
        return SourceParams(mu, torch.zeros(n_groups, d_dim), prototype), decisions

    def _geometry(self, x, labels, group, init, params, n_classes, seed) -> dict:
        """Table 2 numbers of every source, scored by one rule over `geometry_draws` noise draws
        (bench.priors.source_geometry: each group's prototype is its unit mean direction on a
        held-out draw; mean and SE over the scoring draws), grouped by subclass:

        "standard" N(0, I); "init" the initial sources (the paper's before); "matched" the
        isotropic class-mean source N(m_c, s_c^2 I) with s_c tuned so that its mean path length
        in class c equals the optimised source's ("spread" lists s_c, "unreached" the classes
        where no s_c >= 0 does, s_c = 0 there); "optimised" the learned sources, with
        `alignment_learned` against the learned prototypes; and "optimised_kappa<kappa>" for each
        hinge margin of `kappa_sweep`, optimised again from the same init. None of it feeds the
        flow: training uses `params` only.
        """
        if self.geometry_draws < 1:
            return {}
        n_groups = n_classes * self.k_max
        parent = torch.arange(n_groups) // self.k_max
        means = class_means(x, labels, n_classes)
        optimised = (params.mu, params.log_sigma.exp())
        spreads, unreached, targets = matched_spreads(
            x, labels, means, optimised, group, seed, self.geometry_draws
        )
        sources = {
            "standard": (None, None),
            "init": (init.mu, init.log_sigma.exp()),
            "matched": (means[parent], torch.tensor(spreads, dtype=x.dtype)[parent].unsqueeze(1)),
            "optimised": optimised,
        }
        learned = {"optimised": params.prototype}
        caps = (
            fixed_caps(x, means, labels, group, n_groups, self.proxy.cap_quantile)
            if self.kappa_sweep
            else None
        )
        for kappa in self.kappa_sweep if self.learned_source else ():
            name = f"optimised_kappa{kappa:g}"
            swept = (
                params
                if kappa == self.proxy.kappa
                else optimize_sources(
                    init, x, group, caps, dataclasses.replace(self.proxy, kappa=kappa), seed
                ).params
            )
            sources[name], learned[name] = (swept.mu, swept.log_sigma.exp()), swept.prototype
        out = held_out_geometry(x, group, parent, sources, seed, self.geometry_draws, learned)
        out["matched"].update(spread=spreads, unreached=unreached, target_path_length=targets)
        for name in out:
            if name.startswith("optimised_kappa"):
                out[name]["kappa"] = float(name[len("optimised_kappa") :])
        return out

    def _bayes_risk(self, x, labels, sub, group, params, seed) -> dict:
        """Eq. 1-2: Bayes FM risk and its reduction by subclass conditioning, per source.

        "standard" / "learned": the empirical-distribution estimate (`bench.priors.bayes_risk`,
        risk_samples draws), skipped when D > risk_empirical_max_dim (None: never skipped): at
        D = 1024 with phantom_lt's 3,723 training rows it costs ~10 ms a draw, ~20 s for both
        sources (timed on random data, 2 idle cores), and in high dimension its posterior collapses
        (effective size ~2 on digits_lt at D = 64). "gmm": {"standard", "learned"}, the Gaussian-mixture estimate
        (`bench.priors.bayes_risk_gmm`, risk_gmm_samples draws; claim (a)'s primary estimate).
        "random_partitions": the induced reduction against risk_partitions size-matched random
        partitions, standard source, the same draws as gmm/standard. risk_samples <= 0 skips all.
        """
        if self.risk_samples <= 0:
            return {}
        sources = (
            ("standard", torch.zeros_like(x), torch.ones_like(x)),
            ("learned", params.mu[group], params.log_sigma[group].exp()),
        )
        out = {}
        if self.risk_empirical_max_dim is None or x.shape[1] <= self.risk_empirical_max_dim:
            for name, mu, sigma in sources:
                out[name] = fm_risk_decomposition(
                    x, labels, sub, mu, sigma, n_mc=self.risk_samples, seed=seed
                )
        if self.risk_gmm_samples > 1:
            out["gmm"] = {
                name: gmm_risk_decomposition(x, labels, sub, mu, sigma, n_mc=self.risk_gmm_samples, seed=seed)
                for name, mu, sigma in sources
            }
            if self.risk_partitions > 0:
                out["random_partitions"] = random_partition_null(
                    x, labels, sub, self.risk_partitions, n_mc=self.risk_gmm_samples, seed=seed
                )
        return out

    # -- conditioning -------------------------------------------------------------------
    @property
    def n_tokens(self) -> int:
        """A class token, plus a subclass token when subclasses are on."""
        return 2 if self.subclasses else 1

    @property
    def vocab_size(self) -> int:
        """Null token 0, class tokens 1..C, subclass tokens C+1 .. C + C*K."""
        return 1 + self.n_classes + (self.n_classes * self.k_max if self.subclasses else 0)

    def tokens(self, cond: Condition) -> torch.Tensor:
        """[class token, subclass token]; an unconditional sample (label -1) gets [0, 0]."""
        class_token = super().tokens(cond)
        if not self.subclasses:
            return class_token
        sub = cond.subclass if cond.subclass is not None else torch.zeros_like(cond.label)
        sub_token = 1 + self.n_classes + cond.label * self.k_max + sub
        return torch.cat([class_token, torch.where(cond.label < 0, 0, sub_token).unsqueeze(1)], dim=1)

    def training_condition(self, labels, index) -> Condition:
        """Each training row is conditioned on its induced subclass k(x)."""
        assignment = self.prior.tensors["assignment"]
        return Condition(labels, assignment[index.to(assignment.device)].to(labels.device))

    def sampling_condition(self, labels, u) -> Condition:
        """k ~ Categorical(pi_c), by inverting the CDF at the per-sample uniform u."""
        cdf = self.prior.tensors["weights"].cumsum(dim=1).to(labels.device)[labels]
        k = (cdf < u.to(cdf).unsqueeze(1)).sum(dim=1).clamp(max=self.k_max - 1)
        return Condition(labels, k)

    # -- source -------------------------------------------------------------------------
    def sample_source(self, cond: Condition, eps: torch.Tensor) -> torch.Tensor:
        """x0 = mu_ck + sigma_ck * eps (the N(0, I) source when learned sources are off)."""
        if not self.learned_source:
            return eps
        sub = cond.subclass if cond.subclass is not None else torch.zeros_like(cond.label)
        g = (cond.label * self.k_max + sub).to(eps.device)
        t = self.prior.tensors
        flat = eps.reshape(len(eps), -1)
        x0 = t["mu"][g].to(eps) + t["log_sigma"][g].exp().to(eps) * flat
        return x0.reshape(eps.shape)

    def describe(self) -> dict:
        """Configuration and the prior's analysis numbers (K, sizes, geometry, Bayes risk)."""
        out = {
            "name": self.name,
            "subclasses": self.subclasses,
            "learned_source": self.learned_source,
            "k_max": self.k_max,
            "gamma": self.gamma,
            "min_size": self.min_size,
            "proxy": vars(self.proxy),
        }
        if self.prior is not None:
            info = self.prior.info
            out.update({k: info.get(k) for k in ("k", "sizes", "init", "geometry", "bayes_risk")})
        return out


@register_method("optprior_sub")
class OptPriorSub(OptPrior):
    """Ablation "Sub only": subclass tokens with the standard N(0, I) source."""

    learned_source_default = False


@register_method("optprior_opt")
class OptPriorOpt(OptPrior):
    """Ablation "Opt only": K = 1 per class with a learned class-level source."""

    subclasses_default = False


def _check_proxy(cfg: ProxyConfig) -> None:
    """Reject proxy settings that cannot work, before any training."""
    if cfg.steps < 0 or cfg.lr <= 0 or cfg.batch_size < 1:
        raise BenchError("optprior.steps must be >= 0, optprior.lr > 0 and optprior.batch_size >= 1")
    if cfg.lambda_cap < 0 or cfg.lambda_scale < 0:
        raise BenchError("optprior.lambda_cap and optprior.lambda_scale must be >= 0")
    if not 0 < cfg.cap_quantile <= 1:
        raise BenchError(f"optprior.cap_quantile must be in (0, 1], got {cfg.cap_quantile}")
    if cfg.objective_scale not in OBJECTIVE_SCALES:
        raise BenchError(
            f"optprior.objective_scale must be one of {', '.join(map(repr, OBJECTIVE_SCALES))}, "
            f"got {cfg.objective_scale!r}"
        )


def _check_budget(gib):
    """induction_memory_gib: None (no limit) or a finite number of GiB > 0."""
    if gib is not None and (not is_real(gib) or gib <= 0):
        raise BenchError(
            f"optprior.induction_memory_gib={gib!r}: use a number of GiB > 0 (the estimated memory "
            f"of the classes induced at once), or None for no limit"
        )
    return gib


def _check_geometry(draws, kappas) -> tuple[int, tuple]:
    """geometry_draws (int >= 0; 0 skips the geometry) and kappa_sweep (hinge margins in [0, 1))."""
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 0:
        raise BenchError(
            f"optprior.geometry_draws={draws!r}: use an integer >= 0 (2 or more for an SE; 0 skips it)"
        )
    try:
        kappas = tuple(float(k) for k in kappas)
    except (TypeError, ValueError):
        raise BenchError(
            f"optprior.kappa_sweep={kappas!r}: use a tuple of hinge margins, e.g. (0.5, 0.7, 0.9)"
        ) from None
    if any(not 0 <= k < 1 for k in kappas):
        raise BenchError(f"optprior.kappa_sweep={kappas!r}: every hinge margin must be in [0, 1)")
    return draws, kappas


def _lowers(centred: dict, standard: dict) -> bool:
    """The paper's rule: class-mean init if it lowers angular overlap (when defined) and radial spread."""
    overlap_ok = True
    if centred.get("angular_overlap") is not None and standard.get("angular_overlap") is not None:
        overlap_ok = centred["angular_overlap"] < standard["angular_overlap"]
    return overlap_ok and centred["radial_std"] < standard["radial_std"]


def _assignment(fits, labels) -> torch.Tensor:
    """Scatter each class's hard subclass assignments back to training-row order."""
    sub = torch.zeros(len(labels), dtype=torch.long)
    for c, fit in enumerate(fits):
        sub[labels == c] = torch.from_numpy(np.asarray(fit.assignment, dtype=np.int64))
    return sub


def _weights(fits, k_max) -> torch.Tensor:
    """pi_ck padded with zeros to (C, k_max)."""
    w = torch.zeros(len(fits), k_max)
    for c, fit in enumerate(fits):
        w[c, : fit.k] = torch.as_tensor(np.asarray(fit.weights), dtype=torch.float32)
    return w
