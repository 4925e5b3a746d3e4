"""Time an engine with trtexec's habits (``surgery bench``): warm up for a while, then run until both
``iterations`` and ``duration`` are reached; GPU time per inference from CUDA events, host latency per
inference from the wall clock, throughput = inferences / wall time; optionally through a CUDA graph,
and a separate profiling run for per-layer times (``trt.IProfiler``), as trtexec's
``--separateProfileRun`` does, so the profiler never slows the timed runs.

Inputs are copied to the device once; like trtexec's GPU compute time, the timed region is the
enqueue of the engine alone. Device memory, streams and copies come from Polygraphy's CUDA wrapper;
the CUDA runtime calls it lacks (events, graph capture) go through the same loaded library.
"""
from __future__ import annotations

import ctypes
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

from converter.runtime.numerics import InputSpec, random_feeds
from converter.trt.backends import Backend
from converter.trt.engine import load_engine

_CAPTURE_GLOBAL = 0  # cudaStreamCaptureModeGlobal


@dataclass
class BenchOptions:
    warmup_ms: float = 200.0  # trtexec --warmUp
    iterations: int = 10  # trtexec --iterations: at least this many timed inferences
    duration_s: float = 3.0  # trtexec --duration: and at least this long
    cuda_graph: bool = False  # trtexec --useCudaGraph
    profile_iterations: int = 0  # > 0: a separate profiling run of this many inferences (per-layer times)


@dataclass
class BenchResult:
    gpu_ms: list[float]  # per timed inference, from CUDA events
    host_ms: list[float]  # per timed inference, wall clock (enqueue to completion)
    wall_s: float
    options: BenchOptions
    layers: list[dict[str, Any]] = field(default_factory=list)  # name, total/avg ms, share of the sum

    def stats(self, values: list[float]) -> dict[str, float]:
        a = np.asarray(values, dtype=np.float64)
        return {"min": float(a.min()), "max": float(a.max()), "mean": float(a.mean()), "median": float(np.median(a)),
                "p90": float(np.percentile(a, 90)), "p95": float(np.percentile(a, 95)), "p99": float(np.percentile(a, 99))}

    def to_json(self) -> dict[str, Any]:
        return {"status": "measured", "inferences": len(self.gpu_ms), "wall_s": round(self.wall_s, 4),
                "throughput_qps": len(self.gpu_ms) / self.wall_s if self.wall_s else 0.0,
                "gpu_compute_ms": self.stats(self.gpu_ms), "latency_ms": self.stats(self.host_ms),
                "options": asdict(self.options), "layers": self.layers}

    def times(self) -> list[dict[str, float]]:
        """Per-inference times in the spirit of trtexec's --exportTimes."""
        return [{"computeMs": g, "latencyMs": h} for g, h in zip(self.gpu_ms, self.host_ms)]


class _Runtime:
    """The CUDA runtime calls Polygraphy's wrapper does not expose: events and graphs."""

    def __init__(self) -> None:
        from polygraphy import cuda

        self.wrapper = cuda.wrapper()
        self.lib = self.wrapper.handle

    def _ptr(self) -> ctypes.c_void_p:
        return ctypes.c_void_p()

    def event(self) -> ctypes.c_void_p:
        ev = self._ptr()
        self.wrapper.check(self.lib.cudaEventCreate(ctypes.byref(ev)))
        return ev

    def record(self, event: ctypes.c_void_p, stream: int) -> None:
        self.wrapper.check(self.lib.cudaEventRecord(event, ctypes.c_void_p(stream)))

    def elapsed_ms(self, start: ctypes.c_void_p, end: ctypes.c_void_p) -> float:
        self.wrapper.check(self.lib.cudaEventSynchronize(end))
        ms = ctypes.c_float()
        self.wrapper.check(self.lib.cudaEventElapsedTime(ctypes.byref(ms), start, end))
        return float(ms.value)

    def capture(self, stream: int, enqueue: Any) -> ctypes.c_void_p:
        """An instantiated CUDA graph of what ``enqueue()`` puts on ``stream``."""
        graph, instance = self._ptr(), self._ptr()
        self.wrapper.check(self.lib.cudaStreamBeginCapture(ctypes.c_void_p(stream), _CAPTURE_GLOBAL))
        enqueue()
        self.wrapper.check(self.lib.cudaStreamEndCapture(ctypes.c_void_p(stream), ctypes.byref(graph)))
        self.wrapper.check(self.lib.cudaGraphInstantiate(ctypes.byref(instance), graph, ctypes.c_ulonglong(0)))
        return instance

    def launch(self, instance: ctypes.c_void_p, stream: int) -> None:
        self.wrapper.check(self.lib.cudaGraphLaunch(instance, ctypes.c_void_p(stream)))


