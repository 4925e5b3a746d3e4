"""TensorRT: backend selection, capability check, engine build (one path for check and convert), profiles, remedies."""
