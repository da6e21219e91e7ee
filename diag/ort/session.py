"""Create an ONNX Runtime ``InferenceSession`` tuned for token-by-token decoding.

A decode step of a small causal LM is a chain of matrix-vector products: it is bound
by the memory bandwidth, and every microsecond spent outside the kernels shows. The
options chosen here: every graph optimisation (constant folding of the transposed
tied embedding, MatMul/Add/Gelu/LayerNorm/SkipLayerNorm fusions...), one intra-op thread
per physical core (hyper-threads only share the same memory bus), sequential execution
(a decoder is a chain: a parallel executor only adds scheduling), the memory arena kept
(each step allocates tensors of almost the same sizes as the previous one), threads
spinning between parallel sections unless the machine is already overloaded.

Example::

    sess = make_session("model.onnx")                      # CPU
    sess = make_session(onnx_proto, providers=["CUDAExecutionProvider"])
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import Any

import onnx
import onnxruntime as ort

#: accepted spellings of the providers argument: a name, or a list of names /
#: ``(name, options)`` pairs, as ``InferenceSession`` takes them
Providers = str | Sequence[str | tuple[str, dict[str, Any]]] | None


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads are not counted)."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    physical = None
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:  # pragma: no cover - psutil is almost always there
        pass
    counts = [c for c in (allowed, physical, os.cpu_count()) if c]
    return max(1, min(counts)) if counts else 1


def machine_is_busy() -> bool:
    """True when the 1-minute load average exceeds the cores this process may use."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        return False
    return load > physical_cores()


def default_session_options(
    *,
    intra_op_num_threads: int | None = None,
    allow_spinning: bool | None = None,
    enable_profiling: bool = False,
    optimized_model_filepath: str | os.PathLike | None = None,
    log_severity_level: int = 3,
) -> ort.SessionOptions:
    """SessionOptions for decoding speed (see the module docstring).

    ``optimized_model_filepath`` saves the graph as ONNX Runtime optimised it (useful to
    see which fusions happened); ``enable_profiling`` writes a per-operator trace (read
    it with :func:`diag.ort.profiling.read_profile` or chrome://tracing).

    ``allow_spinning``: whether idle intra-op threads busy-wait for the next parallel
    section (a decode step has hundreds of them: waking sleeping threads each time
    costs). None decides from the machine: on, unless it is already busier than its
    cores, where spinning threads steal the time the working ones need (measured on a
    shared 2-core machine at load 6: 14 tokens/s with spinning, 25-38 without).
    """
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = intra_op_num_threads or physical_cores()
    # a sequential executor never uses the inter-op pool
    opts.inter_op_num_threads = 1
    opts.enable_cpu_mem_arena = True
    opts.enable_mem_pattern = True
    opts.log_severity_level = log_severity_level
    if allow_spinning is None:
        allow_spinning = not machine_is_busy()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    if enable_profiling:
        opts.enable_profiling = True
    if optimized_model_filepath is not None:
        opts.optimized_model_filepath = os.fspath(optimized_model_filepath)
    return opts


def normalize_providers(providers: Providers) -> list[str | tuple[str, dict[str, Any]]]:
    """``None`` -> CPU; a single name -> a list with the CPU as fallback for the rest.

    Raises a ValueError naming the installed providers when one is not available
    (ONNX Runtime itself would only warn and silently run on the CPU).
    """
    if providers is None:
        return ["CPUExecutionProvider"]
    if isinstance(providers, str):
        providers = [providers]
    result: list[str | tuple[str, dict[str, Any]]] = []
    available = ort.get_available_providers()
    for p in providers:
        name = p[0] if isinstance(p, tuple) else p
        if not isinstance(name, str):
            raise TypeError(
                f"providers must be names like 'CPUExecutionProvider' or (name, options) "
                f"pairs, got {p!r}."
            )
        if name not in available:
            raise ValueError(
                f"execution provider {name!r} is not available in this onnxruntime "
                f"installation (available: {available}); install the matching package "
                "(onnxruntime-gpu for CUDAExecutionProvider) or use 'CPUExecutionProvider'."
            )
        result.append(p)
    names = [p[0] if isinstance(p, tuple) else p for p in result]
    if "CPUExecutionProvider" not in names:
        # nodes the accelerator does not implement run on the CPU
        result.append("CPUExecutionProvider")
    return result


