"""TensorRT: backend selection, capability check, engine build, raw network helpers, profiles, remedies."""
