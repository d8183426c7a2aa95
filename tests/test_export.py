"""Self-contained export: NNP and ONNX take raw images and match the live network on normalised ones."""

import os
import sys
import zipfile

import h5py
import nnabla as nn
import numpy as np
import onnxruntime
import pytest

from core.errors import ExportError, NASError
from core.export import export_model, run_nnp, run_onnx, verify_export
from dataset.base import normalize
from search_space.spec import DataInfo

TOL = 1e-4


def _trained_model(proxyless, params, info, seed=0):
    """A tiny Model with non-trivial weights and BatchNorm running statistics (as after some training)."""
    rng = np.random.default_rng(seed)
    arch = proxyless.choices(params, info).sample(rng)
    model = proxyless.build_model(params, info, arch)
    for name, p in model.get_parameters(grad_only=False).items():
        if name.endswith("gamma"):  # residual blocks start with zero gamma: make every block matter
            p.d = rng.uniform(0.5, 1.5, p.shape)
        elif not name.endswith(("mean", "var")):
            p.d = p.d + rng.normal(0.0, 0.1, p.shape)
    model.training = True
    x = nn.Variable.from_numpy_array(rng.normal(0.5, 2.0, (8, info.in_channels, info.input_size, info.input_size)))
    y = model(x)
    for _ in range(3):  # training-mode forwards move the running mean/var away from 0/1
        y.forward(clear_buffer=True)
    return model


def _live(model, images):
    """Logits of ``model`` in inference mode on (already normalised) images."""
    model.training = False
    y = model(nn.Variable.from_numpy_array(images))
    y.forward(clear_buffer=True)
    return np.array(y.d)


@pytest.fixture(scope="module")
def digits_case(proxyless, tiny_params, digits_info, tmp_path_factory):
    """A 1-channel 8x8 model exported with a non-trivial mean/std, raw 0..16 images and the expected logits."""
    model = _trained_model(proxyless, tiny_params, digits_info)
    mean, std = (4.7,), (6.1,)
    raw = np.random.default_rng(1).integers(0, 17, (5, 1, 8, 8)).astype(np.float32)
    expected = _live(model, normalize(raw, mean, std))
    out = tmp_path_factory.mktemp("digits")
    model.training = True
    export_model(model, (1, 8, 8), mean, std, str(out / "model.nnp"), str(out / "model.onnx"))
    assert model.training, "export must restore the training flag"
    return model, mean, std, raw, expected, out


def test_exported_files_take_raw_images(digits_case):
    _, _, _, raw, expected, out = digits_case
    assert sorted(os.listdir(out)) == ["model.nnp", "model.onnx"]  # no temp files left
    assert np.abs(run_nnp(str(out / "model.nnp"), raw) - expected).max() <= TOL
    assert np.abs(run_onnx(str(out / "model.onnx"), raw) - expected).max() <= TOL


def test_verify_export_reports_both_diffs_and_leaves_no_global_parameters(digits_case):
    model, mean, std, raw, _, out = digits_case
    before = list(nn.get_parameters(grad_only=False))
    model.training = True
    diffs = verify_export(model, raw, mean, std, str(out / "model.nnp"), str(out / "model.onnx"))
    assert set(diffs) == {"nnp_max_abs_diff", "onnx_max_abs_diff"}
    assert 0.0 <= diffs["nnp_max_abs_diff"] <= TOL and 0.0 <= diffs["onnx_max_abs_diff"] <= TOL
    assert verify_export(model, raw, mean, std, str(out / "model.nnp"))["onnx_max_abs_diff"] is None
    assert model.training
    assert list(nn.get_parameters(grad_only=False)) == before


def test_normalisation_is_inside_the_nnp(digits_case):
    _, mean, std, raw, expected, out = digits_case
    # fed already-normalised images, the file normalises a second time and gives clearly different logits
    twice = run_nnp(str(out / "model.nnp"), normalize(raw, mean, std))
    assert np.abs(twice - expected).max() > 0.1
    with zipfile.ZipFile(out / "model.nnp") as z:
        z.extract("parameter.h5", out / "unzipped")
    with h5py.File(out / "unzipped" / "parameter.h5", "r") as h5:
        np.testing.assert_allclose(h5["preprocess/mean"][...].reshape(-1), mean, rtol=1e-6)
        np.testing.assert_allclose(h5["preprocess/std"][...].reshape(-1), std, rtol=1e-6)


