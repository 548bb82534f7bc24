"""Transport-geometry statistics of source-to-data displacements (paper Tab. 2, NOTES 1.5 and 1.8).

Convention: t = 0 source, t = 1 data, displacement d = x1 - x0, rho = ||d||, dhat = d / rho.
The numbers describe how a source shapes the paths a flow-matching model must learn: how tightly
the directions cluster around their group's prototype, how spread the path lengths are within a
group, and how much the directions of sibling subclasses (same class) overlap.
"""

from __future__ import annotations

import torch

from bench.errors import BenchError

# Rows are processed in chunks of about this many float64 values so that latents with tens of
# thousands of dimensions are never copied to float64 whole; 8 MB, small enough for the allocator
# to reuse (chunks of 128 MB were mapped afresh, and page-faulted, every time).
_CHUNK_ELEMENTS = 1 << 20
_EPS = 1e-12


def displacement_geometry(
    d: torch.Tensor,
    group: torch.Tensor,
    prototypes: torch.Tensor | None = None,
    parent: torch.Tensor | None = None,
) -> dict:
    """Directional and radial statistics of displacements d (n, D) grouped by `group` (n,).

    Groups are subclasses (c, k) in the paper; each has a unit prototype u_g (`prototypes` (G, D),
    normalised here; if None, u_g is the normalised mean of dhat over the group's samples).
    Returned floats (all computed in float64; rho is clamped at 1e-12 so d = 0 gives dhat = 0):

    - `alignment`: mean over samples of <dhat_i, u_{g(i)}> ("directional alignment", Tab. 2).
    - `radial_std`: sum_g (n_g / n) * std_g(rho), the population std (ddof = 0) of rho within
      group g, so a one-sample group contributes 0 ("radial spread", Tab. 2).
    - `radial_cv`: sum_g (n_g / n) * std_g(rho) / mean_g(rho), the scale-free radial spread.
    - `path_length`: mean rho over all samples.
    - `angular_overlap` (only if `parent` (G,) gives each group's class and some class has
      samples in >= 2 groups): mean, over samples whose class has another group, of
      max_{g' != g(i), parent[g'] = parent[g(i)]} <dhat_i, u_g'>: how close a sample's direction
      comes to a sibling subclass's prototype (the "angular subclass overlap" of the source
      initialisation rule). Groups without samples are skipped when prototypes are estimated.
    - `n`: the number of samples.
    """
    d, group = _check_inputs(d, group)
    n_groups = _n_groups(group, prototypes, parent)
    rho, units = _rho_and_units(d, group, n_groups, prototypes)
    present = torch.bincount(group, minlength=n_groups) > 0
    own_cos, sibling_cos = _cosines(d, rho, group, units, _sibling_mask(parent, present, n_groups))
    out = {
        "alignment": float(own_cos.mean()),
        **_radial_spread(rho, group, n_groups),
        "path_length": float(rho.mean()),
        "n": len(rho),
    }
    has_sibling = torch.isfinite(sibling_cos)
    if has_sibling.any():
        out["angular_overlap"] = float(sibling_cos[has_sibling].mean())
    return out


def per_sample_geometry(
    d: torch.Tensor, group: torch.Tensor, prototypes: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rho_i, <dhat_i, u_{g(i)}>) of every displacement, in float64: the values whose means are
    `path_length` and `alignment` of displacement_geometry (same prototypes), for histograms."""
    d, group = _check_inputs(d, group)
    n_groups = _n_groups(group, prototypes, None)
    rho, units = _rho_and_units(d, group, n_groups, prototypes)
    no_siblings = _sibling_mask(None, torch.ones(n_groups, dtype=torch.bool, device=d.device), n_groups)
    return rho, _cosines(d, rho, group, units, no_siblings)[0]


def _rho_and_units(
    d: torch.Tensor, group: torch.Tensor, n_groups: int, prototypes: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Path lengths of all rows and the unit prototype of every group: the given prototypes, or
    u_g = the normalised mean of dhat over the group's samples (zero for empty groups), both
    from one float64 pass over d."""
    sums = (
        torch.zeros(n_groups, d.shape[1], dtype=torch.float64, device=d.device)
        if prototypes is None
        else None
    )
    rho = []
    for rows in _row_chunks(d):
        chunk = d[rows].to(torch.float64, copy=True)  # divided in place below
        rho.append(torch.linalg.vector_norm(chunk, dim=1))
        if sums is not None:
            sums.index_add_(0, group[rows], chunk.div_(rho[-1].clamp(min=_EPS).unsqueeze(1)))
    units = sums if prototypes is None else prototypes.reshape(len(prototypes), -1).to(torch.float64)
    return torch.cat(rho), _unit(units)


