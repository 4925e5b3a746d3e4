"""Running models: onnxruntime sessions and numerics, validation, per-pass validation, plugin reference
execution, partitions and running them in order, input specs."""
