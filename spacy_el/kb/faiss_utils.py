"""FAISS plumbing of the concept index: search settings that keep recall, GPU placement,
memory-mapped reads and FAISS's error messages made readable."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Iterator

try:
    import faiss
except ImportError as error:  # the base install has faiss-cpu; a GPU install swaps in faiss-gpu
    raise ImportError("spacy-el's concept index needs FAISS, which is not installed here: "
                      "`pip install faiss-cpu` (or faiss-gpu on a CUDA machine)") from error

from spacy_el.io import InputError


def sub_indexes(index: faiss.Index) -> Iterator[faiss.Index]:
    """The index and the indexes it wraps (pre-transforms, refine stages)."""
    index = faiss.downcast_index(index)
    yield index
    for attr in ("index", "base_index"):
        if (sub := getattr(index, attr, None)) is not None:
            yield from sub_indexes(sub)


def _ivf_nlist(index: faiss.Index) -> int | None:
    try:
        return faiss.extract_index_ivf(index).nlist
    except RuntimeError:
        return None


def default_settings(index: faiss.Index, nprobe: int | None, ef_search: int | None,
                      refine_k_factor: int | None) -> dict[str, Any]:
    """Search settings that keep recall: FAISS's defaults (nprobe=1, no refine depth) do not."""
    settings: dict[str, Any] = {}
    nlist = _ivf_nlist(index)
    if nlist is not None:
        settings["nprobe"] = min(nlist, nprobe or max(8, nlist // 16))
    if ef_search is not None or _has_param(index, "efSearch"):
        settings["ef_search"] = ef_search or 128
    if refine_k_factor is not None or _has_param(index, "k_factor_rf"):
        settings["refine_k_factor"] = refine_k_factor or 4
    return settings


_PARAM_NAMES = {"nprobe": "nprobe", "ef_search": "efSearch", "refine_k_factor": "k_factor_rf"}


def _has_param(index: faiss.Index, faiss_name: str) -> bool:
    space = faiss.ParameterSpace()
    space.initialize(index)
    return any(space.parameter_ranges.at(i).name == faiss_name for i in range(space.parameter_ranges.size()))


def apply_search_settings(index: faiss.Index, settings: dict[str, Any]) -> None:
    space = faiss.GpuParameterSpace() if _is_gpu(index) else faiss.ParameterSpace()
    for key, value in settings.items():
        try:
            space.set_index_parameter(index, _PARAM_NAMES[key], value)
        except (RuntimeError, KeyError):
            raise InputError(f"search setting {key}={value!r} does not apply to this index type; "
                             "drop it (nprobe: IVF types; ef_search: HNSW; refine_k_factor: RFlat)") from None


def _is_gpu(index: faiss.Index) -> bool:
    return "Gpu" in type(index).__name__


def maybe_gpu(index: faiss.Index, use_gpu: bool | str, *, shard: bool = False) -> tuple[faiss.Index, bool]:
    """Move the index to every visible GPU when asked ("auto": when FAISS sees one); anything
    that prevents it (faiss-cpu, no device, an index type without GPU support) falls back to
    the CPU index, with a warning only if the GPU was requested explicitly. `shard` splits the
    vectors across the GPUs (for an index larger than one GPU's memory) instead of copying the
    whole index to each."""
    return to_all_gpus(index, use_gpu, shard=shard)


def _parse_use_gpu(use_gpu: bool | str) -> bool | str:
    if isinstance(use_gpu, str):
        if use_gpu.lower() not in ("auto", "true", "false"):
            raise InputError(f"use_gpu={use_gpu!r}: use true, false or 'auto'")
        return "auto" if use_gpu.lower() == "auto" else use_gpu.lower() == "true"
    return use_gpu


def gpu_count() -> int:
    """GPUs FAISS can use (0 with faiss-cpu)."""
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def to_all_gpus(index: faiss.Index, use_gpu: bool | str, *, shard: bool = False) -> tuple[faiss.Index, bool]:
    """`faiss.index_cpu_to_all_gpus` (sharded or replicated) with the CPU fallback of `maybe_gpu`;
    returns the index to use and whether it is on the GPUs."""
    use_gpu = _parse_use_gpu(use_gpu)
    if use_gpu is False:
        return index, False
    if gpu_count() == 0 or not hasattr(faiss, "index_cpu_to_all_gpus"):
        if use_gpu is True:
            warnings.warn("use_gpu=True but FAISS sees no GPU (faiss-cpu installed, or no CUDA device); "
                          "running on the CPU")
        return index, False
    try:
        options = faiss.GpuMultipleClonerOptions()
        options.shard = shard
        options.useFloat16 = shard  # a sharded (large) index: half the GPU memory for flat storage, fp16 PQ tables
        return faiss.index_cpu_to_all_gpus(index, co=options), True
    except (RuntimeError, AttributeError) as err:
        warnings.warn(f"could not move the FAISS index to the GPU ({faiss_msg(err)}); running on the CPU")
        return index, False


def read_index(path: Path, mmap: bool) -> tuple[faiss.Index, bool]:
    """Memory-map when FAISS supports it for this index type, else read it into memory."""
    if not path.exists():
        raise InputError(f"{path}: missing; the index directory is incomplete, rebuild it")
    if mmap:
        try:
            return faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY), True
        except RuntimeError:
            pass
    try:
        return faiss.read_index(str(path)), False
    except RuntimeError as err:
        raise InputError(f"{path}: not a readable FAISS index ({faiss_msg(err)}); rebuild the index") from None


def faiss_msg(err: BaseException) -> str:
    """FAISS errors carry a C++ stack location; keep the human part."""
    text = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    return text.split(": ", 1)[-1] if "Error in" in text else text
