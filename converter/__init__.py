"""onnx-surgery top floor: the CLI and the pipeline over four rooms.

``cli/`` the ``surgery`` command line (App: argument groups and one module per command);
``pipeline.py``/``optimize.py`` the run and optimize flows the CLI calls; ``report_html.py`` reports;
``trt/`` TensorRT backends, capability check, engine build and profiles; ``runtime/`` onnxruntime
execution, numerics, validation and partitions; ``plugins/`` the plugin catalog, checks, maps,
numpy references and onnx-surgery's own TensorRT plugins (``plugins/trt``).
"""
