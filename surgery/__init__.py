"""onnx-surgery core: model I/O, pass infrastructure and graph helpers."""
from __future__ import annotations

from surgery.analysis import Dataflow
from surgery.errors import (
    ConversionError, ModelLoadError, NonConvergenceError, NumericMismatchError, PassError, PreconditionError,
    SurgeryError, UserInputError, ValidationError, VerificationError,
)
from surgery.io import LoadedModel, load_model, save_graph, save_model, to_graph, to_model
from surgery.pass_base import Pass, PassContext, PassOptions, PassResult
from surgery.pass_manager import FixedPoint, PassHook, PassManager, PipelineReport
from surgery.registry import get_pass, list_passes, list_presets, parse_pipeline, preset_pipeline, register_pass, register_preset
from surgery.rewrite import Match, NodeRewritePass, PatternRewritePass, Reject, State

__all__ = [
    "Dataflow", "ConversionError", "ModelLoadError", "NonConvergenceError", "NumericMismatchError",
    "PassError", "PreconditionError", "SurgeryError", "UserInputError", "ValidationError", "VerificationError",
    "LoadedModel", "load_model", "save_graph", "save_model", "to_graph", "to_model", "Pass", "PassContext", "PassOptions", "PassResult",
    "FixedPoint", "PassHook", "PassManager", "PipelineReport", "get_pass", "list_passes", "list_presets",
    "parse_pipeline", "preset_pipeline", "register_pass", "register_preset", "PatternRewritePass",
    "NodeRewritePass", "Match", "Reject", "State",
]
__version__ = "0.1.0"
