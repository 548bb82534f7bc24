"""The pretrained feature networks (bench.metrics.pretrained): architectures against their published
sizes, preprocessing against closed forms, weight files loaded from safetensors or refused in one
line, and FID on their features moving the right way."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from threadpoolctl import threadpool_limits

from bench.errors import BenchError
from bench.evaluators.fid import fid
from bench.metrics.densenet import DenseNet121, xrv_preprocess
from bench.metrics.fid_inception import FIDInceptionV3, fid_preprocess, resize_like_tf1
from bench.metrics.pretrained import NETWORKS, PretrainedExtractor, file_sha256, load_network


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def on_meta(build):
    """A network built on the meta device: shapes and names without memory or initialisation."""
    with torch.device("meta"):
        return build()


# ---- architectures ------------------------------------------------------------------------------


def test_densenet121_has_torchvisions_parameter_count_and_xrvs_variant_follows():
    # torchvision's densenet121 (3 channels, 1000 classes): 7,978,856 parameters (its model card)
    assert n_params(on_meta(lambda: DenseNet121(3, 1000))) == 7_978_856
    # torchxrayvision's: 1 channel (conv0 loses 2 x 64 x 7 x 7) and 18 classes (1024 x 18 + 18)
    xrv = n_params(on_meta(lambda: DenseNet121(1, 18)))
    assert xrv == 7_978_856 - 2 * 64 * 7 * 7 - (1024 * 1000 + 1000) + (1024 * 18 + 18) == 6_966_034
    assert n_params(on_meta(lambda: DenseNet121(1))) == 6_966_034 - (1024 * 18 + 18)


def test_densenet121_state_dict_keys_are_torchvisions():
    keys = on_meta(lambda: DenseNet121(1, 18)).state_dict()
    # 121 batch norms (norm0, 2 per dense layer x 58, 3 transitions, norm5) x 5 entries, 120 convs, classifier
    assert len(keys) == (1 + 2 * sum((6, 12, 24, 16)) + 3 + 1) * 5 + (1 + 58 * 2 + 3) + 2 == 727
    shapes = {k: tuple(v.shape) for k, v in keys.items()}
    assert shapes["features.conv0.weight"] == (64, 1, 7, 7)
    assert shapes["features.denseblock1.denselayer1.conv1.weight"] == (128, 64, 1, 1)
    assert shapes["features.denseblock4.denselayer16.conv2.weight"] == (32, 128, 3, 3)
    assert shapes["features.transition3.conv.weight"] == (512, 1024, 1, 1)
    assert shapes["features.norm5.running_var"] == (1024,)
    assert shapes["classifier.weight"] == (18, 1024)


def test_fid_inception_parameter_count_is_torchvisions_inception_v3_without_aux_and_1008_classes():
    full = n_params(on_meta(FIDInceptionV3))
    # torchvision's inception_v3: 27,161,264 parameters with its auxiliary classifier and 1000 classes
    aux = (768 * 128 + 2 * 128) + (128 * 768 * 5 * 5 + 2 * 768) + (768 * 1000 + 1000)
    assert full - 2048 * 1008 - 1008 + aux + 2048 * 1000 + 1000 == 27_161_264
    assert full == 23_850_960
    assert n_params(on_meta(lambda: FIDInceptionV3(with_fc=False))) == full - 2048 * 1008 - 1008


def test_fid_inception_keys_are_the_weight_files():
    keys = {k: tuple(v.shape) for k, v in on_meta(FIDInceptionV3).state_dict().items()}
    convs = [k for k in keys if k.endswith(".conv.weight")]
    assert len(convs) == 94  # BasicConv2d blocks, each conv + bn (eps 1e-3)
    assert len([k for k in keys if not k.endswith("num_batches_tracked")]) == 94 * 5 + 2 == 472
    assert keys["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
    assert keys["Mixed_5b.branch_pool.conv.weight"] == (32, 192, 1, 1)
    assert keys["Mixed_6e.branch7x7dbl_5.conv.weight"] == (192, 192, 1, 7)
    assert keys["Mixed_7c.branch3x3dbl_3b.bn.running_var"] == (384,)
    assert keys["fc.weight"] == (1008, 2048)
    model = on_meta(FIDInceptionV3)
    assert model.Mixed_7b.branch_pool.bn.eps == 1e-3
    assert not model.Mixed_7b.max_pool and model.Mixed_7c.max_pool  # TensorFlow's graph


@pytest.mark.parametrize(
    ("name", "shape", "smallest", "dim"),
    [("xrv_densenet121", (1, 224, 224), 32, 1024), ("inception_v3", (3, 299, 299), 75, 2048)],
)
def test_feature_dimensions(name, shape, smallest, dim):
    network = NETWORKS[name]
    assert network.preprocess(torch.rand(3, 1, 20, 28)).shape == (3, *shape)  # any size, 1 channel
    model = network.build().eval()
    with torch.no_grad():  # the smallest input the network takes: its pooled features are the same size
        features = model.features_of(torch.rand(2, shape[0], smallest, smallest))
    assert features.shape == (2, dim) and model.dim == dim


# ---- preprocessing ------------------------------------------------------------------------------


def bilinear_half_pixel(image: np.ndarray, size: int) -> np.ndarray:
    """torch's bilinear (align_corners=False) written out: output i samples (i + 0.5) n / size - 0.5."""

    def axis(n):
        s = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, None)
        lo = np.minimum(np.floor(s).astype(int), n - 1)
        return lo, np.minimum(lo + 1, n - 1), s - lo

    (r0, r1, wr), (c0, c1, wc) = axis(image.shape[0]), axis(image.shape[1])
    rows = image[r0] * (1 - wr)[:, None] + image[r1] * wr[:, None]
    return rows[:, c0] * (1 - wc) + rows[:, c1] * wc


