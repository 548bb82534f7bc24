"""Prior storage and class means against numpy."""

import numpy as np
import pytest
import torch

import bench.prior
from bench.prior import Prior, class_means


@pytest.mark.parametrize("chunk", [2**22, 24])  # all rows at once; chunks of 3 rows
def test_class_means_match_numpy_and_keep_the_latent_shape(monkeypatch, chunk):
    monkeypatch.setattr(bench.prior, "MEAN_CHUNK_ELEMENTS", chunk)
    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(50, 2, 2, 2)), rng.integers(0, 3, 50)
    m = class_means(torch.tensor(z, dtype=torch.float32), torch.tensor(y), 4)
    assert m.shape == (4, 2, 2, 2)
    for c in range(3):
        np.testing.assert_allclose(m[c].numpy(), z[y == c].mean(0), atol=1e-6)
    assert torch.all(m[3] == 0)  # an empty class


def test_prior_round_trips_tensors_and_info(tmp_path):
    prior = Prior({"a": torch.arange(6.0).reshape(2, 3)}, {"k": [1, 2], "note": "x"})
    prior.save(tmp_path)
    back = Prior.load(tmp_path)
    assert torch.equal(back.tensors["a"], prior.tensors["a"]) and back.info == prior.info


def test_non_finite_latents_are_refused_with_their_ids():
    import pytest

    from bench.errors import BenchError
    from bench.prior import require_finite

    z = torch.zeros(4, 3)
    z[2, 1] = float("inf")
    with pytest.raises(BenchError, match="samples img_c"):
        require_finite(z, ids=["img_a", "img_b", "img_c", "img_d"])
    require_finite(torch.zeros(2, 3))  # finite input passes
