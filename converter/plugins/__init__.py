"""Plugins: the catalog of TensorRT plugins, plugin-node checks, plugin maps, numpy references, and
onnx-surgery's own TensorRT plugins (``plugins.trt``)."""