def test_xrv_preprocess_is_one_channel_224_in_minus_1024_to_1024():
    rgb = torch.rand(2, 3, 6, 9, generator=torch.Generator().manual_seed(0))
    out = xrv_preprocess(rgb)
    assert out.shape == (2, 1, 224, 224)
    gray = rgb.mean(1).numpy()[:, :, 1:7]  # the mean of RGB, the central 6 x 6 square
    for i in range(2):
        expected = (2 * bilinear_half_pixel(gray[i].astype(np.float64), 224) - 1) * 1024
        np.testing.assert_allclose(out[i, 0].numpy(), expected, atol=2e-3)
    exact = torch.rand(1, 1, 224, 224)  # already 224: no resampling
    np.testing.assert_allclose(xrv_preprocess(exact).numpy(), ((2 * exact - 1) * 1024).numpy(), rtol=1e-6)
    assert xrv_preprocess(torch.zeros(1, 1, 8, 8)).min() == -1024
    assert xrv_preprocess(torch.ones(1, 1, 8, 8)).max() == 1024


def tf1_resize(image: np.ndarray, size: int) -> np.ndarray:
    """TensorFlow 1.x resize_bilinear (align_corners=False) written out: output i samples i n / size."""

    def axis(n):
        s = np.arange(size) * n / size
        lo = np.floor(s).astype(int)
        return lo, np.minimum(lo + 1, n - 1), s - lo

    (r0, r1, wr), (c0, c1, wc) = axis(image.shape[0]), axis(image.shape[1])
    rows = image[r0] * (1 - wr)[:, None] + image[r1] * wr[:, None]
    return rows[:, c0] * (1 - wc) + rows[:, c1] * wc


def test_tf1_resize_samples_the_top_left_corner_not_the_pixel_centre():
    image = np.arange(15, dtype=np.float64).reshape(3, 5)
    out = resize_like_tf1(torch.tensor(image, dtype=torch.float32)[None, None], 299)[0, 0].numpy()
    np.testing.assert_allclose(out, tf1_resize(image, 299), atol=1e-4)
    assert out[0, 0] == image[0, 0]  # torch's half-pixel bilinear would blend here
    assert out[-1, -1] == image[-1, -1]  # the last samples read the edge (clamped)


def test_fid_preprocess_quantises_like_torchmetrics_and_scales_to_minus_1_to_1():
    gray = torch.rand(2, 1, 4, 6, generator=torch.Generator().manual_seed(1))
    out = fid_preprocess(gray)
    assert out.shape == (2, 3, 299, 299)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])  # gray replicated
    q = np.trunc(gray.numpy().astype(np.float32) * np.float32(255))  # torchmetrics: (x * 255).byte()
    for i in range(2):
        expected = (tf1_resize(q[i, 0].astype(np.float64), 299) - 128) / 128
        np.testing.assert_allclose(out[i, 0].numpy(), expected, atol=1e-5)
    assert fid_preprocess(torch.ones(1, 3, 4, 4)).max() == (255 - 128) / 128
    assert fid_preprocess(torch.zeros(1, 3, 4, 4)).min() == -1


