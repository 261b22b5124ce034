"""The README is a map and the manuals' commands run: every command they show answers `--help`, every
file the map names exists, and the code keeps its two floors without an import cycle."""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PACKAGES = ("manifests", "model", "curation", "training")


def shown_commands() -> dict[tuple[str, ...], str]:
    """Each distinct entry point of a `python ...` command in the docs (bash blocks and inline code)
    -> the doc that shows it."""
    found: dict[tuple[str, ...], str] = {}
    for doc in DOCS:
        text = doc.read_text()
        for block in re.findall(r"```bash\n(.*?)```", text, re.S) + re.findall(r"(?<!`)`(python [^`\n]+)`", text):
            text = re.sub(r"\\\n\s*", " ", block)
            for line in text.splitlines():
                for command in re.split(r"&&|\|\||;|\|", line.split("#", 1)[0]):
                    words = shlex.split(command, posix=True) if command.strip() else []
                    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
                        words = words[1:]  # VAR=value python ...
                    if not words or words[0] != "python":
                        continue
                    if words[1:2] == ["-m"]:
                        module = words[2]
                        if module in ("pytest", "pip", "torch.distributed.run"):
                            continue
                        sub = words[3:4] if module == "manifests" and len(words) > 3 else []
                        found.setdefault(("-m", module, *sub), doc.name)
                    elif len(words) > 1 and words[1].endswith(".py"):
                        found.setdefault((words[1],), doc.name)
    return found


def test_every_command_the_docs_show_answers_help():
    commands = shown_commands()
    assert {
        ("curation/run.py",),
        ("training/train.py",),
        ("-m", "model.generate"),
        ("-m", "manifests", "compact"),
    } <= set(commands)

    def run(entry):
        return entry, subprocess.run([sys.executable, *entry, "--help"], cwd=REPO, capture_output=True, text=True,
                                     timeout=300)  # fmt: skip

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, commands))
    broken = [f"python {' '.join(e)} (in {commands[e]}): rc {r.returncode} {r.stderr[-300:]}" for e, r in results
              if r.returncode != 0 or "usage" not in r.stdout.lower()]  # fmt: skip
    assert not broken, "\n".join(broken)


def test_every_file_and_manual_the_readme_names_exists():
    readme = (REPO / "README.md").read_text()
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (REPO / link).is_file(), link
    named = set()
    for line in readme.splitlines():  # `curation/probe.py`, `split.py`: a bare name is in the folder before it
        folder = None
        for token in re.findall(r"`([\w/.]+\.py)`", line):
            if "/" in token:
                folder = token.rsplit("/", 1)[0]
                named.add(token)
            elif folder:
                named.add(f"{folder}/{token}")
    missing = sorted(p for p in named if not (REPO / p).is_file())
    assert len(named) > 25 and not missing, missing
    for line in readme.splitlines():  # the folders table: every folder of the tree, and nothing else
        if line.startswith("| `") and line.split("`")[1].endswith("/"):
            assert (REPO / line.split("`")[1]).is_dir(), line


def imports_of(path: Path, run_time: bool = False) -> set[str]:
    """Project modules a file imports (at the top or inside functions); `run_time`: only those that
    execute, leaving out the `if TYPE_CHECKING:` blocks (type hints between two modules that call
    each other, such as a stage and its driver, form no import cycle)."""
    tree = ast.parse(path.read_text())
    skipped = set()
    if run_time:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                skipped |= {id(inner) for inner in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
        found |= {n for n in names if n.split(".")[0] in PACKAGES}
    return found


def test_two_floors_and_no_import_cycle():
    graph = {
        ".".join(p.relative_to(REPO).with_suffix("").parts): imports_of(p)
        for package in PACKAGES
        for p in (REPO / package).glob("*.py")
    }
    floors = {"manifests": 0, "model": 0, "curation": 1, "training": 1}
    for module, imported in graph.items():
        for other in imported:
            top, their = module.split(".")[0], other.split(".")[0]
            assert floors[their] <= floors[top], f"{module} (bottom floor) imports {other}"
            assert {top, their} != {"curation", "training"}, (
                f"{module} imports {other}: the jobs never import each other"
            )

    executed = {
        ".".join(p.relative_to(REPO).with_suffix("").parts): imports_of(p, run_time=True)
        for package in PACKAGES
        for p in (REPO / package).glob("*.py")
    }

    def cycle_from(start, node, path):
        for nxt in executed.get(node, ()):
            nxt = nxt if nxt in executed else nxt.rsplit(".", 1)[0]  # `from pkg.mod import name`
            if nxt == start:
                return [*path, nxt]
            if nxt not in path and nxt in executed:
                found = cycle_from(start, nxt, [*path, nxt])
                if found:
                    return found
        return None

    cycles = [c for m in executed if (c := cycle_from(m, m, [m]))]
    assert not cycles, " -> ".join(cycles[0])


@pytest.mark.parametrize("package", ["manifests", "curation", "training"])
def test_no_function_over_80_lines_outside_model(package):
    long = []
    for path in sorted((REPO / package).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long.append(
                    f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
                )
    assert not long, "; ".join(long)


@pytest.mark.parametrize("package", ["manifests", "curation", "training"])
def test_no_file_over_500_lines_outside_model(package):
    long = [f"{path.relative_to(REPO)} ({n} lines)" for path in sorted((REPO / package).glob("*.py"))
            if (n := len(path.read_text().splitlines())) > 500]  # fmt: skip
    assert not long, "split by job: " + "; ".join(long)


@pytest.mark.parametrize("package", ["manifests", "model", "curation", "training"])
def test_every_module_has_a_direct_test_in_the_mirrored_tree(package):
    """tests/<package>/test_<module>.py exists for every module and imports it (or runs it as a command)."""
    missing = []
    for source in sorted((REPO / package).glob("*.py")):
        if source.stem in ("__init__", "__main__"):
            continue
        test = REPO / "tests" / package / f"test_{source.stem}.py"
        module = f"{package}.{source.stem}"
        text = test.read_text() if test.is_file() else ""
        if not re.search(rf"(from {re.escape(module)} import|import {re.escape(module)}\b|-m\", \"{re.escape(module)}\"|"
                         rf"{package}/{source.stem}\.py|{re.escape(module)}\.)", text):  # fmt: skip
            missing.append(f"{test.relative_to(REPO)} (for {package}/{source.name})")
    assert not missing, "modules without a direct test: " + ", ".join(missing)
