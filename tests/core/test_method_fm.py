"""Vanilla flow matching: the path, the target and the loss against closed forms."""

import numpy as np
import torch

from bench.method import Condition, Method, TrainBatch
from bench.path import linear_path


def test_linear_path_matches_closed_form():
    rng = np.random.default_rng(0)
    x0, x1, t = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)), rng.uniform(size=5)
    p = linear_path(torch.tensor(x0), torch.tensor(x1), torch.tensor(t))
    np.testing.assert_allclose(p.x_t.numpy(), (1 - t[:, None]) * x0 + t[:, None] * x1)
    np.testing.assert_allclose(p.u.numpy(), x1 - x0)
    # the endpoints: t = 0 is the source, t = 1 the data
    ends = linear_path(torch.tensor(x0[:2]), torch.tensor(x1[:2]), torch.tensor([0.0, 1.0]))
    np.testing.assert_allclose(ends.x_t.numpy(), np.stack([x0[0], x1[1]]))


class Recorder(torch.nn.Module):
    """A backbone that returns a fixed velocity and remembers its inputs."""

    def __init__(self, v):
        super().__init__()
        self.v = v

    def forward(self, x_t, t, tokens):
        self.seen = (x_t, t, tokens)
        return self.v


def test_fm_loss_equals_manual_regression():
    rng = np.random.default_rng(1)
    x1, eps, t = (
        torch.tensor(rng.normal(size=(4, 2))),
        torch.tensor(rng.normal(size=(4, 2))),
        torch.tensor(rng.uniform(size=4)),
    )
    v = torch.tensor(rng.normal(size=(4, 2)))
    method = Method()
    method.setup(n_classes=3)
    backbone = Recorder(v)
    labels = torch.tensor([0, 2, 1, 2])
    loss = method.loss(backbone, TrainBatch(x1=x1, cond=Condition(labels), eps=eps, t=t))
    expected = np.mean((v.numpy() - (x1.numpy() - eps.numpy())) ** 2)
    assert abs(float(loss) - expected) < 1e-12
    x_t, _, tokens = backbone.seen
    np.testing.assert_allclose(
        x_t.numpy(), (1 - t.numpy()[:, None]) * eps.numpy() + t.numpy()[:, None] * x1.numpy()
    )
    assert tokens.tolist() == [[1], [3], [2], [3]]  # token 0 is reserved for "no condition"
    assert method.vocab_size == 4 and method.n_tokens == 1