def _layer_profiler(trt: Any) -> Any:
    class LayerTimes(trt.IProfiler):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)
            self.total: dict[str, float] = {}
            self.calls: dict[str, int] = {}

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            self.total[layer_name] = self.total.get(layer_name, 0.0) + ms
            self.calls[layer_name] = self.calls.get(layer_name, 0) + 1

    return LayerTimes()


def engine_feeds(trt: Any, engine: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random inputs at the engine's static shapes, or its first profile's opt shapes."""
    specs = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) != trt.TensorIOMode.INPUT:
            continue
        shape = list(engine.get_tensor_shape(name))
        if any(d < 0 for d in shape):
            shape = list(engine.get_tensor_profile_shape(name, 0)[1])
        specs.append(InputSpec(name, tuple(shape), np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name))
    return random_feeds(specs, seed=seed)


def bench_engine(backend: Backend, data: bytes, feeds: Mapping[str, np.ndarray] | None,
                 options: BenchOptions) -> BenchResult:
    """Time the engine ``data`` on ``feeds`` (None: ``engine_feeds``); ``EngineSkipped`` where it cannot run here."""
    from polygraphy import cuda

    _, engine = load_engine(backend, data)
    trt = backend.module
    feeds = feeds if feeds is not None else engine_feeds(trt, engine)
    context = engine.create_execution_context()
    buffers = []
    stream = cuda.Stream()
    try:
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                host = np.ascontiguousarray(feeds[name], dtype=trt.nptype(engine.get_tensor_dtype(name)))
                context.set_input_shape(name, host.shape)
                buf = cuda.DeviceArray(shape=host.shape, dtype=host.dtype)
                buf.copy_from(host, stream)
            else:
                buf = cuda.DeviceArray(shape=tuple(context.get_tensor_shape(name)), dtype=trt.nptype(engine.get_tensor_dtype(name)))
            buffers.append(buf)
            context.set_tensor_address(name, buf.ptr)
        stream.synchronize()
        rt = _Runtime()

        def enqueue() -> None:
            if not context.execute_async_v3(stream.ptr):
                raise RuntimeError("execute_async_v3 failed (see the TensorRT log)")

        enqueue()  # first run: lazy initialization stays out of both warm-up and timing
        stream.synchronize()
        run = enqueue
        if options.cuda_graph:
            instance = rt.capture(stream.ptr, enqueue)
            run = lambda: rt.launch(instance, stream.ptr)  # noqa: E731
        end_warmup = time.perf_counter() + options.warmup_ms / 1000.0
        while time.perf_counter() < end_warmup:
            run()
            stream.synchronize()
        start_ev, end_ev = rt.event(), rt.event()
        gpu, host = [], []
        begin = time.perf_counter()
        while len(gpu) < options.iterations or time.perf_counter() - begin < options.duration_s:
            t0 = time.perf_counter()
            rt.record(start_ev, stream.ptr)
            run()
            rt.record(end_ev, stream.ptr)
            gpu.append(rt.elapsed_ms(start_ev, end_ev))
            host.append((time.perf_counter() - t0) * 1000.0)
        result = BenchResult(gpu, host, time.perf_counter() - begin, options)
        if options.profile_iterations > 0:
            result.layers = _profile(trt, context, enqueue, stream, options.profile_iterations)
        return result
    finally:
        for buf in buffers:
            buf.free()
        stream.free()


def _profile(trt: Any, context: Any, enqueue: Any, stream: Any, count: int) -> list[dict[str, Any]]:
    """Per-layer times of ``count`` inferences with an ``IProfiler`` attached (no CUDA graph)."""
    profiler = _layer_profiler(trt)
    context.profiler = profiler
    for _ in range(count):
        enqueue()
        stream.synchronize()
    total = sum(profiler.total.values()) or 1.0
    return [{"name": name, "total_ms": ms, "avg_ms": ms / profiler.calls[name], "percent": 100.0 * ms / total}
            for name, ms in sorted(profiler.total.items(), key=lambda kv: -kv[1])]
