"""Self-contained export of a trained network: NNP (and optionally ONNX) that take raw images.

The exported graph is ``y = network((x - mean) / std)`` with ``mean``/``std`` stored as constant parameters
``preprocess/mean`` and ``preprocess/std`` of shape (1, C, 1, 1): ``x`` is a float32 batch of images as the
dataset delivers them before normalisation (e.g. 0..16 for digits, 0..255 for CIFAR/ImageFolder), ``y`` the logits.

The NNP keeps a dynamic batch dimension. The ONNX file (NNabla's converter) has a fixed batch size, the
``batch_size`` given to ``export_model`` (1 by default): the converter writes every shape, including the ones of
the Reshape nodes it inserts, with that batch size.
"""

import contextlib
import io
import warnings
from collections import OrderedDict
from typing import Dict, Iterator, Sequence, Tuple

import nnabla as nn
import nnabla.functions as F
import numpy as np
from nnabla.core.graph_def import create_graph_from_variable
from nnabla.core.module import Module

from core.checkpoint import atomic_path
from core.errors import ExportError

NETWORK, INPUT, OUTPUT = "model", "x", "y"
MEAN_PARAM, STD_PARAM = "preprocess/mean", "preprocess/std"

INSTALL_HINT = (
    "pip install onnx==1.13.1 && pip install --no-deps nnabla_converter==1.39.0 "
    "(requirements.txt, requirements-nodeps.txt; `make venv` does both)"
)


def export_model(
    network: Module,
    input_shape: Tuple[int, ...],
    mean: Sequence[float],
    std: Sequence[float],
    nnp_path: str,
    onnx_path: str | None = None,
    *,
    batch_size: int = 1,
) -> None:
    """Write ``network`` (inference mode) with the ``(x - mean) / std`` preprocessing inside to NNP (and ONNX)."""
    input_shape = tuple(int(d) for d in input_shape)
    mean_arr, std_arr = _stats(mean, std, input_shape)
    if batch_size < 1:
        raise ExportError(f"export batch_size: must be >= 1, got {batch_size}")
    exporter = _onnx_converter() if onnx_path is not None else None
    params = OrderedDict(network.get_parameters(grad_only=False))
    for name in (MEAN_PARAM, STD_PARAM):
        if name in params:
            raise ExportError(f"cannot export: the network already has a parameter named {name!r}")
    params[MEAN_PARAM] = nn.Variable.from_numpy_array(mean_arr, need_grad=False)
    params[STD_PARAM] = nn.Variable.from_numpy_array(std_arr, need_grad=False)

    with _inference(network):
        x = nn.Variable((batch_size,) + input_shape)
        y = network(F.div2(F.sub2(x, params[MEAN_PARAM]), params[STD_PARAM]))
        graph = create_graph_from_variable(NETWORK, y, names={INPUT: x, OUTPUT: y}, parameter_scope=params)
    executors = [{"name": "runtime", "network": NETWORK, "data": [INPUT], "output": [OUTPUT]}]
    # nested so that a failed ONNX conversion leaves neither file behind
    with atomic_path(nnp_path) as tmp_nnp:
        graph.save(tmp_nnp, executors=executors)
        if exporter is not None:
            with atomic_path(onnx_path) as tmp_onnx:
                exporter(tmp_nnp, tmp_onnx, batch_size)


def verify_export(
    network: Module,
    raw_images: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    nnp_path: str,
    onnx_path: str | None = None,
) -> Dict[str, float | None]:
    """Max |difference| between the live network on normalised images and the exported files on raw ones."""
    raw = np.ascontiguousarray(raw_images, dtype=np.float32)
    mean_arr, std_arr = _stats(mean, std, raw.shape[1:])
    expected = _run_live(network, (raw - mean_arr) / std_arr)
    result: Dict[str, float | None] = {
        "nnp_max_abs_diff": _max_abs_diff(run_nnp(nnp_path, raw), expected),
        "onnx_max_abs_diff": None,
    }
    if onnx_path is not None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return result
        result["onnx_max_abs_diff"] = _max_abs_diff(run_onnx(onnx_path, raw), expected)
    return result


