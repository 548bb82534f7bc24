"""Pretrained feature networks the field reports FID on, next to bench's domain network.

`features.network` picks one (bench.config.evaluation.FeatureConfig):
- `xrv_densenet121`: torchxrayvision's chest X-ray DenseNet-121 (bench.metrics.densenet), 1024-d;
- `inception_v3`: the FID Inception of torchmetrics / torch-fidelity (bench.metrics.fid_inception), 2048-d.

Their weights are read from the local file `features.weights` only, and only as safetensors (bench
reads no pickle and downloads nothing); docs/evaluators.md gives the one-line conversion of the
published `.pt` / `.pth` files. The file must hold the network's feature layers under the published
key names (a leading `module.` is stripped); the classifier's keys (`classifier.*`, `fc.*`) and
torchxrayvision's `op_threshs` may be present and are not used, a missing batch-norm
`num_batches_tracked` is not needed. Anything else is refused in one line that says what to do.

A number computed on one of these networks is named after it (bench.evaluator.on_features:
`fid[inception_v3]/tail`), so it never shares a table column with the domain network's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from bench.classify.batches import device_batches
from bench.classify.fit import default_device
from bench.config.evaluation import FeatureConfig
from bench.errors import BenchError
from bench.metrics.densenet import DenseNet121, xrv_preprocess
from bench.metrics.features import FeatureExtractor
from bench.metrics.fid_inception import FIDInceptionV3, fid_preprocess

HOW = "convert the published weights once with the line in docs/evaluators.md, 'Feature networks'"


@dataclass(frozen=True)
class Network:
    """A pretrained feature network: its layers, its input, and what a weight file may hold besides."""

    name: str
    build: Callable[[], nn.Module]  # the feature layers (no classifier), with `dim` and `features_of`
    preprocess: Callable[[torch.Tensor], torch.Tensor]  # bench's [0, 1] images -> its input
    unused: tuple[str, ...]  # key prefixes a weight file may hold that the features do not read
    weights: str  # where the published weights come from


NETWORKS = {
    "xrv_densenet121": Network(
        "xrv_densenet121",
        lambda: DenseNet121(in_channels=1),
        xrv_preprocess,
        ("classifier.", "op_threshs", "upsample."),
        "torchxrayvision's DenseNet weights (e.g. densenet121-res224-all)",
    ),
    "inception_v3": Network(
        "inception_v3",
        lambda: FIDInceptionV3(with_fc=False),
        fid_preprocess,
        ("fc.",),
        "pt_inception-2015-12-05-6726825d.pth (pytorch-fid / torch-fidelity)",
    ),
}


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 8 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 23), b""):
            h.update(block)
    return h.hexdigest()


def weights_file(weights: str | Path) -> Path:
    """The local .safetensors file `features.weights` names; missing or not safetensors is one line."""
    path = Path(weights).expanduser()
    if not path.is_file():
        raise BenchError(f"features.weights={str(weights)!r} does not exist; {HOW}")
    if path.suffix != ".safetensors":
        raise BenchError(
            f"features.weights={str(weights)!r} is not a .safetensors file (bench reads no pickle); {HOW}"
        )
    return path


def read_weights(weights: str | Path, shapes_only: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a local .safetensors file (`shapes_only`: read from its header, as empty meta
    tensors); a missing, pickled or unreadable file is one line."""
    path = weights_file(weights)
    try:
        if shapes_only:
            with safe_open(str(path), "pt") as f:
                state = {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
        else:
            state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BenchError(
            f"features.weights={str(weights)!r} is not a readable safetensors file ({type(exc).__name__}); {HOW}"
        ) from None
    return {k.removeprefix("module."): v for k, v in state.items()}


def check_weights(name: str, weights: str | Path) -> None:
    """Refuse a weight file that would not load into the named network, from its header alone
    (bench.pipeline.assemble.validate: before anything of the grid runs)."""
    network = NETWORKS[name]
    with torch.device("meta"):
        model = network.build()
    check_keys(network, model, read_weights(weights, shapes_only=True), str(weights))


def check_keys(network: Network, model: nn.Module, state: dict, path: str) -> dict:
    """The entries of `state` the network reads, checked against its own names and shapes."""
    expected = model.state_dict()
    used = {k: v for k, v in state.items() if not k.startswith(network.unused)}
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(used) - optional)
    extra = sorted(set(used) - set(expected))
    if missing or extra:
        parts = [f"{len(missing)} missing (e.g. {missing[0]!r})"] if missing else []
        parts += [f"{len(extra)} unexpected (e.g. {extra[0]!r})"] if extra else []
        raise BenchError(
            f"features.weights={path!r} does not hold {network.name}'s layers: keys {', '.join(parts)}; "
            f"give {network.weights}, converted with the line in docs/evaluators.md, 'Feature networks'"
        )
    for key, value in used.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise BenchError(
                f"features.weights={path!r}: {key!r} has shape {tuple(value.shape)}, {network.name} "
                f"needs {tuple(expected[key].shape)}; give {network.weights}, converted to safetensors"
            )
    return used


def load_network(name: str, weights: str | Path) -> nn.Module:
    """The named network with the weights of a local safetensors file, in evaluation mode."""
    network, state = NETWORKS[name], read_weights(weights)  # a bad file fails before the build
    model = network.build()
    used = check_keys(network, model, state, str(weights))
    model.load_state_dict({k: v.float() for k, v in used.items()}, strict=False)
    return model.eval()


class PretrainedExtractor(FeatureExtractor):
    """A pretrained network used as an embedding: its preprocessing, then its pooled features."""

    def __init__(self, network: str, model: nn.Module, sha256: str, batch_size: int = 32):
        self.network, self.net, self.sha256 = network, model.eval(), sha256
        self.name, self.batch_size, self.cache_dir = network, batch_size, None

    @property
    def identity(self) -> str:
        """What the features were computed on, as records state it: network and weight file digest."""
        return f"{self.network} sha256:{self.sha256[:16]}"

    @cached_property
    def digest(self) -> str:
        """Network, weight file and device type: the key of its stored real-split features."""
        device = next(self.net.parameters()).device.type
        return hashlib.sha256(f"{self.network}|{self.sha256}|{device}".encode()).hexdigest()[:16]

    @property
    def dim(self) -> int:
        """Feature dimension (1024 for the DenseNet, 2048 for Inception)."""
        return self.net.dim

    @torch.no_grad()
    def embed(self, x) -> np.ndarray:
        """(N, dim) float64 features of a tensor or lazy ImageFiles in [0, 1], in float32 batches."""
        device = next(self.net.parameters()).device
        batches = [slice(i, i + self.batch_size) for i in range(0, len(x), self.batch_size)]
        out = [
            self.net.features_of(NETWORKS[self.network].preprocess(xb)).float().cpu()
            for xb in device_batches(x, batches, device)
        ]
        return torch.cat(out).double().numpy() if out else np.zeros((0, self.dim))


def pretrained_extractor(config: FeatureConfig) -> PretrainedExtractor:
    """The extractor of `config.network` with the weights at `config.weights`."""
    path = Path(config.weights).expanduser()
    model = load_network(config.network, config.weights)
    return PretrainedExtractor(config.network, model.to(default_device()), file_sha256(path))
