"""Where batch items run: a local pool (the default) or Ray tasks (``--ray local|ADDRESS``).

Both hand each item to ``worker.execute_item``, which runs it in its own process with its timeout,
so a crash or a hang costs that item only. The local pool is the standard library's thread pool,
one thread per job, each waiting on its item's process. With Ray, every item is two tasks of Ray's
task API, each with its resource request: optimize (one CPU), then check, build and validate (one
CPU, plus GPUs where the cluster has some and the target builds with a TensorRT library: builds and
engine runs use the GPU there), the second taking the first's result as its argument; Ray decides
where and when each runs. The cluster's nodes must see the same paths as the driver (a shared file system):
tasks read the models and write the item folders in place. onnx-surgery's own packages are shipped
to the workers (``py_modules``), so they run the driver's code.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, Callable, Protocol, Sequence

from converter.batch.items import RECORD, Item
from converter.batch.worker import execute_item, make_record, write_json
from surgery.errors import UserInputError

OnDone = Callable[[Item, dict[str, Any]], None]


class Executor(Protocol):
    def describe(self) -> dict[str, Any]: ...
    def run(self, items: Sequence[Item], on_done: OnDone) -> None: ...


class LocalExecutor:
    """``jobs`` items at a time on this machine."""

    def __init__(self, jobs: int, timeout_s: float | None) -> None:
        self.jobs, self.timeout_s = jobs, timeout_s

    def describe(self) -> dict[str, Any]:
        return {"executor": "local", "jobs": self.jobs}

    def run(self, items: Sequence[Item], on_done: OnDone) -> None:
        stop = threading.Event()
        pool = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="surgery-batch")
        try:
            futures = {pool.submit(execute_item, item.to_json(), self.timeout_s, stop): item for item in items}
            for future in as_completed(futures):
                on_done(futures[future], future.result())
        except BaseException:  # Ctrl-C, or a bug in on_done: stop the items still running, leave them unrecorded
            stop.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def gpu_request(item: Item, cluster_gpus: float, gpus_per_item: float) -> float:
    """GPUs an item's task asks for: none on a cluster without GPUs or for the static backend."""
    return gpus_per_item if cluster_gpus > 0 and item.backend != "static" else 0.0


class RayExecutor:
    """Every item a Ray task; ``address`` is ``local`` (start a Ray instance with ``jobs`` CPUs) or a cluster's address."""

    def __init__(self, address: str, jobs: int | None, timeout_s: float | None, gpus_per_item: float = 1.0) -> None:
        self.address, self.jobs, self.timeout_s, self.gpus_per_item = address, jobs, timeout_s, gpus_per_item
        self.resources: dict[str, float] = {}
        self.ray = import_ray()  # before any work: a missing Ray is a user error

    def describe(self) -> dict[str, Any]:
        return {"executor": "ray", "address": self.address, "jobs": self.jobs,
                "cluster": {k: self.resources[k] for k in ("CPU", "GPU") if k in self.resources}}

    def run(self, items: Sequence[Item], on_done: OnDone) -> None:
        ray = self.ray
        started = self._init(ray)
        try:
            self.resources = dict(ray.cluster_resources())
            task = ray.remote(execute_item)
            refs = {}
            for item in items:
                name, spec = f"surgery-batch {item.model.name}/{item.target.name}", item.to_json()
                gpus = gpu_request(item, self.resources.get("GPU", 0), self.gpus_per_item)
                optimized = task.options(num_cpus=1, max_retries=0, name=f"{name} optimize").remote(
                    spec, self.timeout_s, None, "optimize")
                # Ray starts the second task once the first's result (passed as an argument) is there
                refs[task.options(num_cpus=1, num_gpus=gpus, max_retries=0, name=f"{name} build").remote(
                    spec, self.timeout_s, None, "build", optimized)] = item
            pending = list(refs)
            try:
                while pending:
                    done, pending = ray.wait(pending, num_returns=1)
                    for ref in done:
                        on_done(refs[ref], self._result(ray, ref, refs[ref]))
            except BaseException:
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise
        finally:
            if started:
                ray.shutdown()

    def _init(self, ray: Any) -> bool:
        """Start (``local``) or join a Ray instance, unless this process already did; True when this call did."""
        if ray.is_initialized():
            return False
        import logging

        import converter
        import passes
        import surgery

        common = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING,
                  "runtime_env": {"py_modules": [converter, surgery, passes]}}
        if self.address == "local":
            ray.init(num_cpus=self.jobs or os.cpu_count() or 1, **common)
        else:
            try:
                ray.init(address=self.address, **common)
            except ConnectionError as exc:
                raise UserInputError(f"--ray {self.address}: cannot join the Ray cluster ({str(exc).splitlines()[0]})") from None
        return True

    def _result(self, ray: Any, ref: Any, item: Item) -> dict[str, Any]:
        """The task's record; where Ray lost the task (its worker died, a node went), a record saying so."""
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            record = make_record(item.to_json(), "crashed", None, self.timeout_s, ran=False,
                                 error=f"Ray lost the task: {type(exc).__name__}: {first}")
            item.out_dir.mkdir(parents=True, exist_ok=True)
            write_json(item.out_dir / RECORD, record)
            return record


def import_ray() -> Any:
    try:
        import ray
    except ModuleNotFoundError:
        raise UserInputError("--ray needs the 'ray' package: pip install 'onnx-surgery[ray]'") from None
    return ray
