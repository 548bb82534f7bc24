"""GPU training step: the one-GPU preset's flow matching in bf16, eager vs torch.compile, MFU
(the suite's `gpu_compile` case; the GPU check itself, `gpu`, is bench.perf.gpu_check).

The step is bench's own: `bench.pipeline.trainer.train` (accelerate bf16 autocast, AdamW, clipping) with
vanilla flow matching's loss on bench's FluxBackbone, whose FluxTransformer2DModel attends through
diffusers' FluxAttnProcessor and its "native" backend, torch's scaled_dot_product_attention (the
aten SDPA kernel the step actually ran is recorded). For the compiled run the transformer is
compiled in place (`nn.Module.compile`, same module and state dict) before `train`, which takes it
like any module, so both runs time the very same loop.

Sizes: full scale is gin/presets/flux_1gpu.gin whole, the real datasets' default (8 + 16 blocks,
16 heads x 128 = 2048, condition widths 2048 / 768, ~2.2B parameters), on 16 x 32 x 32 latents (the
FLUX VAE at 256 x 256: 8x down, 2 x 2 patches -> 256 image tokens) plus the one class token vanilla
FM conditions on, at the preset's micro-batch of 32: the step a real run takes on one GPU. bench
keeps fp32 master weights, gradients and AdamW moments plus autocast's bf16 copies, so the paper-size
flux1.gin (11.9B, ~214 GB) fits no single GPU and is trained sharded (train.sharding='fsdp').
`step_s_preset_depth_estimate` scales a run at another depth by the ratio of FLOPs (same MFU); at
full scale the depth trained is the preset's, so it equals the measurement.

Timing: a FlowMatching subclass stamps the clock (after a device sync) whenever the trainer asks it
for a loss, so consecutive stamps bound exactly one training step (forward, backward, clipping,
AdamW). The first step (CUDA and cuBLAS warm-up; for the compiled run the whole compilation, from a fresh
inductor cache) is reported apart from the steady state, the median of the steps after warm-up.
MFU = analytic model FLOPs per step (`flux_train_flops`) / steady seconds / the device's dense
bf16 peak (`PEAK_BF16_FLOPS`, by device name).

The measurement runs in a child process: accelerate's mixed precision is fixed once per process
(a bf16 Accelerator after an fp32 one raises), and a fresh process gives the peak-memory counter,
the inductor cache and the device memory to this case alone. Without CUDA, full scale records
None values and why; smoke scale runs the same code on the CPU with a tiny model (compiled with the
"aot_eager" backend, which traces forward and backward like inductor but generates no code).
"""

from __future__ import annotations

import ast
import gc
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from bench.errors import BenchError
from bench.perf.case import Measurement, median

PRESET = "presets/flux_1gpu.gin"
MODES = ("eager", "compiled")
MLP_RATIO = 4  # FluxTransformer2DModel's feed-forward width = 4 x inner width (fixed in diffusers)
TIMESTEP_CHANNELS = 256  # width of FLUX's sinusoidal timestep features (fixed in diffusers)
N_CLASSES = 8  # classes of the random training set; vanilla FM adds one class token per sample
SKIPPED = "no CUDA device in this run"

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, matched against
# torch.cuda.get_device_name(); first match wins, so the narrower patterns come first.
PEAK_BF16_FLOPS = (
    (r"H100.*PCIe", 756e12, "NVIDIA H100 PCIe datasheet: 756 TFLOP/s bf16 dense"),
    (r"H100.*(SXM|HBM3)", 989.4e12, "NVIDIA H100 SXM datasheet: 989.4 TFLOP/s bf16 dense"),
    (r"H200(?!.*NVL)", 989.4e12, "NVIDIA H200 SXM datasheet: 989.4 TFLOP/s bf16 dense"),
    (r"A100", 312e12, "NVIDIA A100 datasheet: 312 TFLOP/s bf16 dense"),
)


@dataclass(frozen=True)
class Scale:
    """What one scale trains and times."""

    depth: tuple[int, int]  # (double-stream, single-stream) blocks trained
    batch: int
    latent_shape: tuple[int, int, int]  # (C, H, W) of one latent
    warmup_steps: int  # steps before the timed ones, the first included
    timed_steps: int
    compile_backend: str  # torch.compile backend of the compiled run
    threads: int  # torch CPU threads (train.threads; 0 = torch's default)
    width: dict = field(default_factory=dict)  # hyperparameters replacing the preset's (smoke: tiny)

    def __post_init__(self):
        if self.warmup_steps < 2:  # step 1 compiles, step 2 runs the profiler: neither may be timed
            raise ValueError(f"warmup_steps={self.warmup_steps}: use at least 2")


