"""Write docs/cli.md from the parser and each command's JSON SCHEMA (a test keeps it current).

python scripts/make_cli_docs.py
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

from convlens.cli.main import _command_modules, build_parser

HEADER = """# The command line

```
convlens COMMAND [options]
```

Shared options (every command): `--model NAME` (default `efficientnet_lite0`; also
`torchvision:NAME`, `timm:NAME` when installed with cached weights), `--device`,
`--threads`, `--seed`, `--json`, `-q/--quiet`, `-v/--verbose` (`-vv` prints tracebacks).
`-o/--out` is a file where a command makes one picture and a folder where it makes several.

Your own network (every command; [bring your own model](bring-your-own-model.md)):
`--model path/to/file.py:factory`, `--model package.module:factory` or `--model net.pt`
(TorchScript), with `--weights CKPT` (a state dict, read with `weights_only=True`),
`--trust-checkpoint` (allow a checkpoint or `.pt` module that needs full unpickling),
`--input-size S|HxW`, `--mean M[,M,M]`, `--std S[,S,S]`, `--channels C` and
`--labels FILE` (one name per line, or JSON). `top-patches`, `visualize` and
`robustness shape-bias` have options of their own named `--channels` / `--labels`; there
the model's are `--input-channels` and `--class-names`. The same settings can live in
`convlens.toml` in the working folder (or `--config FILE`): a `[model]` table for the
default and `[models.NAME]` tables for named models (`--model NAME`, `--model a,b`);
flags win over the file. Commands that compare models take `--model a,b,c`
(`explain`, `report`, `serve`, `robustness ...`).

- stdout: the result, a table or (with `--json`) JSON following the schema below.
- stderr: logs and progress bars; bars are off when stderr is not a terminal, under
  `--json`, with `-q`, or when the `CI` environment variable is set.
- Exit codes: **0** done, **1** unexpected error, **2** bad input or usage (one line naming
  the file or option and the reason, never a traceback; in a command given many images the
  bad ones are reported one per line, the good ones still processed, and the exit code is
  2 at the end), **130** interrupted.
- Images: files, folders (their images, recursively) and `sample:NAME` for the bundled
  photos (`cat`, `coffee`, `rocket`, `moped`, `palace`, `daisy`, `hopper`, `astronaut`,
  `hubble`, `brick`, `grass`, `gravel`).
"""


_SHARED = {
    "help",
    "model",
    "device",
    "threads",
    "seed",
    "json",
    "quiet",
    "verbose",
    "config",
    "weights",
    "trust_checkpoint",
    "input_size",
    "mean",
    "std",
    "model_channels",
    "model_labels",
}


def _command(title: str, command: argparse.ArgumentParser, schema: object) -> list[str]:
    parts = [f"\n## `convlens {title}`\n", f"{command.description}\n"]
    options = [a for a in command._actions if a.option_strings and a.dest not in _SHARED]
    positionals = [
        a
        for a in command._actions
        if not a.option_strings and not isinstance(a, argparse._SubParsersAction)
    ]
    if positionals or options:
        parts.append("\n| argument | meaning |\n|---|---|")
        for a in positionals:
            parts.append(f"| `{a.metavar or a.dest}` | {a.help} |")
        for a in options:
            parts.append(f"| `{', '.join(a.option_strings)}` | {a.help} |")
    if schema:
        parts.append(
            "\n`--json` output schema:\n\n```json\n" + json.dumps(schema, indent=2) + "\n```"
        )
    return parts


def render() -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    parts = [HEADER]
    for module_name in _command_modules():
        module = importlib.import_module(f"convlens.cli.{module_name}")
        name = module_name.removeprefix("cmd_")
        name = name if name in sub.choices else name.replace("_", "-")
        command = sub.choices[name]
        groups = [a for a in command._actions if isinstance(a, argparse._SubParsersAction)]
        if not groups:
            parts += _command(name, command, getattr(module, "SCHEMA", None))
            continue
        # a command group (convlens robustness ...): one section per subcommand
        parts += [f"\n## `convlens {name}`\n", f"{command.description}\n"]
        schemas = getattr(module, "SCHEMAS", {})
        for sub_name, sub_command in groups[0].choices.items():
            parts += _command(f"{name} {sub_name}", sub_command, schemas.get(sub_name))
    return "\n".join(parts) + "\n"


def main() -> None:
    out = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
    out.write_text(render())
    print(out)


if __name__ == "__main__":
    main()
