"""Write each stage's code deps in dvc.yaml: every project module its `python -m` module
imports, directly or not (pipeline.runtime.imports.closure), so declared code = code run.

    python -m pipeline.dvc_deps [--check] [--dvc-yaml FILE ...]        (or: make deps)

By default both pipeline files: dvc.yaml and open/dvc.yaml (whose wdir is the project root, so
its paths read like dvc.yaml's).

Only the `pipeline/...py` entries of each stage's `deps` change: the stage's own module first,
then the others sorted, where the first of them stood. Every other line (data deps, templated
entries, comments, params, outs) stays byte for byte. --check writes nothing and exits 1 with
one `error:` line naming the stale stages (tests/stages/test_dvc_yaml.py runs it).

A dev command, not a DVC stage: no stage imports it, so editing it reruns nothing.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.runtime.errors import PipelineError, stage_entry_point
from pipeline.runtime.imports import closure, module_file
from pipeline.runtime.paths import DVC_FILES

FIX = "run `make deps` (python -m pipeline.dvc_deps) to rewrite them"
STAGE_CMD = re.compile(r"python -m (pipeline(?:\.\w+)+)")
# A line with its break, split where PyYAML counts lines (its marks number these lines).
YAML_LINE = re.compile(r".*?(?:\r\n|[\r\n\x85\u2028\u2029])|.+", re.S)


@dataclass
class DepsBlock:
    """One stage's deps list as lines of the file: where its code deps are and what they should be."""

    stage: str
    code_lines: list[int]  # 0-based line numbers of the `- pipeline/...py` entries, in file order
    insert_at: int  # where the regenerated entries go: the first code entry's line, else the first dep's
    lines: list[str]  # the regenerated entries' lines (an entry kept as is keeps its own line)
    stale: bool


def is_code_dep(dep: str) -> bool:
    return dep.startswith("pipeline/") and dep.endswith(".py")


def code_deps(module: str) -> list[str]:
    """The modules `module` runs: its own file first (stage_module checked it has one), then the rest
    of its closure sorted."""
    own = module_file(module)
    return [own, *sorted(closure(module) - {own})]