def _check_inputs(d: torch.Tensor, group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten d to (n, D) and validate that `group` holds one non-negative id per row."""
    d = d.reshape(len(d), -1)
    group = group.reshape(-1).to(device=d.device, dtype=torch.long)
    if len(d) == 0 or len(group) != len(d) or bool((group < 0).any()):
        raise BenchError(
            f"displacement_geometry needs n >= 1 displacements and one group id >= 0 per "
            f"row (got {len(d)} rows, {len(group)} ids); pass matching tensors"
        )
    return d, group


def _n_groups(group: torch.Tensor, prototypes: torch.Tensor | None, parent: torch.Tensor | None) -> int:
    """G, from the prototypes, else `parent`, else the largest group id; checks consistency."""
    sizes = [len(x) for x in (prototypes, parent) if x is not None]
    n_groups = sizes[0] if sizes else int(group.max()) + 1
    if any(s != n_groups for s in sizes) or int(group.max()) >= n_groups:
        raise BenchError(
            f"group ids go up to {int(group.max())} but prototypes/parent describe "
            f"{sizes} groups; pass one prototype and one parent class per group"
        )
    return n_groups


def _row_chunks(d: torch.Tensor):
    """Row slices of d holding about _CHUNK_ELEMENTS values each."""
    step = max(1, _CHUNK_ELEMENTS // max(1, d.shape[1]))
    for start in range(0, len(d), step):
        yield slice(start, start + step)


def _unit(v: torch.Tensor) -> torch.Tensor:
    """Rows of v scaled to unit length (zero rows stay zero)."""
    return v / torch.linalg.vector_norm(v, dim=1, keepdim=True).clamp(min=_EPS)


def mean_directions(d: torch.Tensor, group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Unit mean displacement direction of each of `n_groups` groups (float64; zero if empty)."""
    d, group = _check_inputs(d, group)
    return _rho_and_units(d, group, n_groups, None)[1]


def _sibling_mask(parent: torch.Tensor | None, present: torch.Tensor, n_groups: int) -> torch.Tensor:
    """(G, G) bool: g' is a sibling of g when both share a class, g' != g and g' has samples."""
    if parent is None:
        return torch.zeros(n_groups, n_groups, dtype=torch.bool, device=present.device)
    parent = parent.reshape(-1).to(present.device)
    same = parent.unsqueeze(0) == parent.unsqueeze(1)
    return same & ~torch.eye(n_groups, dtype=torch.bool, device=present.device) & present.unsqueeze(0)


def _cosines(d, rho, group, units, siblings) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample: <dhat, own prototype> and the max over sibling prototypes (-inf if none).

    A chunk is multiplied only with the prototypes it needs (its rows' groups and their
    siblings): with rows ordered by group, that is a few of optprior's C * k_max columns.
    """
    units = units.to(d.device)
    own, best = [], []
    for rows in _row_chunks(d):
        dhat = d[rows].to(torch.float64, copy=True).div_(rho[rows].clamp(min=_EPS).unsqueeze(1))
        g = group[rows]
        cols = _needed_groups(g, siblings)
        cos = dhat @ units[cols].T
        column = torch.full((len(units),), -1, dtype=torch.long, device=g.device)
        column[cols] = torch.arange(len(cols), device=g.device)
        own.append(cos.gather(1, column[g].unsqueeze(1)).squeeze(1))
        best.append(cos.masked_fill(~siblings[g][:, cols], float("-inf")).max(dim=1).values)
    return torch.cat(own), torch.cat(best)


def _needed_groups(g: torch.Tensor, siblings: torch.Tensor) -> torch.Tensor:
    """The ids of the groups in g and of their siblings, ascending."""
    present = torch.zeros(len(siblings), dtype=torch.bool, device=g.device)
    present[g] = True
    return torch.nonzero(present | siblings[present].any(dim=0)).flatten()


def _radial_spread(rho: torch.Tensor, group: torch.Tensor, n_groups: int) -> dict:
    """Sample-weighted mean over groups of std(rho) and std(rho) / mean(rho) within the group."""
    counts = torch.bincount(group, minlength=n_groups).to(torch.float64)
    means = torch.zeros(n_groups, dtype=torch.float64, device=rho.device).index_add_(0, group, rho)
    means = means / counts.clamp(min=1)
    sq_dev = torch.zeros_like(means).index_add_(0, group, (rho - means[group]) ** 2)
    stds = (sq_dev / counts.clamp(min=1)).sqrt()
    weights = counts / counts.sum()
    return {
        "radial_std": float((weights * stds).sum()),
        "radial_cv": float((weights * stds / means.clamp(min=_EPS)).sum()),
    }
