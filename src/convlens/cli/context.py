"""What every command gets: parsed options, the model, output helpers and progress bars."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from convlens.errors import BadInputError, ConvlensError
from convlens.progress import ProgressFn

__all__ = ["Context"]

log = logging.getLogger("convlens")


class Context:
    """Options and shared services for one command run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._specs: list[Any] | None = None
        self._models: list[Any] | None = None
        self.bad_inputs: list[str] = []
        if args.threads is not None:
            if args.threads < 1:
                raise BadInputError(f"--threads {args.threads}: must be at least 1")
            import torch

            torch.set_num_threads(args.threads)

    # -- model -------------------------------------------------------------------------
    @property
    def device(self) -> str:
        if self.args.device:
            return str(self.args.device)
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def model_specs(self) -> list[Any]:
        """``--model`` (comma-separated), completed by ``convlens.toml`` / ``--config`` and
        the model flags, as :class:`~convlens.models.spec.ModelSpec` objects."""
        if self._specs is None:
            from convlens.models.spec import find_config, load_config, parse_model_list

            args = self.args
            config = load_config(find_config(getattr(args, "config", None)))
            overrides = {
                "weights": getattr(args, "weights", None),
                "trust_checkpoint": getattr(args, "trust_checkpoint", None),
                "input_size": getattr(args, "input_size", None),
                "mean": getattr(args, "mean", None),
                "std": getattr(args, "std", None),
                "channels": getattr(args, "model_channels", None),
                "labels": getattr(args, "model_labels", None),
            }
            specs = parse_model_list(args.model, overrides, config)
            # --fast turns fast mode on for every model; `fast = true` in a table for one
            fast = getattr(args, "fast", False)
            self._specs = [s.replace(fast=True) for s in specs] if fast else specs
        return self._specs

    def command_name(self) -> str:
        """``predict``, ``robustness attack-curve``: for messages."""
        parts = [
            getattr(self.args, "command", None),
            getattr(self.args, "robustness_command", None),
        ]
        return " ".join(p for p in parts if p) or "this command"

    def model(self, *, class_scores: bool = False) -> Any:
        """The one model named by ``--model`` (loaded once).

        ``class_scores``: the command reads class scores, so a model whose output is not
        ``(N, classes)`` is refused (exit 2) with what it returns.
        """
        specs = self.model_specs()
        if len(specs) != 1:
            raise BadInputError(
                f"--model {self.args.model}: convlens {self.command_name()} takes one model, not {len(specs)}"
            )
        return self.models(class_scores=class_scores)[0]

    def models(self, *, class_scores: bool = False) -> list[Any]:
        """Every model of ``--model a,b,c`` (loaded once each, in order; names distinct)."""
        if self._models is None:
            from convlens.models.spec import load_spec

            specs = self.model_specs()
            self.check_device()
            loaded = []
            for spec in specs:
                with self.progress(f"loading {spec.display_name}") as update:
                    model = load_spec(spec, device=self.device, progress=update)
                loaded.append(model)
            self._models = loaded
        if class_scores:
            from convlens.models.spec import require_class_scores

            for model in self._models:
                require_class_scores(model, self.command_name())
        return self._models

    def check_device(self) -> None:
        """Refuse a ``--device`` that is not a torch device or not on this machine (exit 2)."""
        import torch

        try:
            device = torch.device(self.device)
        except RuntimeError as exc:
            raise BadInputError(f"--device {self.device!r}: not a torch device ({exc})") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise BadInputError(
                f"--device {self.device}: CUDA is not available on this machine; use --device cpu"
            )

    # -- output ------------------------------------------------------------------------
    @property
    def json(self) -> bool:
        return bool(self.args.json)

    def emit_json(self, payload: Any) -> None:
        """Print the JSON result on stdout."""
        sys.stdout.write(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")

    def out_path(self, default: str, *, folder: bool) -> Path:
        """``-o/--out`` (a file for one picture, a folder for several), or the default."""
        out = getattr(self.args, "out", None) or default
        path = Path(out)
        if folder:
            if path.exists() and not path.is_dir():
                raise BadInputError(f"--out {out}: exists and is not a folder")
            path.mkdir(parents=True, exist_ok=True)
        else:
            if path.is_dir():
                raise BadInputError(
                    f"--out {out}: is a folder; give a file name such as {Path(out) / default}"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def report_bad_input(self, error: ConvlensError) -> None:
        """Report one bad input of a multi-input command and carry on (exit 2 at the end)."""
        self.bad_inputs.append(str(error))
        print(f"convlens: error: {error}", file=sys.stderr)

    def exit_code(self) -> int:
        return 2 if self.bad_inputs else 0

    # -- progress ----------------------------------------------------------------------
    @property
    def show_progress(self) -> bool:
        """Progress bars only on a terminal, never under --json, -q or with CI set."""
        return (
            sys.stderr.isatty()
            and not self.json
            and not os.environ.get("CI")
            and self.args.quiet == 0
        )

    @contextmanager
    def progress_group(self) -> Iterator[Callable[[str, int | None], ProgressFn]]:
        """One rich progress display on stderr; yields ``add(description, total) -> update``.

        ``update(done, total)`` moves that task's bar. Silent when progress is off.
        """
        if not self.show_progress:

            def silent(description: str, total: int | None = None) -> ProgressFn:
                return lambda done, total_now: None

            yield silent
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:

            def add(description: str, total: int | None = None) -> ProgressFn:
                task = bar.add_task(description, total=total)

                def update(done: int, total_now: int) -> None:
                    bar.update(task, completed=done, total=total_now)

                return update

            yield add

    @contextmanager
    def progress(self, description: str, total: int | None = None) -> Iterator[ProgressFn]:
        """A single progress bar on stderr; yields an ``update(done, total)`` callback."""
        with self.progress_group() as add:
            yield add(description, total)

    def iter_with_progress(self, items: Sequence[Any], description: str) -> Iterator[Any]:
        with self.progress(description, len(items)) as update:
            for i, item in enumerate(items):
                yield item
                update(i + 1, len(items))
