"""`check_encoder`: an encoder plugin against what the encode stage and evaluation need (bench/encoder.py).

On tiny images (2, 1, 16, 16) in [0, 1] and vectors (4, 2) (a kind it refuses with a BenchError is
left out; at least one must be taken): `latent_shape` is a tuple of ints, `encode` returns finite
float latents of that shape and the same ones every time (the latent cache relies on it),
`decode` brings them back to finite samples of the data's shape, `cache_key` is JSON naming it and
`compute_device` a torch.device. An encoder that needs the user's files (`missing_settings`,
e.g. a weights folder) is skipped, naming them, unless `settings` gives them.
"""

from __future__ import annotations

import torch

from bench.encoder import Encoder
from bench.errors import BenchError
from bench.testing.probe import Probe, resolve

HOOKS = {
    "encode": ("x",),
    "decode": ("z",),
    "latent_shape": ("sample_shape",),
    "cache_key": (),
    "compute_device": (),
    "missing_settings": (),
}
SAMPLES = {"image": (2, 1, 16, 16), "vector": (4, 2)}


def check_encoder(plugin, settings: dict | None = None) -> None:
    """Check an encoder class (or registered name) against the encoder contract; ContractFailure if
    not. `settings`: constructor keyword arguments (a local weights `path`)."""
    probe = Probe("encoder", resolve("encoder", plugin))
    probe.require_hooks(HOOKS, base=Encoder, written=("encode", "decode", "latent_shape"))
    encoder = probe.construct(settings)
    probe.require_signatures(encoder, HOOKS)
    probe.skip_unless_configured(encoder, "check_encoder")
    probe.jsonable("cache_key", probe.call("cache_key", encoder.cache_key), keys=("name",))
    device = probe.call("compute_device", encoder.compute_device)
    probe.expect(
        isinstance(device, torch.device), "compute_device", f"returned {device!r}, expected a torch.device"
    )
    taken = [kind for kind, shape in SAMPLES.items() if _check_kind(probe, encoder, shape)]
    probe.expect(bool(taken), "encode", f"refused every kind of data tried ({', '.join(SAMPLES)})")


def _check_kind(probe: Probe, encoder, shape: tuple) -> bool:
    """encode / decode on data of `shape`; False when the encoder refuses that kind (a BenchError)."""
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    try:
        latent = encoder.latent_shape(tuple(shape[1:]))
        z = encoder.encode(x)
    except BenchError:
        return False
    except Exception as exc:
        probe.fail("encode", f"raised {type(exc).__name__}: {exc} on data of shape {shape}")
    probe.expect(
        isinstance(latent, tuple) and all(isinstance(s, int) and s > 0 for s in latent),
        "latent_shape",
        f"returned {latent!r}, expected a tuple of positive ints",
    )
    probe.tensor("encode", z, shape=(shape[0], *latent), floating=True)
    again = probe.call("encode", encoder.encode, x)
    probe.expect(
        torch.equal(z, again),
        "encode",
        "returned other latents for the same data, expected deterministic ones",
    )
    back = probe.call("decode", encoder.decode, z)
    probe.tensor("decode", back, shape=shape, floating=True)
    return True
