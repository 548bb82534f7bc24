"""Optimised subclass sources: the offline proxy objective of the paper (section 2).

Each group g = (class c, subclass k) owns a diagonal Gaussian source N(mu_g, diag(sigma_g^2)) and a
unit prototype u_g. With displacement d = x1 - x0, rho = ||d|| and dhat = d / rho, the proxy is

    L = L_ang + lambda_cap * L_cap + lambda_scale * L_scale
    L_ang   = E[ relu(kappa - <dhat, u_g>) ]          moderate angular compactness
    L_cap   = E[ relu(rho - r_g)^2 ] / D              fixed outlier cap (r_g computed once)
    L_scale = E[ (log sigma_g)^2 ]                    log-scale pull toward a unit reference

The cap stops norm inflation (growing rho makes directions look aligned), the scale term stops
sigma collapse or explosion, and the hinge at kappa keeps the angular term "moderate" so it
cannot collapse all directions. No generator is in the loop: the objective only sees latents.

`objective_scale` says how the cap is scaled. 'per_dim' (above) divides the squared norm excess
by D, i.e. caps rho / sqrt(D) at r_g / sqrt(D): every term is then a per-element quantity that
does not grow with D (L_ang is a cosine, L_scale a per-element mean), so the lambdas weigh terms
of one scale. 'raw' is E[relu(rho - r_g)^2] as written in the paper: it grows with D (about 800
at the first step on phantom_lt, D = 1,024), dominates the other terms and collapses sigma
(docs/methods.md has the measurements).

proxy_terms is the readable definition (differentiable by autograd); optimize_sources steps on
proxy_gradients, the same loss with its gradients in closed form, which at the paper's scale
(B = 4096 rows of D = 16,384) avoids autograd's many (B, D) temporaries.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F


@dataclass
class SourceParams:
    """Learnable source parameters of G groups in D dims."""

    mu: torch.Tensor  # (G, D)
    log_sigma: torch.Tensor  # (G, D)
    prototype: torch.Tensor  # (G, D), normalised when used

    def detached(self) -> "SourceParams":
        """A copy without autograd history."""
        return SourceParams(*(v.detach().clone() for v in (self.mu, self.log_sigma, self.prototype)))


@dataclass
class ProxyTerms:
    """The three terms of the proxy objective and their weighted sum."""

    total: torch.Tensor
    ang: torch.Tensor
    cap: torch.Tensor
    scale: torch.Tensor


@dataclass
class ProxyConfig:
    """Hyperparameters of the proxy objective ([our defaults] where the paper is silent).

    Set through the optprior method's gin parameters (optprior.kappa, ...), so that they are
    part of the method's configuration and of its prior's cache key.
    """

    kappa: float = 0.5
    lambda_cap: float = 1.0
    lambda_scale: float = 0.1
    steps: int = 2500
    lr: float = 1e-2
    batch_size: int = 4096
    cap_quantile: float = 0.99
    objective_scale: str = "per_dim"  # [our choice] L_cap / D ('per_dim') or as printed ('raw')
    log_every: int = 100


OBJECTIVE_SCALES = ("per_dim", "raw")


def cap_scale(cfg: ProxyConfig, dim: int) -> float:
    """The factor that turns E[relu(rho - r_g)^2] into L_cap: 1 / D for 'per_dim', 1 for 'raw'."""
    return 1.0 / dim if cfg.objective_scale == "per_dim" else 1.0


@dataclass
class OptimResult:
    """Optimised parameters plus the loss trace [(step, total, ang, cap, scale)]."""

    params: SourceParams
    trace: list = field(default_factory=list)


def rows(table: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """table[group] via index_select, whose backward (index_add) is several times faster on the
    CPU than that of advanced indexing at (4096 x 16384)."""
    return torch.index_select(table, 0, group)


def source_sample(params: SourceParams, group: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """x0 = mu_g + sigma_g * eps for each row's group (exp taken on the G rows, not the B)."""
    return rows(params.mu, group) + rows(params.log_sigma.exp(), group) * eps


