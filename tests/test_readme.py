"""The README's commands work as written.

Every ``console`` block right after a ``<!-- readme-test: output -->`` comment is run, command by command
(``$ `` lines, with ``\\`` continuations), in the repository root with ``bash``, and what each command
prints (its standard output, or its error output when it prints nothing else; a progress bar on stderr is not
part of it) must be what the block shows below it: trailing spaces aside, and a line ``...`` standing for any
number of lines.  A block after ``<!-- readme-test: runs -->`` must only run without an error.  Other blocks
(``make run``, commands against a running Airflow, Docker) are not run here; the end-to-end tests cover them.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MARK = re.compile(r"<!-- readme-test: (output|runs) -->\s*\n```console\n(.*?)```", re.S)


def commands(block: str) -> list[tuple[str, list[str]]]:
    """(command, expected output lines) for each ``$`` command of a console block."""
    out: list[tuple[str, list[str]]] = []
    lines = block.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            raise ValueError(f"console block line {lines[i]!r} is neither a command nor the output of one")
        cmd = lines[i][2:]
        while cmd.endswith("\\"):
            i += 1
            cmd = cmd[:-1] + " " + lines[i].strip()
        i += 1
        expected = []
        while i < len(lines) and not lines[i].startswith("$ "):
            expected.append(lines[i])
            i += 1
        out.append((cmd, expected))
    return out


def matches(expected: list[str], actual: list[str]) -> bool:
    """``expected`` equals ``actual`` line by line, ``...`` matching any run of lines (also none)."""
    exp = [e.rstrip() for e in expected]
    act = [a.rstrip() for a in actual]
    segments: list[list[str]] = [[]]
    for line in exp:
        if line == "...":
            segments.append([])
        else:
            segments[-1].append(line)
    if len(segments) == 1:
        return exp == act
    first, *middle, last = segments
    if act[: len(first)] != first or (last and act[len(act) - len(last):] != last) or len(act) < len(first) + len(last):
        return False
    pos, end = len(first), len(act) - len(last)
    for seg in middle:
        found = next((i for i in range(pos, end - len(seg) + 1) if act[i: i + len(seg)] == seg), None)
        if found is None:
            return False
        pos = found + len(seg)
    return True


def _cases() -> list[tuple[str, str, list[str]]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    cases = []
    for mode, block in MARK.findall(text):
        for cmd, expected in commands(block):
            cases.append((mode, cmd, expected))
    return cases


CASES = _cases()


def test_the_readme_marks_commands_to_check():
    assert sum(1 for mode, _, _ in CASES if mode == "output") >= 4


@pytest.mark.parametrize(("mode", "command", "expected"), CASES, ids=[c[1].split("\n")[0][:60] for c in CASES])
def test_readme_command(mode, command, expected, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_HOME", "AIRFLOW__EFFOPT__"))}
    env["COLUMNS"] = "200"
    res = subprocess.run(["bash", "-c", command], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    shown = res.stdout or res.stderr  # what a command prints: its error alone when it prints nothing else
    if mode == "runs":
        assert res.returncode == 0, f"{command!r} failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
        return
    assert matches(expected, shown.splitlines()), (
        f"README shows for {command!r}:\n" + "\n".join(expected) + "\n\nbut it prints:\n" + shown)


def test_matches_handles_ellipses():
    assert matches(["a", "...", "d"], ["a", "b", "c", "d"])
    assert matches(["a", "...", "d"], ["a", "d"])
    assert not matches(["a", "d"], ["a", "b", "d"])
    assert matches(["x  "], ["x"])


def test_the_architecture_section_names_every_entry_of_the_package():
    """The README's tree of ``plugins/effopt`` is the tree as it is: every module and package, nothing else."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text[text.index("## Architecture"):].split("```")[1]
    names = set()
    for line in block.split("plugins/effopt_plugin.py")[0].splitlines()[1:]:
        for token in line.split():  # the entries lead each line; the description follows them
            if not re.fullmatch(r"[A-Za-z_][\w.]*\.py|[A-Za-z_]\w*/", token):
                break
            names.add(token)
    package = REPO / "plugins" / "effopt"
    entries = {p.name + ("/" if p.is_dir() else "") for p in package.iterdir() if p.name != "__pycache__"}
    entries.discard("__init__.py")
    assert entries - names == set(), f"in plugins/effopt but not in the README: {sorted(entries - names)}"
    assert names - entries == set(), f"in the README but not in plugins/effopt: {sorted(names - entries)}"