SCALES = {
    "full": Scale(
        depth=(8, 16),
        batch=32,
        latent_shape=(16, 32, 32),
        warmup_steps=3,
        timed_steps=10,
        compile_backend="inductor",
        threads=0,
    ),
    # one thread: on a shared 2-core machine two threads spin against other processes (30x slower)
    "smoke": Scale(
        depth=(1, 1),
        batch=4,
        latent_shape=(16, 8, 8),
        warmup_steps=2,
        timed_steps=2,
        compile_backend="aot_eager",
        threads=1,
        width=dict(
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            axes_dims_rope=(4, 4, 8),
        ),
    ),
}


# -- the model's size and FLOPs ------------------------------------------------------------------
def preset_hyperparameters(path: Path | None = None) -> dict:
    """The `flux.NAME = VALUE` bindings of the case's preset (PRESET, or `path`), as a dict."""
    if path is None:
        from bench.config.gin_config import gin_dir

        path = gin_dir() / PRESET
    out = {}
    for line in Path(path).read_text().splitlines():
        binding = line.split("#", 1)[0].strip()
        if binding.startswith("flux.") and "=" in binding:
            name, value = binding.split("=", 1)
            out[name.strip()[len("flux.") :]] = ast.literal_eval(value.strip())
    return out


def flux_forward_flops(config: Mapping, batch: int, image_tokens: int, text_tokens: int) -> int:
    """Matmul FLOPs (2 per multiply-add) of one FluxTransformer2DModel forward (patch size 1).

    `config` uses the model's own names (its `.config` works): num_layers, num_single_layers,
    attention_head_dim, num_attention_heads, joint_attention_dim, pooled_projection_dim,
    in_channels, optionally out_channels. Counted: every linear layer, and attention's QK^T and AV
    over the joint text + image sequence. Not counted, having no matmuls: norms, activations,
    rotary embedding, softmax, residual adds and modulation products.
    """
    d = config["num_attention_heads"] * config["attention_head_dim"]
    m = MLP_RATIO * d
    s = image_tokens + text_tokens
    c_in = config["in_channels"]
    c_out = config.get("out_channels") or c_in
    # per token, either block: q, k, v, out projections 8 d^2 and the MLP 4 d m (the single
    # block's proj_out takes attention and MLP together: 6 d^2 + 2 d m + 2 (d + m) d, the same);
    # attention: QK^T and AV over s x s, 2 s^2 d each summed over heads;
    # per sample: AdaLN modulation from the time/pooled embedding, 6d per stream (double), 3d (single)
    per_token = 8 * d * d + 4 * d * m
    double = per_token * s + 4 * s * s * d + 2 * (2 * d * 6 * d)
    single = per_token * s + 4 * s * s * d + 2 * d * 3 * d
    per_sample = (
        config["num_layers"] * double
        + config["num_single_layers"] * single
        + 2 * c_in * d * image_tokens  # x_embedder
        + 2 * config["joint_attention_dim"] * d * text_tokens  # context_embedder
        + 2 * (TIMESTEP_CHANNELS * d + d * d)  # timestep embedding MLP
        + 2 * (config["pooled_projection_dim"] * d + d * d)  # pooled-projection MLP
        + 2 * d * 2 * d  # norm_out modulation
        + 2 * d * c_out * image_tokens  # proj_out
    )
    return batch * per_sample


def flux_train_flops(config: Mapping, batch: int, image_tokens: int, text_tokens: int) -> int:
    """Model FLOPs of one training step: forward + backward = 3 x forward (backward computes the
    gradients of both the inputs and the weights of every matmul; recomputation is not counted)."""
    return 3 * flux_forward_flops(config, batch, image_tokens, text_tokens)


def peak_bf16_flops(device_name: str) -> tuple[float | None, str]:
    """(dense bf16 peak FLOP/s, where the figure comes from) for a device name; None if unknown."""
    for pattern, flops, source in PEAK_BF16_FLOPS:
        if re.search(pattern, device_name, re.IGNORECASE):
            return flops, source
    return None, (
        f"no peak bf16 figure for {device_name!r}: MFU not computed "
        "(add the device to bench.perf.gpu.PEAK_BF16_FLOPS)"
    )