def proxy_terms(params: SourceParams, x: torch.Tensor, group: torch.Tensor, eps: torch.Tensor,
                caps: torch.Tensor, cfg: ProxyConfig) -> ProxyTerms:
    """The proxy objective on a batch of flattened latents x with their groups and noise."""
    d = x - source_sample(params, group, eps)
    rho = d.norm(dim=1)
    u = F.normalize(params.prototype, dim=1)  # normalise the G prototypes, not the B rows
    cosine = (d * rows(u, group)).sum(dim=1) / rho.clamp_min(1e-12)  # <dhat, u> without dhat
    ang = F.relu(cfg.kappa - cosine).mean()
    cap = F.relu(rho - caps[group]).pow(2).mean() * cap_scale(cfg, d.shape[1])
    # E over samples of mean_D (log sigma_g)^2, weighting each group by its rows in the batch
    counts = torch.bincount(group, minlength=len(params.log_sigma)).to(params.log_sigma)
    scale = (counts @ params.log_sigma.pow(2).mean(dim=1)) / len(group)
    total = ang + cfg.lambda_cap * cap + cfg.lambda_scale * scale
    return ProxyTerms(total, ang, cap, scale)


def fixed_caps(x: torch.Tensor, class_mean: torch.Tensor, label: torch.Tensor, group: torch.Tensor,
               n_groups: int, quantile: float) -> torch.Tensor:
    """r_g: the `quantile` of ||x - m_c|| over the samples of group g, computed once."""
    dist = (x - class_mean[label]).norm(dim=1)
    caps = torch.zeros(n_groups, dtype=x.dtype)
    for g in group.unique().tolist():
        caps[g] = torch.quantile(dist[group == g].double(), quantile).to(x.dtype)
    return caps


# -- the objective's gradients in closed form ----------------------------------------------------
#
# Per row the loss sees d_i only through rho_i = ||d_i|| and t_i = <d_i, u_g>, so
# dL/dd_i = a_i d_i + b_i u_g with per-row scalars a_i, b_i (`row_terms`), and since
# d_i = x_i - mu_g - sigma_g * eps_i:
#     dL/dmu_g        = -sum_{i in g} (a_i d_i + b_i u_g)
#     dL/dlog sigma_g = -sigma_g * sum_{i in g} (a_i d_i + b_i u_g) * eps_i  (+ the scale term's)
#     dL/du_g         =  sum_{i in g} b_i d_i   (then through u = p / ||p|| to the prototype).
# Computing these directly, a chunk of rows at a time through small reused buffers, reads each
# latent and noise row once; autograd instead materialises about ten (B, D) temporaries.

TINY = 1e-12  # the norm clamp of proxy_terms and F.normalize
# Elements of a chunk buffer: 32 rows at D = 16,384, small enough to stay in the CPU's caches;
# there 32 to 128 rows per chunk measured equally fast and 8 slower (per-call overhead).
CHUNK_ELEMENTS = 2**19


