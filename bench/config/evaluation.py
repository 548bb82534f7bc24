"""What the evaluators score and embed with: the `generative` sample set (bench.metrics.generative)
and the `features` network (bench.metrics.features)."""

from __future__ import annotations

from bench.config.checks import USE, Settings, setting, settings

ALLOCATIONS = ("targets", "uniform", "train")


@settings("generative", wording=USE, frozen=True)
class GenerativeSet(Settings):
    """How many samples the generative metrics use, and how they are spread over classes
    (bench.metrics.generative.per_class)."""

    n_total: int | None = setting(None, minimum=1, none="score the synthetic set")
    allocation: str = setting("targets", choices=ALLOCATIONS)

    @property
    def enabled(self) -> bool:
        """Whether the cell samples a separate generative set."""
        return self.n_total is not None


@settings("features")
class FeatureConfig(Settings):
    """Which network embeds images for FID / IRS / kNN purity, and how it is trained
    (bench.metrics.features.build_extractor)."""

    arch: str = setting("small_cnn")  # 'small_cnn' (CPU), 'densenet121' (paper), 'resnet50'
    path: str | None = setting(None)  # user weights (see bench.metrics.features); None trains one
    epochs: int = setting(15, minimum=1)  # early-stopping ceiling
    lr: float = setting(1e-3, above=0)
    batch_size: int = setting(64, minimum=1)
    patience: int = setting(4, minimum=1)
    # [our default] balanced sampling, so tail classes shape the space too
    class_balanced: bool = setting(True)
