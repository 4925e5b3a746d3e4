"""Error hierarchy. User-facing errors carry one-line messages; the CLI prints them and exits 2."""
from __future__ import annotations


class SurgeryError(Exception):
    """Base of every error this project raises on purpose."""


class UserInputError(SurgeryError):
    """Bad input from the user: missing path, malformed model, bad argument. Exit code 2."""


class ModelLoadError(UserInputError):
    """The file is not a valid, loadable ONNX model."""


class PreconditionError(SurgeryError):
    """A pass was asked to run on a graph it cannot handle."""


class PassError(SurgeryError):
    """A pass failed; carries the pass name and the passes that already ran."""

    def __init__(self, pass_name: str, already_ran: list[str], cause: BaseException) -> None:
        ran = ", ".join(already_ran) or "none"
        super().__init__(f"pass '{pass_name}' failed: {cause} (passes already run: {ran})")
        self.pass_name = pass_name
        self.already_ran = list(already_ran)


class VerificationError(SurgeryError):
    """The graph no longer passes the ONNX checker or shape inference after a pass."""


class NonConvergenceError(SurgeryError):
    """A fixed-point group still changed the graph after its iteration limit."""


class NumericMismatchError(SurgeryError):
    """A pass changed the model's outputs beyond tolerance (``--validate-each``)."""


class ConversionError(SurgeryError):
    """TensorRT parsing or building failed; carries parser messages and node names."""


class ValidationError(SurgeryError):
    """A candidate model/engine does not match its reference."""
