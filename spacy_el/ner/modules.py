"""The tagger's PyTorch modules (BiLSTM, character CNN) as thinc nodes that also load and predict
without torch.

With torch installed a module is thinc's `PyTorchWrapper` (training runs it); without torch the
node is a stand-in of the same name, dims and files whose shim holds the module's weights as
numpy arrays. Either way prediction on the CPU runs the numpy forward the caller gives, reading
the weights by their state-dict names (`module_state`), so a pipeline tags the same with or
without torch.

Files: thinc saves a wrapped module's weights with `torch.save` (a zip archive holding a pickle
and the raw tensor bytes). `read_state` reads that format with `zipfile` and a restricted
unpickler, so pipelines trained before this module existed load without torch as they are; a
pipeline saved without torch writes a msgpack table of the arrays instead (`write_state`), which
both sides read."""
from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Optional

import numpy as np
import srsly
from thinc.api import Model, NumpyOps
from thinc.shims import Shim

#: Marks the msgpack format of `write_state` (a zip archive from `torch.save` starts with b"PK").
STATE_FORMAT = "spacy_el.numpy_state.v1"

#: How a wrapped module predicts on numpy ops: "numpy" (same answers as torch up to float
#: rounding, no torch call) or "torch" (its PyTorch forward; only where torch is installed).
_backend = {"name": "numpy"}


def torch_available() -> bool:
    """Whether `import torch` works here (a `sys.modules["torch"] = None` block counts as absent)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


@contextmanager
def prediction_backend(name: str) -> Iterator[None]:
    """Run the wrapped modules' predictions on `name` ("numpy" or "torch") inside the block:
    what the runtime benchmark pairs, and how a test compares the two."""
    if name not in ("numpy", "torch"):
        raise ValueError(f"prediction_backend: 'numpy' or 'torch', got {name!r}")
    before = _backend["name"]
    _backend["name"] = name
    try:
        yield
    finally:
        _backend["name"] = before


def predicts_with_numpy(node: Model) -> bool:
    """Whether `node` (a wrapped module) predicts through its numpy forward: always without
    torch, else on numpy ops unless `prediction_backend("torch")` says otherwise."""
    if isinstance(node.shims[0], StateShim):
        return True
    return _backend["name"] == "numpy" and isinstance(node.ops, NumpyOps)


def module_state(node: Model) -> Dict[str, np.ndarray]:
    """The weights of the module wrapped by `node`, by state-dict name, as float numpy arrays
    (views of the torch parameters where torch holds them: read them afresh after training)."""
    shim = node.shims[0]
    if isinstance(shim, StateShim):
        if not shim.state:
            raise ValueError(f"{node.name}: this layer has no weights yet; it predicts only once loaded from a "
                             "trained pipeline (training and initializing need torch: pip install 'spacy-el[train]')")
        return shim.state
    return {name: value.detach().cpu().numpy() for name, value in shim._model.state_dict().items()}


# -- files ------------------------------------------------------------------------------------
_STORAGE_DTYPES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16", "LongStorage": "int64",
    "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
    "BoolStorage": "bool",
}


def _rebuild_tensor(storage: np.ndarray, offset: int, size, stride, *_ignored) -> np.ndarray:
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * itemsize for s in stride))
    return np.array(view)


def _rebuild_parameter(data: np.ndarray, *_ignored) -> np.ndarray:
    return data


class _StateUnpickler(pickle.Unpickler):
    """Unpickles a `torch.save`d state dict into numpy arrays; any other class is refused."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(io.BytesIO(archive.read(f"{prefix}/data.pkl")))
        self.archive, self.prefix = archive, prefix
        order = archive.read(f"{prefix}/byteorder").decode().strip() if f"{prefix}/byteorder" in archive.namelist() \
            else "little"
        self.byteorder = "<" if order == "little" else ">"

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return np.dtype(_STORAGE_DTYPES[name]).newbyteorder(self.byteorder)
        raise pickle.UnpicklingError(f"a tagger's saved weights hold {module}.{name}, which cannot be read "
                                     "without torch; install torch (pip install 'spacy-el[train]') to load them")

    def persistent_load(self, pid: Any) -> np.ndarray:
        kind, dtype, key = pid[0], pid[1], pid[2]
        if kind != "storage" or not isinstance(dtype, np.dtype):
            raise pickle.UnpicklingError(f"unsupported tensor storage {pid!r} in a tagger's saved weights")
        return np.frombuffer(self.archive.read(f"{self.prefix}/data/{key}"), dtype=dtype).astype(dtype.newbyteorder("="))


