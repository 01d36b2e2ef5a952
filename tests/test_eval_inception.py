"""The FID InceptionV3 against pytorch-fid's published network, on random weights.

pytorch-fid (and torch-fidelity, torchmetrics) cannot be installed here without torchvision, so the
reference is pytorch-fid 0.3.0's ``fid_inception_v3()`` transcribed as data: torchvision's
``Inception3(num_classes=1008, aux_logits=False)`` layer table (name -> in, out, kernel, stride,
padding) with pytorch-fid's FIDInceptionA/C/E_1/E_2 patches (average pools without the padded zeros,
a max pool in Mixed_7c), run by a functional forward written here from that source. A state dict made
from the table is what ``pt_inception-2015-12-05-6726825d.pth`` holds (keys and shapes), and our
network given it must produce the reference's pool3 features.
"""

import hashlib

import pytest
import torch
import torch.nn.functional as F

from genpix.data import DataError
from genpix.errors import GenpixError
from genpix.eval.features import extract, inception_extractor, load_extractor, resolve_inception_weights
from genpix.eval.features.inception import (WEIGHTS_NAME, WEIGHTS_SHA256_PREFIX, FIDInceptionV3, build_inception,
                                            load_inception_state)
from genpix.eval.inputs import ImageSet
from genpix.eval.report import EvalOptions, evaluate


def _spec(cin, cout, kernel, stride=1, padding=0):
    pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
    return cin, cout, pair(kernel), stride, pair(padding)


def _a(cin, pool):  # torchvision InceptionA
    return {"branch1x1": _spec(cin, 64, 1), "branch5x5_1": _spec(cin, 48, 1), "branch5x5_2": _spec(48, 64, 5, 1, 2),
            "branch3x3dbl_1": _spec(cin, 64, 1), "branch3x3dbl_2": _spec(64, 96, 3, 1, 1),
            "branch3x3dbl_3": _spec(96, 96, 3, 1, 1), "branch_pool": _spec(cin, pool, 1)}


def _b(cin):  # InceptionB
    return {"branch3x3": _spec(cin, 384, 3, 2), "branch3x3dbl_1": _spec(cin, 64, 1),
            "branch3x3dbl_2": _spec(64, 96, 3, 1, 1), "branch3x3dbl_3": _spec(96, 96, 3, 2)}


def _c(cin, c7):  # InceptionC
    return {"branch1x1": _spec(cin, 192, 1), "branch7x7_1": _spec(cin, c7, 1),
            "branch7x7_2": _spec(c7, c7, (1, 7), 1, (0, 3)), "branch7x7_3": _spec(c7, 192, (7, 1), 1, (3, 0)),
            "branch7x7dbl_1": _spec(cin, c7, 1), "branch7x7dbl_2": _spec(c7, c7, (7, 1), 1, (3, 0)),
            "branch7x7dbl_3": _spec(c7, c7, (1, 7), 1, (0, 3)), "branch7x7dbl_4": _spec(c7, c7, (7, 1), 1, (3, 0)),
            "branch7x7dbl_5": _spec(c7, 192, (1, 7), 1, (0, 3)), "branch_pool": _spec(cin, 192, 1)}


def _d(cin):  # InceptionD
    return {"branch3x3_1": _spec(cin, 192, 1), "branch3x3_2": _spec(192, 320, 3, 2),
            "branch7x7x3_1": _spec(cin, 192, 1), "branch7x7x3_2": _spec(192, 192, (1, 7), 1, (0, 3)),
            "branch7x7x3_3": _spec(192, 192, (7, 1), 1, (3, 0)), "branch7x7x3_4": _spec(192, 192, 3, 2)}


def _e(cin):  # InceptionE
    return {"branch1x1": _spec(cin, 320, 1), "branch3x3_1": _spec(cin, 384, 1),
            "branch3x3_2a": _spec(384, 384, (1, 3), 1, (0, 1)), "branch3x3_2b": _spec(384, 384, (3, 1), 1, (1, 0)),
            "branch3x3dbl_1": _spec(cin, 448, 1), "branch3x3dbl_2": _spec(448, 384, 3, 1, 1),
            "branch3x3dbl_3a": _spec(384, 384, (1, 3), 1, (0, 1)),
            "branch3x3dbl_3b": _spec(384, 384, (3, 1), 1, (1, 0)), "branch_pool": _spec(cin, 192, 1)}


STEM = {"Conv2d_1a_3x3": _spec(3, 32, 3, 2), "Conv2d_2a_3x3": _spec(32, 32, 3),
        "Conv2d_2b_3x3": _spec(32, 64, 3, 1, 1), "Conv2d_3b_1x1": _spec(64, 80, 1), "Conv2d_4a_3x3": _spec(80, 192, 3)}
