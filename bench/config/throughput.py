"""The `budget` settings: the device throughput a cell's GPU-hours are estimated at
(bench.pipeline.budget). They say how fast a device is assumed to be, never what a cell computes:
they feed no hash (bench.config.gin_config.NEVER_HASHED)."""

from __future__ import annotations

from bench.config.checks import USE, Settings, setting, settings

FRACTION_OF_PEAK = "a fraction of the peak in (0, 1], e.g. 0.35"


@settings("budget", wording=USE)
class Assumptions(Settings):
    """The device throughput GPU-hours are computed at (overridable: budget.mfu=0.5)."""

    # H100 SXM dense bf16 peak (NVIDIA's datasheet, without sparsity)
    peak_tflops: float = setting(989.0, above=0, note="the device's peak TFLOP/s, e.g. 989")
    # [our default] sustained fraction for the transformer (training and sampling)
    mfu: float = setting(0.35, above=0, maximum=1, what=FRACTION_OF_PEAK)
    # [our default] for the CNNs: ResNet-50 trains at a few thousand images/s
    cnn_mfu: float = setting(0.08, above=0, maximum=1, what=FRACTION_OF_PEAK)
    # trace sampling's and the VAE's peak memory (seconds per dataset for a large backbone)
    trace_inference: bool = setting(True)

    def describe(self) -> str:
        """The assumptions in words, with the settings that change them."""
        return (
            f"at {self.peak_tflops:,.0f} TFLOP/s peak x MFU {self.mfu:g} (CNNs {self.cnn_mfu:g}); "
            "budget.peak_tflops / budget.mfu / budget.cnn_mfu change it"
        )
