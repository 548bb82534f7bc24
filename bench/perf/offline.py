"""Case `offline`: optprior's offline stage at the paper's scale, time and peak memory.

Subclass induction + source initialisation + 2,500 source-optimisation steps (optprior's
defaults; the Bayes-risk analysis is off, it is no part of the stage) on n = 20,000 latents of
d = 16,384 (FLUX VAE at 256 x 256) in 20 long-tailed classes, each class two shifted Gaussian
subclasses. Targets: <= 600 s and <= 6 GiB on 2 cores (issue 18; 8 GiB before it).

The stage runs in a fresh child process, so its peak resident memory (ru_maxrss, latents
included) is the stage's own. The optimisation is a fixed number of identical steps (fixed batch
and shapes), so with `BENCH_OFFLINE_STEPS` = S < 2,500 the child times S steps and the stage
time is reported as the rest of the stage + S-step time x 2,500 / S, marked as extrapolated in
the details; by default all 2,500 steps run.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import torch

from bench.perf.case import Measurement, python_command

SIZES = {"full": (20_000, 16_384, 20), "smoke": (600, 64, 4)}  # (n, d, classes)
STEPS = {"full": 2_500, "smoke": 50}  # source-optimisation steps of the stage
STEPS_ENV = "BENCH_OFFLINE_STEPS"


def long_tailed_latents(n: int, d: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n latents in `classes` classes with an imbalance ratio of 100, two subclasses each."""
    from bench.data.longtail import exponential_profile

    profile = exponential_profile(10_000, classes, 100)
    counts = [max(20, round(n * c / sum(profile))) for c in profile]
    g = torch.Generator().manual_seed(0)
    labels = torch.cat([torch.full((k,), c) for c, k in enumerate(counts)])
    sub = torch.randint(0, 2, (len(labels),), generator=g)
    centres = torch.randn(classes, 2, d, generator=g)
    return centres[labels, sub] + 0.5 * torch.randn(len(labels), d, generator=g), labels


def run_stage(n: int, d: int, classes: int, steps: int) -> dict:
    """The stage in this process: per-part seconds (optprior's info) and the peak RSS in GiB."""
    from bench.methods.optprior import OptPrior

    z, labels = long_tailed_latents(n, d, classes)
    method = OptPrior(risk_samples=0, steps=steps)
    prior = method.fit_prior(z, labels, classes, 0)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    return {
        "seconds": prior.info["seconds"],
        "peak_gib": peak_gib,
        "n": len(z),
        "k": prior.info["k"],
        "batch_size": method.proxy.batch_size,
        "threads": torch.get_num_threads(),
    }


def measure(scale: str, workdir: Path) -> Measurement:
    """Run the stage in a child process and report its time (extrapolated if asked) and peak."""
    n, d, classes = SIZES[scale]
    stage_steps = STEPS[scale]
    steps = int(os.environ.get(STEPS_ENV, stage_steps)) if scale == "full" else stage_steps
    out = Path(workdir) / "offline.json"
    child = subprocess.run(
        [*python_command(), "-m", "bench.perf.offline", str(n), str(d), str(classes), str(steps), str(out)],
        capture_output=True,
        text=True,
    )
    if child.returncode != 0:
        raise RuntimeError(f"offline stage child failed: {child.stderr.strip().splitlines()[-1:]}")
    run = json.loads(out.read_text())
    parts = run["seconds"]
    optimisation = parts["optimisation"] * stage_steps / steps
    total = sum(v for k, v in parts.items() if k != "optimisation") + optimisation
    details = {
        **run,
        "steps_timed": steps,
        "steps": stage_steps,
        "extrapolated": steps != stage_steps,
        "seconds_per_step": parts["optimisation"] / steps,
        "d": d,
        "classes": classes,
    }
    return Measurement(
        keys={"offline_stage_s": total, "offline_stage_peak_gib": run["peak_gib"]}, details=details
    )


if __name__ == "__main__":  # the child: python -m bench.perf.offline N D CLASSES STEPS OUT
    n_, d_, c_, s_ = (int(v) for v in sys.argv[1:5])
    Path(sys.argv[5]).write_text(json.dumps(run_stage(n_, d_, c_, s_)))