# ---- weight files -------------------------------------------------------------------------------


def saved_network(tmp_path, name: str, seed: int = 0):
    """A randomly initialised network of `name` with its classifier, saved as safetensors."""
    torch.manual_seed(seed)
    model = DenseNet121(1, 18) if name == "xrv_densenet121" else FIDInceptionV3()
    for m in model.modules():  # non-trivial batch-norm statistics, so loading them matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model.eval(), path


@pytest.mark.slow
@pytest.mark.parametrize("name", ["xrv_densenet121", "inception_v3"])
def test_saved_weights_load_and_give_the_saved_networks_features_deterministically(tmp_path, name):
    model, path = saved_network(tmp_path, name)
    images = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    extractor = PretrainedExtractor(name, load_network(name, path), file_sha256(path))
    first = extractor.embed(images)
    with torch.no_grad():
        expected = model.features_of(NETWORKS[name].preprocess(images)).double().numpy()
    np.testing.assert_array_equal(first, expected)
    again = PretrainedExtractor(name, load_network(name, path), file_sha256(path)).embed(images)
    np.testing.assert_array_equal(first, again)
    assert first.shape == (2, model.dim) and np.isfinite(first).all()
    assert extractor.identity == f"{name} sha256:{file_sha256(path)[:16]}"


@pytest.mark.slow
def test_fid_on_densenet_features_is_zero_for_one_set_and_grows_with_a_shift():
    torch.manual_seed(0)
    model = DenseNet121(1).eval()  # the network's body on 32 x 32 inputs: fast, the same layers
    g = torch.Generator().manual_seed(3)
    real = 0.3 + 0.4 * torch.rand(8, 1, 32, 32, generator=g)
    with torch.no_grad():
        base, near, far = (
            model.features_of((2 * x - 1) * 1024).double().numpy() for x in (real, real + 0.05, real + 0.25)
        )
    with threadpool_limits(1):  # 1024-d eigendecompositions: BLAS threads only contend on a busy machine
        assert fid(base, base.copy()) < 1e-9 * fid(base, far)  # one set: 0 up to round-off
        assert 0 < fid(base, near) < fid(base, far)


@pytest.mark.slow
def test_fid_on_xrv_extractor_features_is_zero_for_one_set_and_grows_with_a_shift(tmp_path):
    _, path = saved_network(tmp_path, "xrv_densenet121")
    extractor = PretrainedExtractor("xrv_densenet121", load_network("xrv_densenet121", path), "x")
    g = torch.Generator().manual_seed(3)
    real = 0.3 + 0.4 * torch.rand(4, 1, 12, 12, generator=g)
    base, near, far = (extractor.embed(x) for x in (real, real + 0.05, real + 0.25))
    with threadpool_limits(1):
        assert fid(base, base.copy()) < 1e-9 * fid(base, far)  # one set: 0 up to round-off
        assert 0 < fid(base, near) < fid(base, far)


def test_a_missing_weight_file_is_one_line_saying_how_to_make_one(tmp_path):
    with pytest.raises(BenchError, match=r"does not exist; convert the published weights") as err:
        load_network("xrv_densenet121", tmp_path / "nope.safetensors")
    assert "\n" not in str(err.value)


def test_a_pickled_weight_file_is_refused_unread(tmp_path):
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    path.write_bytes(b"not read")  # bench never unpickles it
    with pytest.raises(BenchError, match=r"not a \.safetensors file \(bench reads no pickle\)"):
        load_network("inception_v3", path)


def test_a_damaged_safetensors_file_is_one_line(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(BenchError, match=r"not a readable safetensors file") as err:
        load_network("xrv_densenet121", path)
    assert "\n" not in str(err.value)


def test_weights_of_another_network_are_refused_naming_a_key(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}, str(path))
    with pytest.raises(
        BenchError,
        match=r"does not hold xrv_densenet121's layers: keys 727 missing|"
        r"does not hold xrv_densenet121's layers: keys \d+ missing \(e\.g\. 'features\..*"
        r"1 unexpected \(e\.g\. 'Conv2d_1a_3x3\.conv\.weight'\)",
    ) as err:
        load_network("xrv_densenet121", path)
    assert "\n" not in str(err.value) and "torchxrayvision" in str(err.value)