# -- one timed training run (in the child process) ----------------------------------------------
def _sync() -> None:
    """Wait for queued device work, so the clock reads finished work."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _step_clock_method():
    """FlowMatching whose loss stamps the clock; its second call also records the SDPA ops run."""
    from bench.methods.fm import FlowMatching

    class StepClock(FlowMatching):
        """Vanilla FM; `stamps[i]` is when step i asked for its loss (after a device sync)."""

        def __init__(self):
            super().__init__()
            self.stamps: list[float] = []
            self.attention_ops: list[str] = []

        def loss(self, backbone, batch):
            _sync()
            self.stamps.append(time.perf_counter())
            if len(self.stamps) != 2:  # a warm-up step, never a timed one, carries the profiler
                return super().loss(backbone, batch)
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                out = super().loss(backbone, batch)
            self.attention_ops = sorted({e.name for e in prof.events() if "scaled_dot_product" in e.name})
            return out

    return StepClock()


def _peak_memory_gib() -> float:
    """Device peak allocated since the last reset; on the CPU, the process's peak RSS."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_mode(sc: Scale, hyper: dict, compiled: bool) -> dict:
    """Train a fresh backbone `warmup + timed` steps through bench.pipeline.trainer; per-step seconds etc."""
    from bench.backbones.flux import FluxBackbone
    from bench.config.train import TrainConfig
    from bench.pipeline.trainer import train

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    method = _step_clock_method()
    method.setup(N_CLASSES)
    with torch.device(device):  # initialise the weights where they train (seconds, not minutes)
        backbone = FluxBackbone(sc.latent_shape, method.vocab_size, method.n_tokens, **hyper)
    if compiled:
        backbone.transformer.compile(backend=sc.compile_backend)
    g = torch.Generator().manual_seed(0)
    latents = torch.randn((2 * sc.batch, *sc.latent_shape), generator=g)
    labels = torch.randint(0, N_CLASSES, (2 * sc.batch,), generator=g)
    steps = sc.warmup_steps + sc.timed_steps
    cfg = TrainConfig(
        steps=steps, batch_size=sc.batch, lr=1e-4, mixed_precision="bf16", log_every=steps, threads=sc.threads
    )
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        train(method, backbone, latents, labels, cfg, seed=0)
        _sync()
        stamps = method.stamps + [time.perf_counter()]
        return _run_summary(sc, method, backbone, stamps, cfg)
    except torch.cuda.OutOfMemoryError as exc:
        return {"error": f"out of memory: {str(exc).splitlines()[0]}"}
    finally:  # free this run's model and caches before the next
        del backbone
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        torch._dynamo.reset()


def _run_summary(sc: Scale, method, backbone, stamps: list[float], cfg) -> dict:
    """Per-step seconds from the clock stamps, the steady median, memory and what attention ran."""
    step_s = [b - a for a, b in zip(stamps, stamps[1:])]
    config = backbone.transformer.config
    return {
        "step_s": step_s,
        "first_step_s": step_s[0],
        "steady_step_s": median(step_s[sc.warmup_steps :]),
        "peak_memory_gib": _peak_memory_gib(),
        "attention_ops": method.attention_ops,
        "attention_processors": sorted(
            {type(p).__name__ for p in backbone.transformer.attn_processors.values()}
        ),
        "parameters": sum(p.numel() for p in backbone.parameters()),
        "transformer_config": _jsonable({k: v for k, v in config.items() if not k.startswith("_")}),
        "train_config": asdict(cfg),
    }


def _jsonable(config: Mapping) -> dict:
    """A config with its tuples as lists, as JSON stores them."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def _preset_parameters(preset: dict, in_channels: int) -> int:
    """Parameters of the preset's FluxTransformer2DModel, built on the meta device (no memory)."""
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        model = FluxTransformer2DModel(patch_size=1, in_channels=in_channels, guidance_embeds=False, **preset)
    return sum(p.numel() for p in model.parameters())