def row_terms(rho: torch.Tensor, t: torch.Tensor, cap: torch.Tensor, cfg: ProxyConfig,
              batch: int, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row: the hinge and squared cap excess of the loss, and a, b of dL/dd = a d + b u.

    With rho_c = max(rho, TINY) and cosine = t / rho_c, the hinge's gradient is
    -(u / rho_c - cosine * d / rho_c^2) where active (relu's gradient is 0 at 0, as in torch),
    the cap's is 2 relu(rho - r_g) d / rho times cap_scale; both are averaged over the `batch` rows.
    """
    rho_c = rho.clamp_min(TINY)
    cosine = t / rho_c
    hinge = F.relu(cfg.kappa - cosine)
    excess = F.relu(rho - cap)
    active = (hinge > 0).to(rho) / batch
    a = torch.where(rho >= TINY, active * cosine / rho_c.square(), 0.0) \
        + (2 * cfg.lambda_cap * cap_scale(cfg, dim) / batch) * excess / rho_c
    return hinge, excess.square(), a, -active / rho_c


def normalize_backward(prototype: torch.Tensor, grad_u: torch.Tensor) -> torch.Tensor:
    """The gradient w.r.t. p of a loss with gradient grad_u w.r.t. u = p / max(||p||, TINY)."""
    norm = prototype.norm(dim=1, keepdim=True)
    u = prototype / norm.clamp_min(TINY)
    radial = torch.where(norm >= TINY, (u * grad_u).sum(dim=1, keepdim=True), 0.0)
    return (grad_u - radial * u) / norm.clamp_min(TINY)


class ChunkBuffers:
    """Two (rows, D) work buffers (d and eps of a chunk), reused by every chunk of every step;
    rows defaults to CHUNK_ELEMENTS / D."""

    def __init__(self, d: int, dtype: torch.dtype, rows: int | None = None):
        rows = rows or max(1, CHUNK_ELEMENTS // d)
        self.d, self.eps = torch.empty(rows, d, dtype=dtype), torch.empty(rows, d, dtype=dtype)


def group_chunks(group: torch.Tensor, n_groups: int, rows: int) -> tuple[torch.Tensor, list]:
    """The batch's row order sorted by group, and (group, start, end) chunks of that order with
    one group each and at most `rows` rows."""
    order = torch.argsort(group, stable=True)
    chunks, start = [], 0
    for g, count in enumerate(torch.bincount(group, minlength=n_groups).tolist()):
        chunks += [(g, s, min(s + rows, start + count)) for s in range(start, start + count, rows)]
        start += count
    return order, chunks


def proxy_gradients(params: SourceParams, x: torch.Tensor, group: torch.Tensor, eps: torch.Tensor,
                    caps: torch.Tensor, cfg: ProxyConfig, idx: torch.Tensor | None = None,
                    buffers: ChunkBuffers | None = None) -> tuple[ProxyTerms, SourceParams]:
    """proxy_terms on the batch (rows `idx` of x and group; all rows when None) and the gradients
    of its total w.r.t. params (as a SourceParams), without autograd and without (B, D) temporaries.

    The batch is taken a chunk of rows of one group g at a time, so mu_g, sigma_g and u_g are
    single broadcast rows and the group sums are vector-matrix products.
    """
    gb = group if idx is None else group[idx]
    batch, dim = eps.shape
    buffers = buffers or ChunkBuffers(dim, eps.dtype)
    with torch.no_grad():
        mu, log_sigma, prototype = params.mu.detach(), params.log_sigma.detach(), params.prototype.detach()
        sigma, u = log_sigma.exp(), F.normalize(prototype, dim=1)
        order, chunks = group_chunks(gb, len(mu), len(buffers.d))
        rows = order if idx is None else idx[order]
        sum_ad, sum_bd, sum_ade, sum_be = (torch.zeros_like(mu) for _ in range(4))
        sum_b = torch.zeros(len(mu), dtype=mu.dtype)
        hinge, capped = torch.empty(batch, dtype=eps.dtype), torch.empty(batch, dtype=eps.dtype)
        for g, s, e in chunks:
            d = torch.index_select(x, 0, rows[s:e], out=buffers.d[:e - s])
            ec = torch.index_select(eps, 0, order[s:e], out=buffers.eps[:e - s])
            d.sub_(mu[g]).addcmul_(ec, sigma[g], value=-1)  # d = x - mu_g - sigma_g * eps
            rho, t = torch.linalg.vector_norm(d, dim=1), d @ u[g]
            hinge[s:e], capped[s:e], a, b = row_terms(rho, t, caps[g], cfg, batch, dim)
            ad, bd = torch.stack([a, b]) @ d
            sum_ad[g].add_(ad)
            sum_bd[g].add_(bd)
            sum_ade[g].add_(a @ d.mul_(ec))
            sum_be[g].add_(b @ ec)
            sum_b[g] += b.sum()
        # dL/dd_i = a_i d_i + b_i u_g, summed over the rows of each group (see above)
        grad_mu = sum_ad.add_(u * sum_b[:, None]).neg_()
        grad_ls = sum_ade.addcmul_(u, sum_be).mul_(sigma).neg_()
        counts = torch.bincount(gb, minlength=len(log_sigma)).to(log_sigma)
        grad_ls.add_(log_sigma * counts[:, None], alpha=2 * cfg.lambda_scale / (batch * dim))
        scale = (counts @ log_sigma.pow(2).mean(dim=1)) / batch
        ang, cap = hinge.mean(), capped.mean() * cap_scale(cfg, dim)
        total = ang + cfg.lambda_cap * cap + cfg.lambda_scale * scale
    grads = SourceParams(grad_mu, grad_ls, normalize_backward(prototype, sum_bd))
    return ProxyTerms(total, ang, cap, scale), grads


def noise_draws(generator: torch.Generator, n: int, batch_size: int, dim: int, dtype: torch.dtype,
                steps: int) -> Iterator[tuple[torch.Tensor | None, torch.Tensor]]:
    """(idx, eps) of each step: randperm (when n > batch_size) then randn of the batch's shape.

    The draws do not depend on the parameters, so a worker thread makes step k + 1's while the
    caller uses step k's: torch's randn is serial and costs about as much as a whole step of
    proxy_gradients. eps alternates between two reused buffers (a fresh (B, D) tensor costs
    page faults on every step); step k's buffer is refilled only once step k + 1 is asked for.
    """
    buffers = [torch.empty(min(n, batch_size), dim, dtype=dtype) for _ in range(2)]

    def draw(step: int) -> tuple[torch.Tensor | None, torch.Tensor]:
        idx = torch.randperm(n, generator=generator)[:batch_size] if n > batch_size else None
        eps = buffers[step % 2]
        return idx, torch.randn(eps.shape, generator=generator, dtype=dtype, out=eps)

    with ThreadPoolExecutor(max_workers=1) as worker:
        pending = worker.submit(draw, 0)
        for step in range(steps):
            current = pending.result()
            if step + 1 < steps:
                pending = worker.submit(draw, step + 1)
            yield current


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to n inside the block and restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def optimize_sources(init: SourceParams, x: torch.Tensor, group: torch.Tensor, caps: torch.Tensor,
                     cfg: ProxyConfig, seed: int) -> OptimResult:
    """Adam on the proxy objective from `init`; minibatches and noise from a seeded generator.

    The gradients come from proxy_gradients, the draws from noise_draws' worker thread. The
    gradients run on one torch thread meanwhile: with two cores, one draws and one computes,
    whereas two intra-op threads beside the worker oversubscribe the cores, and torch's
    threads then wait for each other at every one of the many small chunk operations.
    """
    params = SourceParams(*(v.clone().requires_grad_(True)
                            for v in (init.mu, init.log_sigma, init.prototype)))
    leaves = [params.mu, params.log_sigma, params.prototype]
    optimizer = torch.optim.Adam(leaves, lr=cfg.lr)
    generator = torch.Generator().manual_seed(seed)
    trace, buffers = [], ChunkBuffers(x.shape[1], x.dtype)
    draws = noise_draws(generator, len(x), cfg.batch_size, x.shape[1], x.dtype, cfg.steps)
    with torch_threads(1):
        for step, (idx, eps) in enumerate(draws):
            terms, grads = proxy_gradients(params, x, group, eps, caps, cfg, idx, buffers)
            for leaf, grad in zip(leaves, (grads.mu, grads.log_sigma, grads.prototype)):
                leaf.grad = grad
            optimizer.step()
            if (step + 1) % cfg.log_every == 0 or step == 0 or step + 1 == cfg.steps:
                trace.append([step + 1] + [round(float(v), 6) for v in
                                           (terms.total, terms.ang, terms.cap, terms.scale)])
    return OptimResult(params.detached(), trace)