def run_nnp(nnp_path: str, raw_images: np.ndarray) -> np.ndarray:
    """Output ``y`` of an exported NNP on a batch of raw images (any batch size)."""
    from nnabla.utils.nnp_graph import NnpLoader

    raw = np.ascontiguousarray(raw_images, dtype=np.float32)
    # NnpLoader publishes the file's parameters into the current parameter scope: give it a private one
    with nn.parameter_scope("", OrderedDict()):
        net = NnpLoader(nnp_path).get_network(NETWORK, batch_size=len(raw))
        net.inputs[INPUT].d = raw
        y = net.outputs[OUTPUT]
        y.forward(clear_buffer=True)
        return np.array(y.d)


def run_onnx(onnx_path: str, raw_images: np.ndarray) -> np.ndarray:
    """Output of an exported ONNX file on raw images with onnxruntime, in chunks of the file's fixed batch size."""
    import onnxruntime

    raw = np.ascontiguousarray(raw_images, dtype=np.float32)
    session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    batch = inp.shape[0] if isinstance(inp.shape[0], int) else len(raw)
    outputs = []
    for start in range(0, len(raw), batch):
        chunk = raw[start : start + batch]
        n = len(chunk)
        if n < batch:  # the last chunk is zero-padded up to the file's batch size
            chunk = np.concatenate([chunk, np.zeros((batch - n,) + chunk.shape[1:], np.float32)])
        outputs.append(session.run(None, {inp.name: chunk})[0][:n])
    return np.concatenate(outputs)


def _stats(mean: Sequence[float], std: Sequence[float], input_shape: Tuple[int, ...]) -> Tuple[np.ndarray, np.ndarray]:
    """mean/std as float32 arrays broadcasting over (N, C, ...) images; ExportError if they do not fit."""
    if len(input_shape) < 1:
        raise ExportError(f"export input_shape: need (C, H, W), got {tuple(input_shape)}")
    channels = input_shape[0]
    mean_arr = np.asarray(mean, dtype=np.float32).reshape(-1)
    std_arr = np.asarray(std, dtype=np.float32).reshape(-1)
    if len(mean_arr) != channels or len(std_arr) != channels:
        raise ExportError(
            f"export mean/std: need {channels} values each (one per channel), got {len(mean_arr)} and {len(std_arr)}"
        )
    if not np.all(np.isfinite(mean_arr)) or not np.all(np.isfinite(std_arr)) or np.any(std_arr <= 0):
        raise ExportError(f"export mean/std: need finite values and std > 0, got {list(mean)} / {list(std)}")
    shape = (1, channels) + (1,) * (len(input_shape) - 1)
    return mean_arr.reshape(shape), std_arr.reshape(shape)


@contextlib.contextmanager
def _inference(network: Module) -> Iterator[None]:
    """``network.training = False`` inside the block, restored afterwards."""
    was_training = network.training
    network.training = False
    try:
        yield
    finally:
        network.training = was_training


def _run_live(network: Module, images: np.ndarray) -> np.ndarray:
    """Logits of the live network (inference mode) on already normalised images."""
    with _inference(network):
        x = nn.Variable.from_numpy_array(images)
        y = network(x)
        y.forward(clear_buffer=True)
        return np.array(y.d)


def _max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute element-wise difference (the shapes must agree)."""
    if a.shape != b.shape:
        raise ExportError(f"exported model gives output shape {a.shape}, the live network {b.shape}")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


def _onnx_converter():
    """A function ``(nnp_path, onnx_path, batch_size)`` over NNabla's converter; ExportError if it is not installed."""
    try:
        from nnabla.utils.converter.nnabla import NnpImporter
        from nnabla.utils.converter.onnx import OnnxExporter
    except ImportError as e:
        raise ExportError(f"ONNX export needs NNabla's converter ({e}); install it: {INSTALL_HINT}") from None

    def convert(nnp_path: str, onnx_path: str, batch_size: int) -> None:
        # the converter prints progress and uses numpy's deprecated tostring(); keep both out of the run's output
        try:
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                with nn.parameter_scope("", OrderedDict()):
                    nnp = NnpImporter(nnp_path, expand_network=True, executor_index=None).execute()
                # ir_version <= 0: the installed onnx package's IR version
                OnnxExporter(nnp, batch_size, -1, opset="11").execute(onnx_path)
        except Exception as e:
            detail = (str(e).strip().splitlines() or [""])[0]
            raise ExportError(f"ONNX conversion failed: {type(e).__name__}: {detail}") from e

    return convert
