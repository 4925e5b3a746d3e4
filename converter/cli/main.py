"""The ``surgery`` command line. Each subcommand lives in ``converter/cli/<name>.py``.

Exit codes: 0 success, 1 the work failed (a pass, a check, a validation), 2 user error, 3 skipped
(validation of an engine with no runnable TensorRT).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from typing import Sequence

from surgery.errors import SurgeryError, UserInputError

COMMANDS = {
    "inspect": ("converter.cli.inspect", "Describe a model: opset, I/O, op histogram, parameters, dynamic dims."),
    "optimize": ("converter.cli.optimize", "Run a pass pipeline and write the optimized model and a report."),
    "list-passes": ("converter.cli.list_passes", "List every pass (and the presets)."),
    "extract": ("converter.cli.extract", "Isolate the subgraph between given tensors into a new model."),
    "check": ("converter.cli.check", "Report what TensorRT can and cannot take, node by node."),
    "convert": ("converter.cli.convert", "Build a TensorRT engine from an ONNX model."),
    "refit": ("converter.cli.refit", "Give a refittable or weight-stripped engine the weights of an ONNX model."),
    "validate": ("converter.cli.validate", "Compare a candidate (ONNX or engine) against a reference model."),
    "run": ("converter.cli.run", "optimize -> check -> convert -> validate, with one report."),
    "partition": ("converter.cli.partition", "Split a model into TensorRT-supported and unsupported partitions."),
    "run-partitioned": ("converter.cli.run_partitioned", "Run partitions in order (TensorRT where it runs, else onnxruntime)."),
    "batch": ("converter.cli.batch", "run over many models x targets (local processes or Ray), with one summary."),
    "reduce": ("converter.cli.reduce", "Cut a failing model down to a minimal subgraph that fails the same way."),
    "bench": ("converter.cli.bench", "Time an engine (or a model, built first): latency percentiles and throughput."),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage + error by default)
        raise UserInputError(f"{self.prog}: {message}")


def _requested_command(argv: Sequence[str] | None) -> str | None:
    """The subcommand named on the command line: the first token that is not a global option
    (the global options take no values), or None."""
    for token in sys.argv[1:] if argv is None else argv:
        if not token.startswith("-"):
            return token if token in COMMANDS else None
    return None


def build_parser(argv: Sequence[str] | None = None, *, all_commands: bool = True) -> argparse.ArgumentParser:
    """The full parser; with ``all_commands=False`` only the command ``argv`` names gets its arguments.

    Importing a command module pulls in its dependencies (TensorRT loaders, onnxruntime sessions,
    report rendering): a few hundred milliseconds of start-up that ``surgery optimize`` never needs.
    The other commands still appear (with their help line) so usage and "invalid choice" read the same.
    """
    parser = _Parser(prog="surgery", description="Make exported ONNX models TensorRT-ready, and prove they compute the same thing.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for internal errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    wanted = None if all_commands else _requested_command(argv)
    for name, (module_name, help_text) in COMMANDS.items():
        if not all_commands and name != wanted:
            sub.add_parser(name, help=help_text, description=help_text)
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(func=module.run)
    return parser


def _quiet_onnxruntime() -> None:
    """onnxruntime logs optimizer warnings to stderr for sessions we create internally (folding)."""
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)


def main(argv: Sequence[str] | None = None) -> int:
    import passes  # noqa: F401  (registers passes and presets)

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _quiet_onnxruntime()
    debug = False
    try:
        args = build_parser(argv, all_commands=False).parse_args(argv)
        debug = args.debug
        logging.getLogger().setLevel([logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)])
        if not getattr(args, "func", None):
            raise UserInputError("surgery: a command is required (try `surgery --help`)")
        return int(args.func(args) or 0)
    except UserInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SurgeryError as exc:
        if debug:
            traceback.print_exc()
        print(f"failed: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `surgery inspect M | head`
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # the file system refused (disk full, read-only, a path /proc will not hold)
        if debug:
            traceback.print_exc()
        where = f": {exc.filename}" if exc.filename else ""
        print(f"failed: {exc.strerror or type(exc).__name__}{where}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: one line by default, the traceback with --debug
        if debug:
            traceback.print_exc()
        first = (str(exc).strip().splitlines() or [""])[0]
        print(f"internal error: {type(exc).__name__}: {first} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
