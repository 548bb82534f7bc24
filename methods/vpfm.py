"""VPFM: flow matching on the variance-preserving diffusion path, a diffusion model in FM's terms.

Lipman et al. (ICLR 2023, "Flow Matching for Generative Modeling", Sec. 4.1 "diffusion
conditional VFs", and Meta's flow_matching library's AffinePath with its VP scheduler): the path
of the VP SDE (Song et al. 2021) written as an affine path, x_t = alpha_t x1 + sigma_t x0, trained
by regressing its velocity u_t = alpha_t' x1 + sigma_t' x0. So a diffusion model trains on the
shared backbone with the same N(0, I) source, class token, optimiser and budget as fm, and samples
with the same Euler solver at the same NFE; only the path differs.

The schedule, in bench's time (t = 0 source, t = 1 data). The VP SDE runs in diffusion time
s = 1 - t (s = 0 data, s = 1 noise) with beta(s) = beta_min + s (beta_max - beta_min) and
T(s) = int_0^s beta = beta_min s + (beta_max - beta_min) s^2 / 2. Its marginal given x1 is
N(exp(-T(s)/2) x1, (1 - exp(-T(s))) I), hence

    alpha_t = exp(-T(1 - t) / 2),            sigma_t = sqrt(1 - alpha_t^2),
    alpha_t' = alpha_t beta(1 - t) / 2,      sigma_t' = -alpha_t alpha_t' / sigma_t

(d/dt T(1 - t) = -beta(1 - t); alpha^2 + sigma^2 = 1 at every t, which is what variance
preserving means). With Lipman et al.'s beta_min = 0.1, beta_max = 20: T(1) = 10.05, so at t = 0
alpha_0 = exp(-5.025) = 0.0066 and sigma_0 = 0.99998, not exactly 0 and 1. The path's t = 0
marginal is alpha_0 x1 + sigma_0 eps, which is N(0, I) only approximately: sampling starts from
N(0, I) (the method's source), off by 0.66 % of each data point (a mean shift of alpha_0 E[x1]),
as every VP diffusion model is. At t = 1, sigma_1 = 0 and sigma_t' ~ -sqrt(beta_min / (4 (1 - t)))
diverges, so training times are drawn from U(0, 1 - t_eps) (Song et al.'s eps = 1e-5 at the data
end): the largest |sigma_t'| is then 50, and Euler never evaluates the field at t = 1.
"""

from __future__ import annotations

import torch

from bench.config.checks import is_real, require
from bench.method import Method
from bench.path import AffinePath, Schedule
from bench.registry import register_method


class VPPath(AffinePath):
    """The variance-preserving affine path with a linear beta(s), in bench's time direction."""

    name = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def beta(self, s: torch.Tensor) -> torch.Tensor:
        """The VP SDE's noise rate beta(s) at diffusion time s = 1 - t."""
        return self.beta_min + s * (self.beta_max - self.beta_min)

    def integrated_beta(self, s: torch.Tensor) -> torch.Tensor:
        """T(s) = int_0^s beta(r) dr."""
        return self.beta_min * s + 0.5 * (self.beta_max - self.beta_min) * s.pow(2)

    def schedule(self, t: torch.Tensor) -> Schedule:
        """alpha_t = exp(-T(1 - t) / 2), sigma_t = sqrt(1 - alpha_t^2) and their derivatives."""
        s = 1 - t
        big_t = self.integrated_beta(s)
        alpha = torch.exp(-0.5 * big_t)
        sigma = torch.sqrt(-torch.expm1(-big_t))  # expm1: exact where T is small, near t = 1
        d_alpha = 0.5 * self.beta(s) * alpha
        return Schedule(alpha=alpha, sigma=sigma, d_alpha=d_alpha, d_sigma=-alpha * d_alpha / sigma)

    def describe(self) -> dict:
        """Name and the beta schedule's ends."""
        return {"name": self.name, "beta_min": self.beta_min, "beta_max": self.beta_max}


@register_method("vpfm")
class VPFlowMatching(Method):
    """Vanilla FM with the VP diffusion path in place of the linear one."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_eps: float = 1e-5):
        super().__init__()
        require(
            [
                (is_real(beta_min) and beta_min >= 0, f"vpfm.beta_min must be >= 0, got {beta_min!r}"),
                (
                    is_real(beta_min) and is_real(beta_max) and beta_max > 0 and beta_max >= beta_min,
                    f"vpfm.beta_max must be > 0 and >= vpfm.beta_min={beta_min!r}, got {beta_max!r}",
                ),
                (is_real(t_eps) and 0 < t_eps < 1, f"vpfm.t_eps must be in (0, 1), got {t_eps!r}"),
            ]
        )
        self.path = VPPath(beta_min, beta_max)
        self.t_eps = float(t_eps)

    def sample_time(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """t ~ U(0, 1 - t_eps): the path's velocity diverges at the data end t = 1."""
        return (1 - self.t_eps) * torch.rand(n, generator=generator)

    def describe(self) -> dict:
        """Name, path and the training times' ceiling."""
        return {**super().describe(), "path": self.path.describe(), "t_eps": self.t_eps}