def provider_device(session: ort.InferenceSession) -> tuple[str, int]:
    """``(device_type, device_id)`` where the session's main provider keeps tensors:
    ``("cuda", 0)`` for CUDA, ``("cpu", 0)`` otherwise."""
    providers = session.get_providers()
    main = providers[0] if providers else "CPUExecutionProvider"
    if main == "CUDAExecutionProvider":
        options = session.get_provider_options().get(main, {})
        return "cuda", int(options.get("device_id", 0) or 0)
    return "cpu", 0


def _uses_external_data(model: onnx.ModelProto) -> bool:
    return any(
        t.data_location == onnx.TensorProto.EXTERNAL
        for t in onnx.external_data_helper._get_all_tensors(model)
    )


def _inference_session(
    source: str | bytes, options: ort.SessionOptions, providers: list[Any], graph: Any
) -> ort.InferenceSession:
    """``ort.InferenceSession(source, ...)``; a node without a kernel in the providers
    is refused by :func:`diag.ort.provider_support.check_provider_support` (the dtype,
    the provider, the fix), read from ``graph`` only then: the checks cost nothing to
    a session that opens."""
    try:
        return ort.InferenceSession(source, options, providers=providers)
    except Exception as exc:
        if "NOT_IMPLEMENTED" not in str(exc):
            raise
        from diag.ort import provider_support as support

        unsupported = support.unsupported_nodes(graph, providers)
        if unsupported:
            what = repr(graph) if isinstance(graph, str) else "the model"
            message = support.support_message(unsupported, providers, what)
            raise support.ProviderSupportError(message) from exc
        raise


def make_session(
    model: str | os.PathLike | onnx.ModelProto | Any,
    providers: Providers = None,
    *,
    session_options: ort.SessionOptions | None = None,
    base_dir: str | os.PathLike | None = None,
    intra_op_num_threads: int | None = None,
    allow_spinning: bool | None = None,
    enable_profiling: bool = False,
    optimized_model_filepath: str | os.PathLike | None = None,
) -> ort.InferenceSession:
    """An ``InferenceSession`` over a file, an ``onnx.ModelProto`` or an ``onnx_ir.Model``.

    A ModelProto whose weights live in external files needs ``base_dir`` (the folder
    those files are relative to; usually the folder of the .onnx file it was loaded
    from with ``load_external_data=False``). A model over 2 GB is saved to a temporary
    folder with external data first (protobuf cannot serialize it).

    Example::

        sess = make_session("model.onnx")
        sess = make_session(onnx.load("model.onnx"), intra_op_num_threads=4)
    """
    providers = normalize_providers(providers)
    if session_options is None:
        session_options = default_session_options(
            intra_op_num_threads=intra_op_num_threads,
            allow_spinning=allow_spinning,
            enable_profiling=enable_profiling,
            optimized_model_filepath=optimized_model_filepath,
        )

    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"ONNX model {path!r} does not exist; export one with diag.export_causal_lm."
            )
        return _inference_session(path, session_options, providers, path)

    if type(model).__module__.startswith("onnx_ir"):
        import onnx_ir as ir

        if not isinstance(model, ir.Model):
            raise TypeError(f"expected an onnx_ir.Model, got {type(model).__name__}.")
        model = ir.serde.serialize_model(model)

    if not isinstance(model, onnx.ModelProto):
        raise TypeError(
            "model must be a path to an .onnx file, an onnx.ModelProto, an onnx_ir.Model or "
            f"an onnxruntime.InferenceSession, not {type(model).__name__}."
        )

    if _uses_external_data(model):
        if base_dir is None:
            raise ValueError(
                "this ModelProto keeps its weights in external files that are not loaded; "
                "pass base_dir=<folder of the .onnx file>, or load it with "
                "onnx.load(path) (load_external_data=True), or pass the file path instead."
            )
        model = onnx.ModelProto.FromString(model.SerializeToString())
        onnx.external_data_helper.load_external_data_for_model(model, os.fspath(base_dir))

    if model.ByteSize() < 2**31 - 2**20:
        return _inference_session(model.SerializeToString(), session_options, providers, model)
    # protobuf cannot hold more than 2 GB: go through a file with external data
    with tempfile.TemporaryDirectory(prefix="diag_ort_", ignore_cleanup_errors=True) as tmp:
        path = os.path.join(tmp, "model.onnx")
        onnx.save(model, path, save_as_external_data=True, location="model.onnx.data")
        # the session reads (or maps) the weights at creation; the files can go after
        return _inference_session(path, session_options, providers, path)