def read_state(data: bytes) -> Dict[str, np.ndarray]:
    """The state dict in `data`: a `torch.save` archive (what a `PyTorchWrapper` saves) or the
    msgpack table of `write_state`."""
    if data[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise ValueError("a tagger's saved weights are not a torch.save archive (no single data.pkl)")
            state = _StateUnpickler(archive, pickles[0][: -len("/data.pkl")]).load()
        return {str(name): np.ascontiguousarray(value) for name, value in state.items()}
    msg = srsly.msgpack_loads(data)
    if not isinstance(msg, dict) or msg.get("format") != STATE_FORMAT:
        raise ValueError("a tagger's saved weights are in an unknown format (neither torch.save nor "
                         f"{STATE_FORMAT}); save the pipeline again with this version of spacy-el")
    return {name: np.ascontiguousarray(value) for name, value in msg["arrays"].items()}


def write_state(state: Dict[str, np.ndarray]) -> bytes:
    """`state` as bytes `read_state` reads, written without torch."""
    return srsly.msgpack_dumps({"format": STATE_FORMAT, "arrays": {k: np.asarray(v) for k, v in state.items()}})


def _deserialize_torch_module(module: Any, data: bytes, device: Any) -> Any:
    """thinc's loader for a wrapped module, also taking the torch-free format."""
    import torch

    if data[:2] == b"PK":
        state = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    else:
        state = {name: torch.from_numpy(np.array(value)) for name, value in read_state(data).items()}
    module.load_state_dict(state)
    return module.to(device)


class StateShim(Shim):
    """A wrapped module's weights without torch: loads and saves them, takes no training."""

    def __init__(self) -> None:
        super().__init__(None)
        self.state: Dict[str, np.ndarray] = {}

    def __call__(self, inputs, is_train: bool):
        raise ValueError("this tagger layer runs its PyTorch module only with torch installed "
                         "(pip install 'spacy-el[train]')")

    def finish_update(self, optimizer) -> None:
        raise ValueError("training bilstm_ner needs torch: pip install 'spacy-el[train]'")

    def to_device(self, device_type: str, device_id: int) -> None:
        if device_type != "cpu":
            raise ValueError("without torch, bilstm_ner runs on the CPU only")

    def to_bytes(self) -> bytes:
        return srsly.msgpack_dumps({"config": self.cfg, "state": write_state(self.state)})

    def from_bytes(self, data: bytes) -> "StateShim":
        msg = srsly.msgpack_loads(data)
        self.cfg = msg["config"]
        self.state = read_state(msg["state"])
        return self


def torch_module_node(make_module: Callable[[], Any], predict: Callable[[Model, Any], Any], *,
                      convert_inputs: Optional[Callable] = None, convert_outputs: Optional[Callable] = None,
                      dims: Optional[Dict[str, int]] = None) -> Model:
    """A thinc node running the module `make_module()` builds: thinc's `PyTorchWrapper` where torch
    is installed, else a stand-in of the same name and files. On numpy ops it predicts with
    `predict(node, X)` (reading `module_state(node)`); training runs the PyTorch module."""
    if torch_available():
        from thinc.layers.pytorchwrapper import PyTorchWrapper_v3

        node = PyTorchWrapper_v3(make_module(), convert_inputs=convert_inputs, convert_outputs=convert_outputs,
                              deserialize_model=_deserialize_torch_module)
        torch_forward = node._func
    else:
        node = Model("pytorch", lambda model, X, is_train: model.shims[0](X, is_train), init=_needs_torch,
                     shims=[StateShim()], dims={"nI": None, "nO": None})
        torch_forward = node._func
    for name, value in (dims or {}).items():
        node.set_dim(name, value)

    def forward(model: Model, X: Any, is_train: bool):
        if not is_train and predicts_with_numpy(model):
            return predict(model, X), _no_backprop
        return torch_forward(model, X, is_train)

    node.replace_callbacks(forward, init=node.init)
    return node


def _needs_torch(model: Model, X: Any = None, Y: Any = None) -> None:
    raise ValueError("initializing or training bilstm_ner needs torch (pip install 'spacy-el[train]'); "
                     "without it a tagger is loaded from a trained pipeline (spacy.load)")


def _no_backprop(dY: Any) -> Any:
    raise ValueError("a tagger layer predicted without gradients (is_train=False) cannot backpropagate")
