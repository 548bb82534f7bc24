"""What the evaluators score and embed with: the `generative` sample set (bench.metrics.generative)
and the `features` network (bench.metrics.features)."""

from __future__ import annotations

from bench.config.checks import USE, Settings, require, setting, settings

ALLOCATIONS = ("targets", "uniform", "train")
DOMAIN = "domain"  # bench's own network, trained per dataset (the paper's)
# the pretrained networks the field uses (bench.metrics.pretrained), weights from a local file
PRETRAINED = ("xrv_densenet121", "inception_v3")
NETWORKS = (DOMAIN, *PRETRAINED)


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
    """Which network embeds images for FID / IRS / KID / kNN purity / memorisation, and how the
    domain network is trained (bench.metrics.features.build_extractor).

    `network`: 'domain' (bench's own, trained per dataset: `arch`, `path` and the training
    settings below), or a pretrained network the field uses, read from the local safetensors file
    `weights` (bench.metrics.pretrained): 'xrv_densenet121' (torchxrayvision's chest X-ray
    DenseNet-121), 'inception_v3' (the FID Inception of torchmetrics / torch-fidelity)."""

    network: str = setting(DOMAIN, choices=NETWORKS)
    weights: str | None = setting(None)  # the pretrained network's .safetensors file
    arch: str = setting("small_cnn")  # 'small_cnn' (CPU), 'densenet121' (paper), 'resnet50'
    path: str | None = setting(None)  # user weights (see bench.metrics.features); None trains one
    epochs: int = setting(15, minimum=1)  # early-stopping ceiling
    lr: float = setting(1e-3, above=0)
    batch_size: int = setting(64, minimum=1)
    patience: int = setting(4, minimum=1)
    # [our default] balanced sampling, so tail classes shape the space too
    class_balanced: bool = setting(True)

    def __post_init__(self) -> None:
        super().__post_init__()
        pretrained = self.network != DOMAIN
        require(
            [
                (
                    not pretrained or self.weights is not None,
                    f"features.network={self.network!r} needs its weights: set features.weights to "
                    "a local .safetensors file (docs/evaluators.md, 'Feature networks')",
                ),
                (
                    not pretrained or self.path is None,
                    f"features.path is the domain network's; with features.network={self.network!r} "
                    "give the weights as features.weights",
                ),
                (
                    pretrained or self.weights is None,
                    "features.weights is read only by a pretrained network; set features.network "
                    f"to one of {list(PRETRAINED)}, or use features.path for domain weights",
                ),
            ]
        )
