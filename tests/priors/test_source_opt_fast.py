"""The closed-form proxy gradients and the fast optimize_sources against autograd on proxy_terms.

proxy_gradients gives the groups shared noise (the j-th batch row of each group has noise row j);
`expanded` writes that out as one noise row per batch row for proxy_terms, independently.
"""

from collections import Counter

import numpy as np
import pytest
import torch
from scipy import stats

from bench.priors import source_opt
from bench.priors.source_opt import (
    NOISE_BLOCK_ELEMENTS,
    ProxyConfig,
    SourceParams,
    Workers,
    fixed_caps,
    group_members,
    noise_rows,
    optimize_sources,
    proxy_gradients,
    proxy_terms,
    standard_normal,
)

CFG = ProxyConfig(kappa=0.5, lambda_cap=0.7, lambda_scale=0.3)
SCALES = ["per_dim", "raw"]


def config(objective_scale: str, **kwargs) -> ProxyConfig:
    """CFG's weights with the given cap scale (and any other field changed)."""
    return ProxyConfig(**{**vars(CFG), "objective_scale": objective_scale, **kwargs})


def expanded(noise, group):
    """The noise row of every batch row under sharing: the row's rank among its group's rows."""
    seen = Counter()
    rank = []
    for g in group.tolist():
        rank.append(seen[g])
        seen[g] += 1
    return noise[rank]