def test_onnx_batch_dimension_is_fixed_and_handled(digits_case, tmp_path):
    model, mean, std, raw, expected, out = digits_case
    assert onnxruntime.InferenceSession(str(out / "model.onnx")).get_inputs()[0].shape == [1, 1, 8, 8]
    export_model(model, (1, 8, 8), mean, std, str(tmp_path / "m.nnp"), str(tmp_path / "m.onnx"), batch_size=4)
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"))
    assert session.get_inputs()[0].shape == [4, 1, 8, 8]
    # 5 images = one full chunk of 4 + one zero-padded chunk
    assert np.abs(run_onnx(str(tmp_path / "m.onnx"), raw) - expected).max() <= TOL


def test_three_channels_0_to_255(proxyless, tiny_params, tmp_path):
    info = DataInfo(num_classes=10, in_channels=3, input_size=16)
    model = _trained_model(proxyless, tiny_params, info, seed=3)
    mean, std = (125.3, 122.9, 113.8), (63.0, 62.1, 66.7)
    raw = np.random.default_rng(2).integers(0, 256, (4, 3, 16, 16)).astype(np.float32)
    nnp, onnx = str(tmp_path / "model.nnp"), str(tmp_path / "model.onnx")
    export_model(model, (3, 16, 16), mean, std, nnp, onnx)
    diffs = verify_export(model, raw, mean, std, nnp, onnx)
    assert diffs["nnp_max_abs_diff"] <= TOL and diffs["onnx_max_abs_diff"] <= TOL
    expected = _live(model, normalize(raw, mean, std))
    assert np.abs(run_onnx(onnx, raw) - expected).max() <= TOL
    assert np.abs(run_onnx(onnx, normalize(raw, mean, std)) - expected).max() > 0.1


def test_failed_conversion_writes_nothing(digits_case, tmp_path, monkeypatch):
    from nnabla.utils.converter.onnx import OnnxExporter

    def broken(self, path):
        raise RuntimeError("unsupported function Foo\nsecond line")

    monkeypatch.setattr(OnnxExporter, "execute", broken)
    model, mean, std, *_ = digits_case
    with pytest.raises(ExportError, match=r"^ONNX conversion failed: RuntimeError: unsupported function Foo$"):
        export_model(model, (1, 8, 8), mean, std, str(tmp_path / "model.nnp"), str(tmp_path / "model.onnx"))
    assert os.listdir(tmp_path) == []


def test_missing_converter_names_what_to_install(digits_case, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nnabla.utils.converter.onnx", None)
    model, mean, std, *_ = digits_case
    with pytest.raises(ExportError, match="nnabla_converter==1.39.0") as err:
        export_model(model, (1, 8, 8), mean, std, str(tmp_path / "model.nnp"), str(tmp_path / "model.onnx"))
    assert isinstance(err.value, NASError) and "\n" not in str(err.value)
    assert os.listdir(tmp_path) == []
    export_model(model, (1, 8, 8), mean, std, str(tmp_path / "model.nnp"))  # NNP alone needs no converter
    assert os.listdir(tmp_path) == ["model.nnp"]


@pytest.mark.parametrize(
    "mean, std, match",
    [((0.0, 0.0), (1.0, 1.0), "need 1 values each"), ((0.0,), (0.0,), "std > 0"), ((np.nan,), (1.0,), "finite")],
)
def test_bad_mean_std(digits_case, tmp_path, mean, std, match):
    model = digits_case[0]
    with pytest.raises(ExportError, match=match):
        export_model(model, (1, 8, 8), mean, std, str(tmp_path / "model.nnp"))
    assert os.listdir(tmp_path) == []