def mapping_value(node: yaml.Node, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    return next((value for k, value in node.value if isinstance(k, yaml.ScalarNode) and k.value == key), None)


def stage_module(name: str, stage: yaml.Node, where: str) -> str:
    cmd = mapping_value(stage, "cmd")
    found = STAGE_CMD.fullmatch(cmd.value.strip()) if isinstance(cmd, yaml.ScalarNode) else None
    if found is None:
        raise PipelineError(
            f"{where}: stage '{name}': cmd is not `python -m pipeline.<module>`, so its code deps "
            "cannot be read from the imports; run the stage through a pipeline module"
        )
    if module_file(found.group(1)) is None:
        raise PipelineError(
            f"{where}: stage '{name}': its cmd runs {found.group(1)}, which has no file in this "
            "checkout; fix the cmd or add the module"
        )
    return found.group(1)


def one_per_line(node: yaml.ScalarNode, lines: list[str]) -> bool:
    """The entry is `- path` alone on its line (a trailing comment allowed): safe to move or drop."""
    start, end = node.start_mark, node.end_mark
    rest = lines[start.line][end.column :].strip()
    return start.line == end.line and lines[start.line][: start.column].strip() == "-" and rest[:1] in ("", "#")


def deps_block(name: str, stage: yaml.Node, lines: list[str], where: str) -> DepsBlock:
    """Where one stage's code deps are in the file, and the lines they should be."""
    deps = mapping_value(stage, "deps")
    if not isinstance(deps, yaml.SequenceNode) or deps.flow_style or not deps.value:
        raise PipelineError(
            f"{where}: stage '{name}' has no block list of deps (`deps:` then `- path` lines); "
            f"add one with its data deps, then {FIX}"
        )
    code = [n for n in deps.value if isinstance(n, yaml.ScalarNode) and is_code_dep(n.value)]
    for node in code:
        if not one_per_line(node, lines):
            raise PipelineError(
                f"{where}:{node.start_mark.line + 1}: stage '{name}': write each code dep as "
                f"`- {node.value}` on its own line, then {FIX}"
            )
    anchor = code[0] if code else deps.value[0]
    first = lines[anchor.start_mark.line]
    prefix = first[: anchor.start_mark.column]
    newline = first[len(first.rstrip("\r\n")) :] or "\n"
    kept = {n.value: lines[n.start_mark.line] for n in code}
    wanted = code_deps(stage_module(name, stage, where))
    return DepsBlock(
        stage=name,
        code_lines=[n.start_mark.line for n in code],
        insert_at=anchor.start_mark.line,
        lines=[_ended(kept.get(dep, prefix + dep + newline), newline) for dep in wanted],
        stale=[n.value for n in code] != wanted,
    )


def yaml_lines(text: str) -> list[str]:
    return YAML_LINE.findall(text)


def _ended(line: str, newline: str) -> str:
    return line if line.endswith(("\n", "\r")) else line + newline


def deps_blocks(text: str, where: str) -> list[DepsBlock]:
    """Every stage's DepsBlock, in file order."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as err:
        raise PipelineError(f"{where}: not valid YAML ({str(err).splitlines()[0]}); fix it, then {FIX}") from None
    stages = mapping_value(root, "stages") if root is not None else None
    if not isinstance(stages, yaml.MappingNode):
        raise PipelineError(f"{where}: no `stages:` mapping; is this a dvc.yaml?")
    lines = yaml_lines(text)
    return [deps_block(key.value, stage, lines, where) for key, stage in stages.value]


def rewrite(text: str, where: str = "dvc.yaml") -> tuple[str, list[str]]:
    """`text` with every stage's code deps regenerated, and the names of the stages that changed."""
    lines = yaml_lines(text)
    blocks = deps_blocks(text, where)
    # Bottom up, so that each edit leaves the line numbers of the ones above it valid.
    for block in sorted(blocks, key=lambda b: b.insert_at, reverse=True):
        for number in sorted(block.code_lines, reverse=True):
            del lines[number]
        lines[block.insert_at : block.insert_at] = block.lines
    return "".join(lines), [b.stage for b in blocks if b.stale]


def shown(path: Path) -> str:
    """The path as the user would type it: relative to the working directory when below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def write_text_atomically(path: Path, text: str) -> None:
    """Replace the file in one rename: an interrupted run leaves the old dvc.yaml, never half of one."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_bytes(text.encode("utf-8"))
    os.replace(temp, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 with one error line if any stage's code deps are stale",
    )
    parser.add_argument(
        "--dvc-yaml",
        type=Path,
        action="append",
        help="a file to read and rewrite; repeat for several (default: the project's dvc.yaml and open/dvc.yaml)",
    )
    return parser.parse_args(argv)


def read_text(path: Path, where: str) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as err:
        raise PipelineError(f"{where}: cannot read it ({err.strerror}); pass --dvc-yaml PATH") from None
    except UnicodeDecodeError as err:
        raise PipelineError(f"{where}: not UTF-8 text (byte {err.start}); fix the file") from None


def run(argv: list[str] | None = None) -> str:
    """Check or rewrite the files; returns the lines to print. Stale under --check: PipelineError
    (one line for every file). Nothing is written unless every file was read and parsed."""
    args = parse_args(argv)
    rewritten = []
    for path in args.dvc_yaml or list(DVC_FILES):
        where = shown(path)
        rewritten.append((path, where, *rewrite(read_text(path, where), where)))
    stale_files = [(where, stale) for _, where, _, stale in rewritten if stale]
    if args.check and stale_files:
        raise PipelineError(
            "; ".join(
                f"{where}: the code deps of {', '.join(stale)} are not the modules "
                f"{'it imports' if len(stale) == 1 else 'they import'}"
                for where, stale in stale_files
            )
            + f"; {FIX}"
        )
    lines = []
    for path, where, new_text, stale in rewritten:
        if not stale:
            lines.append(f"{where}: every stage's code deps are the modules it imports")
            continue
        write_text_atomically(path, new_text)
        lines.append(f"{where}: rewrote the code deps of {', '.join(stale)}")
    return "\n".join(lines)


@stage_entry_point
def main() -> None:
    print(run())


if __name__ == "__main__":
    main()