def problem(dtype=torch.float64, n=64, dim=32, groups=5):
    """Latents of 4 groups (group 4 has no rows) whose rows lie on both sides of kappa and of
    the caps: half of each group's displacements point along its prototype, half at random.
    Returns the shared noise (one row per rank within a group) in place of per-row noise."""
    g = torch.Generator().manual_seed(0)
    group = torch.arange(n) % 4
    params = SourceParams(
        torch.randn(groups, dim, generator=g, dtype=dtype),
        0.3 * torch.randn(groups, dim, generator=g, dtype=dtype),
        torch.randn(groups, dim, generator=g, dtype=dtype),
    )
    noise = torch.randn(n // 4, dim, generator=g, dtype=dtype)
    eps = expanded(noise, group)
    u = torch.nn.functional.normalize(params.prototype, dim=1)[group]
    along = (torch.arange(n) // 4) % 2 == 0
    direction = torch.where(
        along[:, None],
        u + 0.3 * torch.randn(n, dim, generator=g, dtype=dtype),
        torch.randn(n, dim, generator=g, dtype=dtype),
    )
    length = torch.linspace(1.0, 10.0, n, dtype=dtype)[torch.randperm(n, generator=g)]
    d = length[:, None] * torch.nn.functional.normalize(direction, dim=1)
    x = params.mu[group] + params.log_sigma.exp()[group] * eps + d
    caps = torch.tensor([4.0, 5.0, 6.0, 7.0, 1.0], dtype=dtype)
    return params, x, group, noise, caps


def autograd_reference(params, x, group, noise, caps, cfg):
    """proxy_terms (each batch row with its shared noise row) and its gradients by autograd."""
    leaves = SourceParams(
        *(v.clone().requires_grad_(True) for v in (params.mu, params.log_sigma, params.prototype))
    )
    terms = proxy_terms(leaves, x, group, expanded(noise, group), caps, cfg)
    terms.total.backward()
    return terms, SourceParams(leaves.mu.grad, leaves.log_sigma.grad, leaves.prototype.grad)


def test_problem_covers_every_branch_of_the_objective():
    params, x, group, noise, caps = problem()
    d = x - (params.mu[group] + params.log_sigma.exp()[group] * expanded(noise, group))
    rho = d.norm(dim=1)
    cosine = (d * torch.nn.functional.normalize(params.prototype, dim=1)[group]).sum(1) / rho
    assert 10 < (cosine > CFG.kappa).sum() < len(x) - 10
    assert 10 < (rho > caps[group]).sum() < len(x) - 10


@pytest.fixture(params=["flat", "grouped"])
def path(request, monkeypatch):
    """Both ways proxy_gradients sums the groups: all at once (small batches) or a task per group."""
    if request.param == "grouped":
        monkeypatch.setattr(source_opt, "FLAT_ELEMENTS", 0)
    return request.param


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("rows", [3, 8, 64])
def test_loss_and_gradients_equal_autograd_of_proxy_terms(rows, scale, path):
    params, x, group, noise, caps = problem()
    cfg = config(scale)
    ref, ref_grads = autograd_reference(params, x, group, noise, caps, cfg)
    workers = Workers(1, x.shape[1], x.dtype, rows)
    terms, grads = proxy_gradients(params, x, group, noise, caps, cfg, workers=workers)
    for name in ("total", "ang", "cap", "scale"):
        torch.testing.assert_close(getattr(terms, name), getattr(ref, name), rtol=1e-12, atol=1e-12)
    for name in ("mu", "log_sigma", "prototype"):
        torch.testing.assert_close(getattr(grads, name), getattr(ref_grads, name), rtol=1e-10, atol=1e-12)
    assert grads.mu[4].abs().max() == 0 and grads.prototype[4].abs().max() == 0  # group without rows
    assert ref_grads.log_sigma[:4].abs().min() > 0


@pytest.mark.parametrize("scale", SCALES)
def test_float32_gradients_match_to_float_rounding(scale, path):
    params, x, group, noise, caps = problem(torch.float32, n=200, dim=300)
    cfg = config(scale)
    ref, ref_grads = autograd_reference(params, x, group, noise, caps, cfg)
    terms, grads = proxy_gradients(params, x, group, noise, caps, cfg)
    torch.testing.assert_close(terms.total, ref.total, rtol=1e-5, atol=0)
    for name in ("mu", "log_sigma", "prototype"):
        got, want = getattr(grads, name), getattr(ref_grads, name)
        assert (got - want).abs().max() <= 1e-5 * want.abs().max()


def test_batch_rows_by_index_equal_the_gathered_batch():
    params, x, group, noise, caps = problem(n=80)
    idx = torch.randperm(80, generator=torch.Generator().manual_seed(1))[:50]
    direct, direct_grads = proxy_gradients(params, x[idx], group[idx], noise, caps, CFG)
    indexed, indexed_grads = proxy_gradients(params, x, group, noise, caps, CFG, idx=idx)
    torch.testing.assert_close(indexed.total, direct.total, rtol=1e-14, atol=0)
    for name in ("mu", "log_sigma", "prototype"):
        torch.testing.assert_close(
            getattr(indexed_grads, name), getattr(direct_grads, name), rtol=1e-12, atol=1e-15
        )


def duplicated(params, x, noise):
    """Every coordinate twice: the same problem in 2 D dimensions."""
    twice = lambda v: torch.cat([v, v], dim=1)  # noqa: E731
    return (
        SourceParams(*(twice(v) for v in (params.mu, params.log_sigma, params.prototype))),
        twice(x),
        twice(noise),
    )


def test_per_dim_objective_is_invariant_to_duplicating_coordinates_and_raw_cap_doubles():
    params, x, group, noise, _ = problem()
    params2, x2, noise2 = duplicated(params, x, noise)
    # the caps r_g come from the data (here each group its own class), so they scale by sqrt(2) with it
    means = lambda v: torch.stack([v[group == g].mean(0) for g in range(4)])  # noqa: E731
    caps, caps2 = (fixed_caps(v, means(v), group, group, 5, 0.2) for v in (x, x2))
    torch.testing.assert_close(caps2, caps * 2**0.5)
    by_autograd = lambda p, x_, g, noise_, c, cfg: proxy_terms(p, x_, g, expanded(noise_, g), c, cfg)  # noqa: E731
    closed_form = lambda *args: proxy_gradients(*args)[0]  # noqa: E731
    for terms_of in (by_autograd, closed_form):
        once, twice = (
            {scale: terms_of(*problem_args, config(scale)) for scale in SCALES}
            for problem_args in ((params, x, group, noise, caps), (params2, x2, group, noise2, caps2))
        )
        assert float(once["raw"].cap) > 1.0  # the caps bind
        for name in ("total", "ang", "cap", "scale"):
            torch.testing.assert_close(
                getattr(twice["per_dim"], name), getattr(once["per_dim"], name), rtol=1e-12, atol=0
            )
        torch.testing.assert_close(twice["raw"].cap, 2 * once["raw"].cap, rtol=1e-12, atol=0)
        torch.testing.assert_close(once["raw"].cap, x.shape[1] * once["per_dim"].cap, rtol=1e-12, atol=0)


def test_group_members_are_each_groups_rows_of_x_in_batch_order():
    group = torch.tensor([2, 0, 2, 2, 1, 2, 0, 2, 2])
    idx = torch.tensor([10, 11, 12, 13, 14, 15, 16, 17, 18])
    members = group_members(group, idx, n_groups=4)
    assert [m.tolist() for m in members] == [[11, 16], [14], [10, 12, 13, 15, 17, 18], []]
    assert [m.tolist() for m in group_members(group, None, 3)] == [[1, 6], [4], [0, 2, 3, 5, 7, 8]]
    assert noise_rows(group) == 6


def blocks_by_hand(seed, rows, dim):
    """standard_normal's draws written out: a seed per block from the main generator, then each
    block of NOISE_BLOCK_ELEMENTS / dim rows from a generator of its own."""
    per_block = NOISE_BLOCK_ELEMENTS // dim
    starts = range(0, rows, per_block)
    seeds = torch.randint(0, 2**63 - 1, (len(starts),), generator=torch.Generator().manual_seed(seed))
    return torch.cat(
        [
            torch.randn(min(per_block, rows - s), dim, generator=torch.Generator().manual_seed(int(k)))
            for s, k in zip(starts, seeds)
        ]
    )


@pytest.mark.parametrize("threads", [1, 3])
def test_noise_streams_are_the_seeded_blocks_for_any_number_of_threads(threads):
    dim, rows = 2**15, 100  # blocks of 32 rows: 32, 32, 32, 4
    with Workers(threads, dim, torch.float32) as workers:
        got = standard_normal(torch.Generator().manual_seed(3), torch.empty(rows, dim), workers)
    want = blocks_by_hand(3, rows, dim)
    assert torch.equal(got, want)
    assert not torch.equal(got[:32], got[32:64])  # the blocks are distinct streams
    assert stats.kstest(got.flatten()[::97].double().numpy(), "norm").pvalue > 1e-3


def reference_optimisation(init, x, group, caps, cfg, seed):
    """The plain loop: Adam on autograd of proxy_terms, batches and shared noise drawn in line."""
    leaves = [v.clone().requires_grad_(True) for v in (init.mu, init.log_sigma, init.prototype)]
    optimizer = torch.optim.Adam(leaves, lr=cfg.lr)
    generator = torch.Generator().manual_seed(seed)
    trace = []
    for step in range(cfg.steps):
        n = len(x)
        idx = torch.randperm(n, generator=generator)[: cfg.batch_size] if n > cfg.batch_size else None
        xb, gb = (x, group) if idx is None else (x[idx], group[idx])
        noise = standard_normal(generator, torch.empty(noise_rows(gb), x.shape[1]), Workers(1, 1, x.dtype))
        terms = proxy_terms(SourceParams(*leaves), xb, gb, expanded(noise, gb), caps, cfg)
        optimizer.zero_grad()
        terms.total.backward()
        optimizer.step()
        if (step + 1) % cfg.log_every == 0 or step == 0 or step + 1 == cfg.steps:
            trace.append(
                [step + 1] + [float(v.detach()) for v in (terms.total, terms.ang, terms.cap, terms.scale)]
            )
    return SourceParams(*(v.detach() for v in leaves)), trace


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("batch_size", [48, 200])  # minibatches of 48 of 64 rows; the full batch
def test_twenty_steps_equal_the_autograd_loop(batch_size, scale, path):
    init, x, group, _, caps = problem(torch.float32)
    cfg = config(scale, steps=20, lr=0.05, batch_size=batch_size, log_every=5)
    want, want_trace = reference_optimisation(init, x, group, caps, cfg, seed=7)
    got = optimize_sources(init, x, group, caps, cfg, seed=7)
    assert (want.mu - init.mu).abs().max() > 0.1  # the parameters did move
    for name in ("mu", "log_sigma", "prototype"):  # group 4 has no rows: left out, exactly at init
        assert torch.equal(getattr(got.params, name)[4], getattr(init, name)[4])
    for name in ("mu", "log_sigma", "prototype"):
        torch.testing.assert_close(getattr(got.params, name), getattr(want, name), rtol=0, atol=1e-5)
    assert [row[0] for row in got.trace] == [1, 5, 10, 15, 20]
    torch.testing.assert_close(torch.tensor(got.trace), torch.tensor(want_trace), rtol=0, atol=1e-5)


def test_torch_thread_count_is_restored():
    init, x, group, _, caps = problem(torch.float32)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        optimize_sources(init, x, group, caps, ProxyConfig(steps=2), seed=0)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_optimisation_is_the_same_bit_for_bit_for_any_number_of_threads():
    init, x, group, _, caps = problem(torch.float32, n=400, dim=2**14)  # several chunks and noise blocks
    cfg = config("per_dim", steps=5, batch_size=300)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(optimize_sources(init, x, group, caps, cfg, seed=4))
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        for name in ("mu", "log_sigma", "prototype"):
            assert torch.equal(getattr(other.params, name), getattr(results[0].params, name))
        assert other.trace == results[0].trace


@pytest.mark.parametrize("dim", [2, 37, 256])
@pytest.mark.parametrize("batch_size", [150, 400])  # minibatches; the full batch
def test_flat_group_sums_give_the_grouped_optimisation_bit_for_bit(monkeypatch, dim, batch_size):
    """All groups at once (flat_group_sums, small batches) against a task per group (group_sums):
    the same sources and trace, bit for bit, at sizes that pad the groups' segments."""
    init, x, group, _, caps = problem(torch.float32, n=300, dim=dim)
    cfg = config("per_dim", steps=30, lr=0.05, batch_size=batch_size, log_every=10)
    assert source_opt.flat_fits(group, len(init.mu), dim)
    flat = optimize_sources(init, x, group, caps, cfg, seed=5)
    monkeypatch.setattr(source_opt, "FLAT_ELEMENTS", 0)
    grouped = optimize_sources(init, x, group, caps, cfg, seed=5)
    for name in ("mu", "log_sigma", "prototype"):
        assert torch.equal(getattr(flat.params, name), getattr(grouped.params, name)), name
    assert flat.trace == grouped.trace


def test_a_groups_sources_do_not_depend_on_other_groups_data():
    """What sharing the noise relies on: group g's optimisation sees only g's rows (and the
    batch draws), so changing another group's latents leaves g's sources unchanged, bit for bit."""
    init, x, group, _, caps = problem(torch.float32)
    cfg = config("per_dim", steps=10, lr=0.05, batch_size=48)
    moved = x.clone()
    moved[group == 0] += 3.0
    a, b = (optimize_sources(init, v, group, caps, cfg, seed=2).params for v in (x, moved))
    assert not torch.equal(a.mu[0], b.mu[0])
    for name in ("mu", "log_sigma", "prototype"):
        assert torch.equal(getattr(a, name)[1:], getattr(b, name)[1:])


@pytest.mark.parametrize("chunk", [2**22, 40])  # one chunk; chunks of 1 row at D = 32
def test_displacements_equal_the_plain_formula_on_any_rows(monkeypatch, chunk):
    monkeypatch.setattr(source_opt, "DISPLACEMENT_CHUNK_ELEMENTS", chunk)
    params, x, group, noise, _ = problem(torch.float32)
    eps, sigma = torch.randn(x.shape, generator=torch.Generator().manual_seed(5)), params.log_sigma.exp()
    rows = torch.tensor([5, 0, 63, 7, 7])
    want = x[rows] - (params.mu[group[rows]] + sigma[group[rows]] * eps[rows])
    assert torch.equal(source_opt.displacements(x, eps, group, params.mu, sigma, rows=rows), want)
    out = torch.full((70, x.shape[1]), float("nan"))
    assert torch.equal(source_opt.displacements(x, eps, group, out=out), x - eps)
    assert torch.equal(out[:64], x - eps) and out[64:].isnan().all()  # written into out's first rows
    assert torch.equal(source_opt.displacements(x, eps, group, params.mu), x - (params.mu[group] + eps))


def test_caps_are_each_groups_quantile_of_the_distance_to_its_class_mean(monkeypatch):
    monkeypatch.setattr(source_opt, "DISPLACEMENT_CHUNK_ELEMENTS", 96)  # chunks of 3 rows
    _, x, group, _, _ = problem()
    label = group // 2
    means = torch.stack([x[label == c].mean(0) for c in range(2)])
    caps = fixed_caps(x, means, label, group, 5, 0.9)
    dist = np.linalg.norm(x.numpy() - means.numpy()[label.numpy()], axis=1)
    want = [np.quantile(dist[group.numpy() == g], 0.9) for g in range(4)] + [0.0]
    np.testing.assert_allclose(caps.numpy(), want, rtol=1e-12)