def measure_here(scale: str) -> dict:
    """Both runs of `scale` in this process; {"keys": ..., "details": ...} as the parent records."""
    sc = SCALES[scale]
    preset = preset_hyperparameters()
    hyper = {**preset, **sc.width, "num_layers": sc.depth[0], "num_single_layers": sc.depth[1]}
    runs = {mode: run_mode(sc, hyper, mode == "compiled") for mode in MODES}
    cuda = torch.cuda.is_available()
    name = torch.cuda.get_device_name() if cuda else None
    peak, peak_source = (
        peak_bf16_flops(name) if cuda else (None, "CPU run: MFU is reported for CUDA devices only")
    )
    c, h, w = sc.latent_shape
    image_tokens, text_tokens = (h // 2) * (w // 2), 1
    config = {**hyper, "in_channels": 4 * c}
    flops = flux_train_flops(config, sc.batch, image_tokens, text_tokens)
    preset_flops = flux_train_flops({**preset, "in_channels": 4 * c}, sc.batch, image_tokens, text_tokens)
    steady = {m: runs[m].get("steady_step_s") for m in MODES}
    mfu = {m: (flops / steady[m] / peak if peak and steady[m] else None) for m in MODES}
    keys = {"gpu_compile_step_s": steady, "gpu_compile_mfu": mfu}
    details = {
        "scale": scale,
        "device": name or "cpu",
        "precision": "bf16 autocast (accelerate), fp32 master weights",
        "batch": sc.batch,
        "latent_shape": list(sc.latent_shape),
        "image_tokens": image_tokens,
        "text_tokens": text_tokens,
        "tokens_per_sample": image_tokens + text_tokens,
        "preset": {"file": PRESET, **_jsonable(preset)},
        "depth_trained": list(sc.depth),
        "compile_backend": sc.compile_backend,
        "compile": "backbone.transformer.compile() (in place) before bench.pipeline.trainer.train; same loop as eager",
        "flops_per_step": flops,
        "flops_per_step_preset_depth": preset_flops,
        "preset_parameters": _preset_parameters(preset, 4 * c),
        "peak_flops": peak,
        "peak_flops_source": peak_source,
        "step_s_preset_depth_estimate": {
            m: (steady[m] * preset_flops / flops if steady[m] else None) for m in MODES
        },
        "compile_s": runs["compiled"].get("first_step_s"),
        "peak_memory_measure": (
            "torch.cuda.max_memory_allocated per run"
            if cuda
            else "process peak RSS (cumulative over both runs)"
        ),
        "timing": "per step: between consecutive loss calls of bench.pipeline.trainer.train (device synced); "
        f"steady = median of the {sc.timed_steps} steps after {sc.warmup_steps} warm-up steps",
        "runs": runs,
    }
    return {"keys": keys, "details": details}


# -- the case (parent process) -------------------------------------------------------------------
def skipped(reason: str) -> Measurement:
    """The keys with None values and why, built without touching a model."""
    return Measurement(
        {"gpu_compile_step_s": dict.fromkeys(MODES), "gpu_compile_mfu": dict.fromkeys(MODES)},
        {"skipped": reason},
    )


def measure(scale: str, workdir: Path) -> Measurement:
    """Per-step seconds eager/compiled, their MFU and the GPU's name, measured in a child process.

    Full scale needs CUDA (None values and details["skipped"] otherwise); smoke scale always runs
    on the CPU (CUDA hidden from the child).
    """
    SCALES[scale]  # an unknown scale fails here, before a child starts
    if scale == "full" and not torch.cuda.is_available():
        return skipped(SKIPPED)
    workdir = Path(workdir).resolve()  # the child runs in it: paths must not be relative to it
    workdir.mkdir(parents=True, exist_ok=True)
    cache, out, log = workdir / "gpu_inductor_cache", workdir / "gpu_case.json", workdir / "gpu_case.log"
    shutil.rmtree(cache, ignore_errors=True)  # compile time is measured from a cold cache
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    if scale == "smoke":
        env["CUDA_VISIBLE_DEVICES"] = ""
    with open(log, "w") as stream:
        done = subprocess.run(
            [sys.executable, "-m", "bench.perf.gpu", scale, str(out)],
            cwd=workdir,
            env=env,
            stdout=stream,
            stderr=subprocess.STDOUT,
        )
    if done.returncode != 0:
        raise BenchError(
            f"the gpu case's child process failed (exit {done.returncode}); its output is in {log}"
        )
    result = json.loads(out.read_text())
    return Measurement(result["keys"], result["details"])


def main(argv: list[str]) -> None:
    """Child-process entry: `python -m bench.perf.gpu SCALE OUT.json`."""
    scale, out = argv
    Path(out).write_text(json.dumps(measure_here(scale), indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
