"""onnx-surgery top floor: TensorRT/onnxruntime backends, capability, engine build, validation, CLI."""