# (name, branch layout, convolutions) in forward order, as pytorch-fid's fid_inception_v3()
MIXED = [("Mixed_5b", "A", _a(192, 32)), ("Mixed_5c", "A", _a(256, 64)), ("Mixed_5d", "A", _a(288, 64)),
         ("Mixed_6a", "B", _b(288)), ("Mixed_6b", "C", _c(768, 128)), ("Mixed_6c", "C", _c(768, 160)),
         ("Mixed_6d", "C", _c(768, 160)), ("Mixed_6e", "C", _c(768, 192)), ("Mixed_7a", "D", _d(768)),
         ("Mixed_7b", "E_1", _e(1280)), ("Mixed_7c", "E_2", _e(2048))]
# branches in concatenation order: (pool applied to the block input, conv chain, final fork)
BRANCHES = {
    "A": [(None, ["branch1x1"], ()), (None, ["branch5x5_1", "branch5x5_2"], ()),
          (None, ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"], ()), ("avg", ["branch_pool"], ())],
    "B": [(None, ["branch3x3"], ()), (None, ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"], ()),
          ("max/2", [], ())],
    "C": [(None, ["branch1x1"], ()), (None, ["branch7x7_1", "branch7x7_2", "branch7x7_3"], ()),
          (None, [f"branch7x7dbl_{i}" for i in range(1, 6)], ()), ("avg", ["branch_pool"], ())],
    "D": [(None, ["branch3x3_1", "branch3x3_2"], ()), (None, [f"branch7x7x3_{i}" for i in range(1, 5)], ()),
          ("max/2", [], ())],
    "E_1": [(None, ["branch1x1"], ()), (None, ["branch3x3_1"], ("branch3x3_2a", "branch3x3_2b")),
            (None, ["branch3x3dbl_1", "branch3x3dbl_2"], ("branch3x3dbl_3a", "branch3x3dbl_3b")),
            ("avg", ["branch_pool"], ())],
}
BRANCHES["E_2"] = [("max", chain, fork) if pool == "avg" else (pool, chain, fork)
                   for pool, chain, fork in BRANCHES["E_1"]]
POOLS = {None: lambda x: x,
         "avg": lambda x: F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False),  # TF's
         "max": lambda x: F.max_pool2d(x, 3, stride=1, padding=1),
         "max/2": lambda x: F.max_pool2d(x, 3, stride=2)}


def conv_specs() -> dict[str, tuple]:
    specs = dict(STEM)
    for block, _, convs in MIXED:
        specs.update({f"{block}.{name}": spec for name, spec in convs.items()})
    return specs


def reference_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape of the published state dict (BatchNorm counters included)."""
    shapes = {}
    for name, (cin, cout, kernel, _, _) in conv_specs().items():
        shapes[f"{name}.conv.weight"] = (cout, cin, *kernel)
        for part in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.bn.{part}"] = (cout,)
        shapes[f"{name}.bn.num_batches_tracked"] = ()
    return {**shapes, "fc.weight": (1008, 2048), "fc.bias": (1008,)}


def random_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights shaped as the published file (without BatchNorm counters, like old files):
    He-scaled convolutions and varied BatchNorm statistics, so every layer matters."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in reference_shapes().items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.endswith("conv.weight"):
            fan_in = shape[1] * shape[2] * shape[3]
            state[key] = torch.randn(shape, generator=g) * (2 / fan_in) ** 0.5
        elif key.endswith(("running_var", "bn.weight")):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g) * 0.1
    return state


def reference_pool3(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """pytorch-fid's InceptionV3(resize_input=True, normalize_input=True) forward to pool3 (B, 2048)."""
    specs = conv_specs()

    def conv(name, h):
        _, _, _, stride, padding = specs[name]
        h = F.conv2d(h, state[f"{name}.conv.weight"], stride=stride, padding=padding)
        h = F.batch_norm(h, state[f"{name}.bn.running_mean"], state[f"{name}.bn.running_var"],
                         state[f"{name}.bn.weight"], state[f"{name}.bn.bias"], training=False, eps=0.001)
        return F.relu(h)

    x = 2 * F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) - 1
    for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"):
        x = conv(name, x)
    x = F.max_pool2d(x, 3, stride=2)
    x = F.max_pool2d(conv("Conv2d_4a_3x3", conv("Conv2d_3b_1x1", x)), 3, stride=2)
    for block, layout, _ in MIXED:
        outputs = []
        for pool, chain, fork in BRANCHES[layout]:
            h = POOLS[pool](x)
            for name in chain:
                h = conv(f"{block}.{name}", h)
            outputs += [conv(f"{block}.{name}", h) for name in fork] if fork else [h]
        x = torch.cat(outputs, 1)
    return F.adaptive_avg_pool2d(x, 1).flatten(1)


@pytest.fixture(scope="module")
def state():
    return random_state()


def test_state_dict_keys_and_shapes_are_pytorch_fids():
    ours = {k: tuple(v.shape) for k, v in FIDInceptionV3().state_dict().items()}
    assert ours == reference_shapes()
    # torchvision's inception_v3 has 27,161,264 parameters; less AuxLogits (3,326,696), plus the
    # 8 extra classes of the TF graph's 1008-way classifier (16,392)
    assert sum(p.numel() for p in FIDInceptionV3().parameters()) == 27_161_264 - 3_326_696 + 16_392


def test_pool3_features_match_the_reference_forward_on_random_weights(state):
    network = build_inception(state)  # no num_batches_tracked in the file: accepted
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))  # grayscale, repeated to RGB
    ours = extract(inception_extractor(network), x, 3, 28, batch_size=2)
    with torch.no_grad():
        rgb = x.repeat(1, 3, 1, 1)
        expected = reference_pool3(state, rgb).double()
        logits = expected @ state["fc.weight"].double().T  # the IS logits: pool3 times the weights, no bias
    assert ours.features.shape == (2, 2048) and expected.abs().max() > 1e-3
    torch.testing.assert_close(ours.features, expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())
    torch.testing.assert_close(ours.probs, logits.softmax(1), rtol=1e-3, atol=1e-6)


