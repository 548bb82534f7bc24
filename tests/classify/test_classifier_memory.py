"""The downstream classifier's training-step peak (bench.pipeline.classifier_memory) against
PyTorch's MemTracker over fake tensors, and how it grows with the batch."""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from bench.classify.fit import build_classifier
from bench.pipeline.classifier_memory import GIB, classifier_step_gib


def memtracker_peak(arch, in_channels, n_classes, size, batch) -> int:
    """MemTracker's peak of the step as `bench.classify.fit._epoch` runs it, bf16 autocast."""
    from torch.distributed._tools.mem_tracker import MemTracker

    with FakeTensorMode():
        model = build_classifier(arch, in_channels, n_classes)
        opt = torch.optim.Adam(model.parameters(), foreach=True)
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        opt.step()
        tracker = MemTracker()
        tracker.track_external(model, opt)
        with tracker:
            x, y = torch.randn(batch, in_channels, size, size), torch.randint(0, n_classes, (batch,))
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return next(iter(tracker.get_tracker_snapshot("peak").values()))["Total"]


@pytest.mark.parametrize("arch, size, batch", [("small_cnn", 32, 16), ("resnet50", 64, 8)])
@pytest.mark.slow
def test_classifier_peak_matches_memtracker(arch, size, batch):
    estimate = classifier_step_gib(arch, 1, 5, size, batch, "bf16") * GIB
    assert estimate == pytest.approx(memtracker_peak(arch, 1, 5, size, batch), rel=0.15)


def test_classifier_peak_grows_with_the_batch_beyond_the_state():
    state = (
        16 * sum(p.numel() for p in build_classifier("small_cnn", 1, 5).parameters()) / GIB
    )  # w, g, 2 moments
    small, large = (
        classifier_step_gib("small_cnn", 1, 5, 32, 8),
        classifier_step_gib("small_cnn", 1, 5, 32, 64),
    )
    assert state < small < large
    assert (large - state) == pytest.approx(8 * (small - state), rel=0.2)  # activations ~ the batch