def test_a_three_channel_densenet_is_refused_by_shape(tmp_path):
    state = {k: v for k, v in DenseNet121(3).state_dict().items()}
    path = tmp_path / "rgb.safetensors"
    save_file({f"module.{k}": v.contiguous() for k, v in state.items()}, str(path))  # DataParallel names
    with pytest.raises(
        BenchError,
        match=r"'features\.conv0\.weight' has shape \(64, 3, 7, 7\), xrv_densenet121 needs \(64, 1, 7, 7\)",
    ):
        load_network("xrv_densenet121", path)


def test_classifier_op_threshs_and_missing_batch_counters_are_accepted(tmp_path):
    model = DenseNet121(1, 18)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    state["op_threshs"] = torch.rand(18)  # newer torchxrayvision keeps it with the weights
    path = tmp_path / "xrv.safetensors"
    save_file(state, str(path))
    loaded = load_network("xrv_densenet121", path)
    assert torch.equal(loaded.features.conv0.weight, model.features.conv0.weight)
    assert not hasattr(loaded, "classifier") and not loaded.training


# ---- the command line ---------------------------------------------------------------------------


def validate(tmp_path, monkeypatch, capsys, *bindings) -> tuple[int, str]:
    """`bench validate` of a digits_lt cell with the bindings, run in `tmp_path`: (exit code, stderr)."""
    from bench.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(
        ["validate", "datasets=[digits_lt]", "methods=[fm]", f"results_dir={tmp_path / 'r'}", *bindings]
    )
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize(
    ("bindings", "message"),
    [
        (
            ("features.network=inception_v3",),
            r"needs its weights: set features\.weights to a local \.safetensors",
        ),
        (
            ("features.network=inceptionv3",),
            r"features\.network must be one of domain, xrv_densenet121, inception",
        ),
        (("features.weights=w.safetensors",), r"features\.weights is read only by a pretrained network"),
        (
            ("features.network=xrv_densenet121", "features.weights=missing.safetensors"),
            r"features\.weights='missing\.safetensors' does not exist; convert the published weights",
        ),
        (
            ("features.network=inception_v3", "features.weights=xrv.safetensors"),
            r"does not hold inception_v3's layers: keys 470 missing \(e\.g\. 'Conv2d_1a_3x3\.bn\.bias'\)",
        ),
    ],
)
def test_bad_feature_settings_are_refused_before_anything_runs(
    tmp_path, monkeypatch, capsys, bindings, message
):
    save_file(
        {k: v.contiguous() for k, v in DenseNet121(1).state_dict().items()}, str(tmp_path / "xrv.safetensors")
    )
    before = sorted(p.name for p in tmp_path.iterdir())
    code, err = validate(tmp_path, monkeypatch, capsys, *bindings)
    assert code == 2 and re.search(message, err) and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


@pytest.mark.slow
def test_a_good_weight_file_validates_from_its_header_and_the_protocol_names_the_network(
    tmp_path, monkeypatch, capsys
):
    path = tmp_path / "xrv.safetensors"
    save_file({k: v.contiguous() for k, v in DenseNet121(1, 18).state_dict().items()}, str(path))
    from bench.cli import main

    monkeypatch.chdir(tmp_path)
    args = ["validate", "datasets=[digits_lt]", "methods=[fm]", "features.network=xrv_densenet121"]
    assert main([*args, f"features.weights={path}"]) == 0
    assert f"feature network xrv_densenet121 (weights {path})" in capsys.readouterr().out


def test_the_domain_networks_identity_is_its_weights_whoever_built_it():
    from bench.classify.fit import build_classifier
    from bench.metrics.features import FeatureExtractor

    trained = build_classifier("small_cnn", 1, 3, seed=0)
    loaded = build_classifier("small_cnn", 1, 3, seed=1)
    loaded.net.load_state_dict(trained.net.state_dict())
    a, b = (
        FeatureExtractor(trained, "small_cnn@digits_lt"),
        FeatureExtractor(loaded, "small_cnn:cache-folder"),
    )
    assert a.identity == b.identity and a.identity.startswith("domain small_cnn weights:")
    other = FeatureExtractor(build_classifier("small_cnn", 1, 3, seed=1), "small_cnn@digits_lt")
    assert other.identity != a.identity