def test_weights_file_found_in_the_torch_hub_cache_and_checked(state, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(GenpixError) as missing:
        resolve_inception_weights(None)
    message = str(missing.value)
    assert "torch hub cache" in message and f"--inception-weights PATH to pytorch-fid's {WEIGHTS_NAME}" in message
    assert "--download-inception" in message and "--features domain" in message and "\n" not in message

    path = tmp_path / "torch" / "hub" / "checkpoints" / WEIGHTS_NAME
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    assert resolve_inception_weights(None) == path
    loaded = load_inception_state(path, check_hash=False)
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    # our random file is not the published one: its SHA-256 does not start 6726825d
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(GenpixError, match=f"SHA-256 starts {digest[:8]}, expected {WEIGHTS_SHA256_PREFIX}"):
        load_extractor("inception")


def test_missing_or_unfitting_weights_files(state, tmp_path):
    with pytest.raises(GenpixError, match=f"no Inception weights at {tmp_path}/none.pth: pass --inception-weights"):
        load_extractor("inception", inception_weights=tmp_path / "none.pth")
    partial = {k: v for k, v in state.items() if not k.startswith("Mixed_7c")}
    with pytest.raises(GenpixError, match="missing keys"):
        build_inception(partial)
    wrong = {**state, "fc.weight": torch.zeros(1000, 2048)}
    with pytest.raises(GenpixError, match=r"fc.weight has shape \(1000, 2048\), expected \(1008, 2048\)"):
        build_inception(wrong)
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(GenpixError, match="not a readable PyTorch weights file"):
        load_inception_state(tmp_path / "junk.pth", check_hash=False)


def test_download_keeps_only_a_file_with_the_expected_sha256_prefix(tmp_path, monkeypatch):
    from genpix.data.download import download

    source = tmp_path / "served.pth"
    source.write_bytes(bytes(range(256)) * 40)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    dest = tmp_path / "cache" / "weights.pth"
    assert download(source.as_uri(), dest, digest[:8], algorithm="sha256") == dest
    assert dest.read_bytes() == source.read_bytes()
    with pytest.raises(DataError, match="checksum mismatch"):  # a prefix under 8 digits must match whole
        download(source.as_uri(), tmp_path / "short.pth", digest[:6], algorithm="sha256")
    # the Inception download checks the published prefix: a different file is discarded
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(DataError, match=f"expected {WEIGHTS_SHA256_PREFIX}; the download was discarded"):
        resolve_inception_weights(None, download=True, url=source.as_uri())
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    assert list(checkpoints.iterdir()) == []  # neither the file nor a partial one is left


@pytest.mark.slow  # Inception-v3 features of every image set
def test_inception_report_notes_grayscale_rgb_and_sizes(state):
    g = torch.Generator().manual_seed(2)
    real = ImageSet((torch.rand(2, 1, 28, 28, generator=g) * 255).to(torch.uint8), "gray28")
    fake = ImageSet(torch.rand(2, 3, 32, 32, generator=g), "rgb32")
    report = evaluate(real, fake, inception_extractor(build_inception(state)), EvalOptions(k=1, is_splits=1))
    assert "real images converted from grayscale to RGB (the feature network's input)" in report.notes
    assert "real images resized from 28x28 to 299x299 inside the feature network" in report.notes
    assert "generated images resized from 32x32 to 299x299 inside the feature network" in report.notes
    assert report.info["input_size"] == 299 and report.info["feature_dim"] == 2048
    assert report.metrics["fid"] > 0 and report.metrics["inception_score"] >= 1.0
    assert "FID" in report.table() and any("singular" in note for note in report.notes)
