"""The ``convlens`` command: shared options, command discovery, exit codes.

Commands register themselves: every module ``convlens/cli/cmd_*.py`` defines
``register(subparsers, common)``, which adds its parser and sets ``func`` to a
``run(ctx) -> int`` function. A new command is a new file; nothing here changes.

Exit codes (DESIGN.md): 0 done, 1 unexpected error, 2 bad input or usage (one line on
stderr naming the file or option and the reason, never a traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from convlens.discovery import submodule_names
from convlens.errors import BadInputError, ConvlensError, MissingDependencyError

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of the usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"convlens: error: {message} (see `{self.prog} --help`)\n")


def common_options() -> argparse.ArgumentParser:
    """Options every command accepts (DESIGN.md "The command line")."""
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("shared options")
    g.add_argument(
        "--model",
        default=None,
        help="a built-in name (see `convlens info`), path/to/file.py:factory, package.module:factory or a TorchScript .pt file; a,b,c for several where the command compares models; default efficientnet_lite0 (or [model] in convlens.toml)",
    )
    m = common.add_argument_group("your model (docs/bring-your-own-model.md)")
    m.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="model settings file (default: ./convlens.toml when present; flags win)",
    )
    m.add_argument(
        "--weights",
        default=None,
        metavar="CKPT",
        help="a state dict to load into --model (torch.load with weights_only=True)",
    )
    m.add_argument(
        "--trust-checkpoint",
        action="store_true",
        default=None,
        help="allow --weights / a .pt model that needs full unpickling (runs code in the file: only for files you trust)",
    )
    m.add_argument(
        "--input-size", default=None, metavar="S|HxW", help="the model's input resolution"
    )
    m.add_argument(
        "--mean",
        default=None,
        metavar="M[,M,M]",
        help="per-channel normalisation mean in [0, 1] pixel units",
    )
    m.add_argument(
        "--std",
        default=None,
        metavar="S[,S,S]",
        help="per-channel normalisation std in [0, 1] pixel units",
    )
    m.add_argument(
        "--channels",
        "--input-channels",
        dest="model_channels",
        type=int,
        default=None,
        metavar="C",
        help="input channels (1: grey)",
    )
    m.add_argument(
        "--labels",
        "--class-names",
        dest="model_labels",
        default=None,
        metavar="FILE",
        help="class names: one per line, or JSON",
    )
    g.add_argument(
        "--device",
        default=None,
        help="torch device, e.g. cpu or cuda:0 (default: cuda when present)",
    )
    g.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    g.add_argument(
        "--fast",
        action="store_true",
        help="fast mode: channels-last weights, and batch norms folded into convolutions for forward-only work and the input gradients of methods that hook nothing (same maps within float rounding; recorded in the provenance; `fast = true` in a convlens.toml table for one model; docs/features/performance.md)",
    )
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument(
        "--json",
        action="store_true",
        help="print the result as JSON on stdout (schema in docs/cli.md)",
    )
    g.add_argument("-q", "--quiet", action="count", default=0, help="fewer logs")
    g.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logs (-vv: debug, tracebacks)"
    )
    return common


def _command_modules() -> list[str]:
    return submodule_names("convlens.cli", prefix="cmd_")


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every discovered command."""
    from convlens import __version__

    parser = _Parser(prog="convlens", description="See inside convolutional neural networks.")
    parser.add_argument("--version", action="version", version=f"convlens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in _command_modules():
        module = importlib.import_module(f"convlens.cli.{name}")
        # a fresh copy each: a command whose own option reuses a shared flag's name
        # (`top-patches --channels`) resolves the clash on its copy only
        module.register(sub, common_options())
    return parser


def _setup_logging(verbose: int, quiet: int) -> None:
    level = logging.WARNING - 10 * verbose + 10 * quiet
    logger = logging.getLogger("convlens")
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("convlens: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(max(logging.DEBUG, min(level, logging.CRITICAL)))
    logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    from convlens.cli.context import Context
    from convlens.memory import keep_freed_memory_unless_disabled

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    _setup_logging(args.verbose, args.quiet)
    # freed activations stay in the process for the next batch: no page fault storm
    # (convlens/memory.py; CONVLENS_MALLOC=default keeps glibc's defaults)
    keep_freed_memory_unless_disabled()
    try:
        with _threads_restored():
            ctx = Context(args)
            return int(args.func(ctx) or 0)
    except KeyboardInterrupt:
        print("convlens: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (BadInputError, MissingDependencyError) as exc:
        _debug_traceback(args)
        print(f"convlens: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        # stdout closed early (e.g. `| head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except ConvlensError as exc:
        _debug_traceback(args)
        print(f"convlens: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # an unexpected error: a short line, the traceback with -vv
        _debug_traceback(args)
        hint = "" if args.verbose >= 2 else " (run with -vv for the traceback)"
        print(f"convlens: unexpected error: {type(exc).__name__}: {exc}{hint}", file=sys.stderr)
        return EXIT_ERROR


@contextmanager
def _threads_restored() -> Iterator[None]:
    """Put torch's thread count back after a command.

    ``--threads`` and commands that pick their own count (``privacy`` trains on one thread)
    set it process-wide; when ``main`` runs inside a caller's process (a notebook, a test,
    the web explorer) the caller's setting must survive the command.
    """
    import torch

    before = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _debug_traceback(args: argparse.Namespace) -> None:
    if args.verbose >= 2:
        import traceback

        traceback.print_exc()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
