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

import queue
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class SourceParams:
    """Learnable source parameters of G groups in D dims."""

    mu: torch.Tensor  # (G, D)
    log_sigma: torch.Tensor  # (G, D)
    prototype: torch.Tensor  # (G, D), normalised when used

    def detached(self) -> SourceParams:
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


def proxy_terms(
    params: SourceParams,
    x: torch.Tensor,
    group: torch.Tensor,
    eps: torch.Tensor,
    caps: torch.Tensor,
    cfg: ProxyConfig,
) -> ProxyTerms:
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


# Rows per chunk of `displacements` and `fixed_caps`: 64 rows at D = 16,384 (4 MB temporaries).
DISPLACEMENT_CHUNK_ELEMENTS = 2**20


def displacements(
    x: torch.Tensor,
    eps: torch.Tensor,
    table_row: torch.Tensor,
    mu: torch.Tensor | None = None,
    sigma: torch.Tensor | None = None,
    rows: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """d = x - (mu[table_row] + sigma[table_row] * eps) on `rows` of x and eps (all when None).

    mu and sigma are (T, D) tables (a group's source, or a class mean) picked per row by
    table_row (n,); None stands for 0 and 1. d is written a chunk of rows at a time into the
    first rows of `out` (a new tensor when None), so the (n, D) temporaries of the plain formula
    (mu[table_row], sigma[table_row], their product) never exist: at n = 20,000, D = 16,384
    each is 1.3 GB.
    """
    rows = torch.arange(len(x)) if rows is None else rows
    out = torch.empty(len(rows), x.shape[1], dtype=x.dtype) if out is None else out[: len(rows)]
    step = max(1, DISPLACEMENT_CHUNK_ELEMENTS // max(1, x.shape[1]))
    for start in range(0, len(rows), step):
        r, d = rows[start : start + step], out[start : start + step]
        torch.index_select(eps, 0, r, out=d)
        if sigma is not None:
            d.mul_(sigma[table_row[r]])
        if mu is not None:
            d.add_(mu[table_row[r]])
        torch.sub(torch.index_select(x, 0, r), d, out=d)
    return out


def fixed_caps(
    x: torch.Tensor,
    class_mean: torch.Tensor,
    label: torch.Tensor,
    group: torch.Tensor,
    n_groups: int,
    quantile: float,
) -> torch.Tensor:
    """r_g: the `quantile` of ||x - m_c|| over the samples of group g, computed once (a chunk of
    rows at a time: x - class_mean[label] whole would be two more (n, D) tensors)."""
    step = max(1, DISPLACEMENT_CHUNK_ELEMENTS // max(1, x.shape[1]))
    dist = torch.cat(
        [(x[s : s + step] - class_mean[label[s : s + step]]).norm(dim=1) for s in range(0, len(x), step)]
    )
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
# Computing these directly, a chunk of rows at a time through a small reused buffer, reads each
# latent and noise row once; autograd instead materialises about ten (B, D) temporaries.
#
# Groups are independent: group g's parameters get gradients from g's rows only, and Adam is
# elementwise. So each group is one task (`group_sums`) on a worker thread, summing its chunks in
# a fixed order, and the result does not depend on the number of threads. The same independence
# lets the groups share the noise: the j-th row of every group in a batch gets noise row j, so a
# step draws as many noise rows as its largest group has (about 480 of B = 4,096 in the offline
# case) instead of B. Each group still sees fresh independent N(0, I) rows at every step, exactly
# as with B separate rows, so every group's optimisation has the same distribution as before;
# only the groups' noise is now correlated with each other's, which no group's update sees.

TINY = 1e-12  # the norm clamp of proxy_terms and F.normalize
# Elements of a chunk buffer: 32 rows at D = 16,384, small enough to stay in the CPU's caches;
# there 32 to 128 rows per chunk measured equally fast and 8 slower (per-call overhead).
CHUNK_ELEMENTS = 2**19
# Values per noise stream (`standard_normal`): 64 rows at D = 16,384, a few per step and thread.
NOISE_BLOCK_ELEMENTS = 2**20


def row_terms(
    rho: torch.Tensor, t: torch.Tensor, cap: torch.Tensor, cfg: ProxyConfig, batch: int, dim: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
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
    a = (
        torch.where(rho >= TINY, active * cosine / rho_c.square(), 0.0)
        + (2 * cfg.lambda_cap * cap_scale(cfg, dim) / batch) * excess / rho_c
    )
    return hinge, excess.square(), a, -active / rho_c


def normalize_backward(prototype: torch.Tensor, grad_u: torch.Tensor) -> torch.Tensor:
    """The gradient w.r.t. p of a loss with gradient grad_u w.r.t. u = p / max(||p||, TINY)."""
    norm = prototype.norm(dim=1, keepdim=True)
    u = prototype / norm.clamp_min(TINY)
    radial = torch.where(norm >= TINY, (u * grad_u).sum(dim=1, keepdim=True), 0.0)
    return (grad_u - radial * u) / norm.clamp_min(TINY)


class Workers:
    """Worker threads, each with a (rows, D) chunk buffer of its own, and a scratch tensor for the
    calling thread (`scratch`); a context manager.

    map(fn, items) returns [fn(item, buffer) for item in items], in order, each call holding a
    buffer no other running call holds; with one thread the calls run in the caller's thread.
    rows defaults to CHUNK_ELEMENTS / D. torch ops release the GIL, so the threads run in parallel.
    """

    def __init__(self, threads: int, dim: int, dtype: torch.dtype, rows: int | None = None):
        rows = rows or max(1, CHUNK_ELEMENTS // dim)
        self.dim, self.dtype, self.kept = dim, dtype, torch.empty(0, dim, dtype=dtype)
        self.buffers = queue.SimpleQueue()
        for _ in range(threads):
            self.buffers.put(torch.empty(rows, dim, dtype=dtype))
        self.pool = ThreadPoolExecutor(threads) if threads > 1 else None

    def map(self, fn: Callable, items: list) -> list:
        """fn(item, buffer) of every item, in the items' order."""

        def call(item):
            buffer = self.buffers.get()
            try:
                return fn(item, buffer)
            finally:
                self.buffers.put(buffer)

        return list(self.pool.map(call, items)) if self.pool else [call(item) for item in items]

    def scratch(self, rows: int) -> torch.Tensor:
        """A (rows, D) tensor for the calling thread, kept from call to call (grown with room):
        allocating a fresh 4 MB tensor costs about as much as an operation on it."""
        if len(self.kept) < rows:
            self.kept = torch.empty(rows + rows // 4, self.dim, dtype=self.dtype)
        return self.kept[:rows]

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc) -> None:
        if self.pool:
            self.pool.shutdown()


def standard_normal(generator: torch.Generator, out: torch.Tensor, workers: Workers) -> torch.Tensor:
    """out (rows, D) filled with N(0, 1) values drawn as parallel streams, and returned.

    Each block of NOISE_BLOCK_ELEMENTS / D rows comes from a torch generator of its own, seeded
    with a 63-bit seed that `generator` draws (one per block, in block order), and the blocks
    are filled on the workers: torch's CPU randn is serial per generator (about 4.5 ns a value
    on the 2-core machine), and the values do not depend on the number of threads.
    """
    rows = max(1, NOISE_BLOCK_ELEMENTS // out.shape[1])
    starts = list(range(0, len(out), rows))
    seeds = torch.randint(0, 2**63 - 1, (len(starts),), generator=generator).tolist()

    def fill(block: tuple[int, int], _buffer) -> None:
        start, seed = block
        part = out[start : start + rows]
        torch.randn(part.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype, out=part)

    workers.map(fill, list(zip(starts, seeds)))
    return out


def normal_like(x: torch.Tensor, seed: int) -> torch.Tensor:
    """N(0, 1) values of x's shape (n, D) and dtype, from standard_normal's parallel streams
    seeded with `seed` on torch.get_num_threads() threads (the same values for any number)."""
    with Workers(torch.get_num_threads(), x.shape[1], x.dtype, rows=1) as workers, torch_threads(1):
        return standard_normal(torch.Generator().manual_seed(seed), torch.empty_like(x), workers)


def noise_rows(group: torch.Tensor) -> int:
    """How many noise rows a batch with these groups needs: its largest group's row count."""
    return int(torch.bincount(group).max()) if len(group) else 0


def group_members(group: torch.Tensor, idx: torch.Tensor | None, n_groups: int) -> list[torch.Tensor]:
    """Per group, the rows of x of its batch rows, in batch order (batch row i is x row idx[i])."""
    order = torch.argsort(group, stable=True)
    rows = order if idx is None else idx[order]
    return list(torch.split(rows, torch.bincount(group, minlength=n_groups).tolist()))


@dataclass
class GroupSums:
    """One group's sums over its batch rows: sums (4, D) = [sum a_i d_i, sum b_i d_i,
    sum a_i d_i * eps_i, sum b_i eps_i], b = sum b_i, and each row's hinge and squared cap excess."""

    sums: torch.Tensor
    b: torch.Tensor
    hinge: torch.Tensor
    capped: torch.Tensor


def group_sums(
    x: torch.Tensor,
    rows: torch.Tensor,
    noise: torch.Tensor,
    source: tuple,
    cap: torch.Tensor,
    cfg: ProxyConfig,
    batch: int,
    buffer: torch.Tensor,
) -> GroupSums:
    """GroupSums of the group whose batch rows are x[rows], the j-th with noise row j; source is
    the group's (mu, sigma, u). Taken `buffer`'s rows at a time, so mu, sigma and u are broadcast
    rows and the sums are vector-matrix products."""
    mu, sigma, u = source
    n, dim = len(rows), x.shape[1]
    sums, b_sum = torch.zeros(4, dim, dtype=x.dtype), torch.zeros((), dtype=x.dtype)
    hinge, capped = torch.empty(n, dtype=x.dtype), torch.empty(n, dtype=x.dtype)
    for s in range(0, n, len(buffer)):
        e = min(s + len(buffer), n)
        eps = noise[s:e]
        d = torch.index_select(x, 0, rows[s:e], out=buffer[: e - s])
        d.sub_(mu).addcmul_(eps, sigma, value=-1)  # d = x - mu_g - sigma_g * eps
        rho, t = torch.linalg.vector_norm(d, dim=1), d @ u
        hinge[s:e], capped[s:e], a, b = row_terms(rho, t, cap, cfg, batch, dim)
        sums[:2].addmm_(torch.stack([a, b]), d)
        sums[3].addmv_(eps.T, b)
        sums[2].addmv_(d.mul_(eps).T, a)
        b_sum += b.sum()
    return GroupSums(sums, b_sum, hinge, capped)


def flat_group_sums(
    x: torch.Tensor,
    gb: torch.Tensor,
    idx: torch.Tensor | None,
    noise: torch.Tensor,
    source: tuple,
    caps: torch.Tensor,
    cfg: ProxyConfig,
    workers: Workers,
) -> tuple:
    """group_sums of every group, bit for bit, in fewer operations: (sums (4, G, D), b (G,), hinge,
    capped) with hinge and capped in group order, for the batch rows `idx` of x (all when None)
    with groups gb, when `flat_fits` (every group one chunk of group_sums).

    The batch rows are gathered once into a layout by group, each group's segment padded to a
    multiple of ALIGN_ROWS rows so that it starts 64-byte aligned as group_sums' buffer does (MKL's
    results may depend on alignment). Each group's operations are group_sums' on its segment, except
    the norms and the per-row loss terms (row_terms), taken once over the layout: per-row operations,
    the same numbers either way. For small D, where group_sums' ~30 operations per group cost more in
    per-call overhead than in arithmetic.
    """
    mu, sigma, u = source
    dim = x.shape[1]
    counts = torch.bincount(gb, minlength=len(mu))
    padded = (counts + ALIGN_ROWS - 1) // ALIGN_ROWS * ALIGN_ROWS
    layout = torch.repeat_interleave(torch.arange(len(mu)), padded)  # each layout row's group
    rank = torch.arange(len(layout)) - (padded.cumsum(0) - padded)[layout]  # its rank in its group
    real = rank < counts[layout]
    order = torch.argsort(gb, stable=True)
    source_row = (counts.cumsum(0) - counts)[layout] + torch.minimum(rank, counts[layout] - 1)
    d = torch.index_select(
        x, 0, (order if idx is None else idx[order])[source_row], out=workers.scratch(len(layout))
    )  # padding: copies of a group's last row
    live = [(g, n) for g, n in enumerate(counts.tolist()) if n]
    pads = padded.tolist()
    sizes = [size for g, n in live for size in (n, pads[g] - n)]

    def segments(v: torch.Tensor) -> list:
        """Views of every live group's rows of v (a layout tensor)."""
        return v.split(sizes)[::2]

    rho, t = torch.empty(len(layout), dtype=x.dtype), torch.zeros(len(layout), dtype=x.dtype)
    mus, sigmas, us = (v.unbind(0) for v in (mu, sigma, u))
    noises = [noise[:n] for _, n in live]  # the j-th row of every group has noise row j
    for (g, _), eps, dg, tg in zip(live, noises, segments(d), segments(t)):
        dg.sub_(mus[g]).addcmul_(eps, sigmas[g], value=-1)  # d = x - mu_g - sigma_g * eps
        torch.mv(dg, us[g], out=tg)  # group_sums' d @ u, written in place
    torch.linalg.vector_norm(d, dim=1, out=rho)
    hinge, capped, a, b = row_terms(rho, t, caps[layout], cfg, len(gb), dim)
    parts, totals = [], []
    for eps, dg, ag, bg in zip(noises, segments(d), segments(a), segments(b)):
        part = torch.zeros(4, dim, dtype=x.dtype)
        part[:2].addmm_(torch.stack([ag, bg]), dg)
        part[3].addmv_(eps.t(), bg)
        part[2].addmv_(dg.mul_(eps).t(), ag)
        parts.append(part), totals.append(bg.sum())
    index = torch.tensor([g for g, _ in live], dtype=torch.long)
    sums = torch.zeros(4, len(mu), dim, dtype=x.dtype).index_copy_(1, index, torch.stack(parts, 1))
    b_sum = torch.zeros(len(mu), dtype=x.dtype).index_copy_(
        0, index, torch.stack(totals) + 0.0
    )  # 0 + sum, as there
    return sums, b_sum, hinge[real], capped[real]


def flat_fits(group: torch.Tensor, n_groups: int, dim: int) -> bool:
    """Whether flat_group_sums takes a batch with these groups: at most FLAT_ELEMENTS values in its
    padded layout, and every group within one chunk of group_sums (whose sums it reproduces)."""
    counts = torch.bincount(group, minlength=n_groups)
    rows = int(((counts + ALIGN_ROWS - 1) // ALIGN_ROWS).sum()) * ALIGN_ROWS
    return rows * dim <= FLAT_ELEMENTS and int(counts.max()) <= max(1, CHUNK_ELEMENTS // dim)


ALIGN_ROWS = 16  # rows that span a multiple of 64 bytes at any D (float32 or wider)
# Largest padded batch (rows x D) taken by flat_group_sums (an 8 MB float32 layout); larger ones
# are taken a group and a chunk at a time (group_sums), on the worker threads.
FLAT_ELEMENTS = 2**21


def proxy_gradients(
    params: SourceParams,
    x: torch.Tensor,
    group: torch.Tensor,
    noise: torch.Tensor,
    caps: torch.Tensor,
    cfg: ProxyConfig,
    idx: torch.Tensor | None = None,
    workers: Workers | None = None,
) -> tuple[ProxyTerms, SourceParams]:
    """proxy_terms on a batch and the gradients of its total w.r.t. params (as a SourceParams),
    without autograd and without (B, D) temporaries (but one (B, D) layout, kept by `workers`,
    when flat_fits).

    The batch is rows `idx` of x and group (all rows when None). The groups share `noise`: the
    j-th batch row of each group (in batch order) has noise row j, so noise needs noise_rows(batch
    groups) rows. Small batches go to flat_group_sums (the same numbers, bit for bit); otherwise
    one group_sums task per group runs on `workers` (one serial worker when None).
    """
    gb = group if idx is None else group[idx]
    batch, dim = len(gb), x.shape[1]
    with torch.no_grad():
        mu, log_sigma, prototype = params.mu.detach(), params.log_sigma.detach(), params.prototype.detach()
        sigma, u = log_sigma.exp(), F.normalize(prototype, dim=1)
        if flat_fits(gb, len(mu), dim):
            sums, b_sum, hinge, capped = flat_group_sums(
                x, gb, idx, noise, (mu, sigma, u), caps, cfg, workers or Workers(1, dim, x.dtype)
            )
        else:
            members = group_members(gb, idx, len(mu))
            sums, b_sum, hinge, capped = _grouped_sums(
                x, members, noise, (mu, sigma, u), caps, cfg, batch, workers
            )
        # dL/dd_i = a_i d_i + b_i u_g, summed over the group (see above); a group without batch rows
        # has zero sums, so zero gradients (some -0.0, on which Adam's update is the same)
        grad_mu = -(sums[0] + u * b_sum[:, None])
        grad_ls = -(sums[2] + u * sums[3]) * sigma
        grad_u = sums[1]
        counts = torch.bincount(gb, minlength=len(log_sigma)).to(log_sigma)
        grad_ls.add_(log_sigma * counts[:, None], alpha=2 * cfg.lambda_scale / (batch * dim))
        scale = (counts @ log_sigma.pow(2).mean(dim=1)) / batch
        ang = hinge.mean()
        cap = capped.mean() * cap_scale(cfg, dim)
        total = ang + cfg.lambda_cap * cap + cfg.lambda_scale * scale
    grads = SourceParams(grad_mu, grad_ls, normalize_backward(prototype, grad_u))
    return ProxyTerms(total, ang, cap, scale), grads


def _grouped_sums(x, members, noise, source, caps, cfg, batch, workers) -> tuple:
    """flat_group_sums' result from one group_sums task per group with rows, largest first (balanced)."""
    mu, sigma, u = source
    pool = workers or Workers(1, x.shape[1], x.dtype)  # one thread: nothing to shut down
    tasks = sorted((g for g in range(len(mu)) if len(members[g])), key=lambda g: -len(members[g]))
    done = pool.map(
        lambda g, buffer: group_sums(
            x, members[g], noise, (mu[g], sigma[g], u[g]), caps[g], cfg, batch, buffer
        ),
        tasks,
    )
    parts = dict(zip(tasks, done))
    sums = torch.zeros(4, len(mu), x.shape[1], dtype=x.dtype)
    b_sum = torch.zeros(len(mu), dtype=x.dtype)
    for g, part in parts.items():
        sums[:, g], b_sum[g] = part.sums, part.b
    hinge = torch.cat([parts[g].hinge for g in sorted(parts)])
    capped = torch.cat([parts[g].capped for g in sorted(parts)])
    return sums, b_sum, hinge, capped


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to n inside the block and restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def optimize_sources(
    init: SourceParams, x: torch.Tensor, group: torch.Tensor, caps: torch.Tensor, cfg: ProxyConfig, seed: int
) -> OptimResult:
    """Adam on the proxy objective from `init`; batches and noise from a seeded generator.

    Only the groups that have rows are optimised (compacted to the front): a group without rows
    has zero gradients at every step, on which Adam's update is exactly 0, so its parameters
    stay at `init` either way, and the per-step work on (G, D) tables shrinks to the live groups
    (optprior's G = C * k_max is mostly empty: K_c < k_max).
    """
    live = torch.unique(group)
    index = torch.zeros(len(init.mu), dtype=torch.long)
    index[live] = torch.arange(len(live))
    compact = SourceParams(*(v[live] for v in (init.mu, init.log_sigma, init.prototype)))
    result = _optimize(compact, x, index[group], caps[live], cfg, seed)
    params = init.detached()
    for full, part in zip(
        (params.mu, params.log_sigma, params.prototype),
        (result.params.mu, result.params.log_sigma, result.params.prototype),
    ):
        full[live] = part
    return OptimResult(params, result.trace)


def _optimize(
    init: SourceParams, x: torch.Tensor, group: torch.Tensor, caps: torch.Tensor, cfg: ProxyConfig, seed: int
) -> OptimResult:
    """optimize_sources' loop over every group of `init`.

    Each step draws its batch (randperm, when n > batch_size) and then the groups' shared noise
    (standard_normal) from the generator, and takes its gradients from proxy_gradients. Noise and
    gradients run on torch.get_num_threads() worker threads with one torch thread each: the work
    is many small chunk operations, at which torch's own threads would wait for each other. The
    result is the same, bit for bit, for any number of threads.
    """
    params = SourceParams(
        *(v.clone().requires_grad_(True) for v in (init.mu, init.log_sigma, init.prototype))
    )
    leaves = [params.mu, params.log_sigma, params.prototype]
    optimizer = torch.optim.Adam(leaves, lr=cfg.lr)
    generator = torch.Generator().manual_seed(seed)
    n, dim = x.shape
    trace, noise = [], torch.empty(0, dim, dtype=x.dtype)
    # a flat batch (flat_group_sums) has no tasks for workers: one thread, no pool
    threads = 1 if flat_fits(group, len(init.mu), dim) else torch.get_num_threads()
    with Workers(threads, dim, x.dtype) as workers, torch_threads(1):
        for step in range(cfg.steps):
            idx = torch.randperm(n, generator=generator)[: cfg.batch_size] if n > cfg.batch_size else None
            rows = noise_rows(group if idx is None else group[idx])
            if len(noise) < rows:  # grown with room, so that it is rarely reallocated
                noise = torch.empty(rows + rows // 4, dim, dtype=x.dtype)
            eps = standard_normal(generator, noise[:rows], workers)
            terms, grads = proxy_gradients(params, x, group, eps, caps, cfg, idx, workers)
            for leaf, grad in zip(leaves, (grads.mu, grads.log_sigma, grads.prototype)):
                leaf.grad = grad
            optimizer.step()
            if (step + 1) % cfg.log_every == 0 or step == 0 or step + 1 == cfg.steps:
                trace.append(
                    [step + 1]
                    + [round(float(v), 6) for v in (terms.total, terms.ang, terms.cap, terms.scale)]
                )
    return OptimResult(params.detached(), trace)
