"""The `sample` and `source` settings: how synthetic samples are drawn (bench.pipeline.sampler) and
which source draws the `@source` reference scores."""

from __future__ import annotations

from collections.abc import Sequence

from bench.config.checks import USE, Settings, is_int, require, setting, settings

# the precision of sampling's forward and of decoding (bench.pipeline.inference_precision)
PRECISIONS = ("fp32", "bf16")


@settings("sample", wording=USE)
class SampleConfig(Settings):
    """How synthetic samples are drawn."""

    # "euler" (1 NFE per step) or "heun" (2 NFE per step); an unknown name is refused by
    # bench.pipeline.sampler.get_solver when the cell is built
    solver: str = "euler"
    nfe: int = setting(32, minimum=1, note="velocity evaluations per sample")
    # None: as many as the held-out split has of each class; "targets": the augmentation targets
    # (bench.data.targets: only ULT/LT/MT classes); an int: that many for every class
    n_per_class: int | str | None = None
    # None: the largest batch that fits the device (bench.pipeline.inference_memory), on CUDA;
    # AUTO_CPU_BATCH on the CPU, where a larger batch is no faster
    batch_size: int | None = setting(1024, minimum=1, none="the largest batch that fits the GPU")
    # "fp32", or "bf16": the velocity under bf16 autocast (TF32 on), the ODE state in fp32; the
    # synthetic sets are decoded at the same precision (bench.pipeline.inference_precision)
    precision: str = setting(
        "fp32", choices=PRECISIONS, note="'bf16': autocast on the GPU, ~10x faster; 'fp32': exact"
    )
    guidance_scale: float = setting(1.0, note="1.0 = no guidance")  # classifier-free guidance
    # also sample the untrained backbone, as a sanity floor (`@init` metrics); opt-in: it costs
    # as much as the real synthetic set. The source-only reference (`@source`) is always scored.
    init_reference: bool = False
    # store the whole ODE path of the first `keep_paths` samples of each class (for trajectory
    # figures of low-dimensional data): every solver state from t = 0 to t = 1
    keep_paths: int = setting(0, minimum=0, note="samples per class whose ODE path is stored; 0 stores none")

    def __post_init__(self):
        super().__post_init__()
        n = self.n_per_class
        require(
            [
                (
                    not (self.solver == "heun" and self.nfe % 2),
                    f"sample.nfe={self.nfe}: the heun solver needs an even number of evaluations",
                ),
                (
                    n is None or n == "targets" or (is_int(n) and n >= 0),
                    f"sample.n_per_class={n!r}: use None (held-out counts), 'targets' (augmentation targets) or a "
                    "non-negative integer",
                ),
            ]
        )


@settings("source", wording=USE)
class SourceSubset(Settings):
    """Which source draws the `@source` reference scores (gin scope `source`; evaluation only:
    no stage but the cell's record depends on it).

    The reference is sized like the set the generative metrics score, 50,000 samples in the
    paper's setting: decoding as many source draws again (620 GFLOP per 256 x 256 image through
    the FLUX VAE) buys a reference line nothing the metrics compare needs. Each class keeps its
    first `max_per_class` draws (per-class sample indices 0, 1, ...: the x0 of the scored set's
    first samples of that class, so no random draw is involved). [our default] 2,000: twice the
    1,024 features of the paper's DenseNet-121, so a class's feature covariance has full rank;
    IRS's queries (capped by the eval split's count) and KID's subsets (<= 1,000) use fewer. None
    keeps the whole set.
    """

    max_per_class: int | None = setting(
        2000, minimum=2, none="all of them", note="source draws per class the @source reference scores"
    )

    def counts(self, scored: Sequence[int]) -> list[int]:
        """Per class, the number of source draws to score for a scored set with `scored` per class."""
        cap = self.max_per_class
        return [int(n) if cap is None else min(int(n), cap) for n in scored]
