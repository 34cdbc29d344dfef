"""The shape of the package: domain packages are plain Python, the Airflow layer is split by role.

Domain packages (cache, graph, rightsizing, metrics, waste, gpu, spot) never import Airflow or effopt's
Airflow layer, at module level or inside a function: they run, and are tested, without Airflow.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "plugins" / "effopt"
DOMAIN = ("cache", "graph", "rightsizing", "metrics", "waste", "gpu", "spot")
AIRFLOW_LAYER = ("effopt.hooks", "effopt.operators", "effopt.sensors", "effopt.triggers", "effopt.decorators",
                 "effopt.airflow_settings", "effopt.listener", "effopt.plugin", "effopt.www", "effopt.xcom",
                 "effopt.compiler", "effopt.policies", "effopt.standalone")
#: (package, what it must not import): usage series flow from metrics into right-sizing and waste, never back.
ONE_WAY = (("metrics", "rightsizing"), ("metrics", "waste"), ("cache", "graph"), ("gpu", "spot"), ("spot", "gpu"))


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            out.append((node.lineno, base))
    return out


def violations(package_dir: Path) -> list[str]:
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        for line, module in imports(path):
            if module == "airflow" or module.startswith("airflow.") or any(
                    module == layer or module.startswith(layer + ".") for layer in AIRFLOW_LAYER):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    return found


@pytest.mark.parametrize("domain", DOMAIN)
def test_domain_packages_import_neither_airflow_nor_the_airflow_layer(domain):
    assert (PACKAGE / domain).is_dir(), domain
    assert violations(PACKAGE / domain) == []


@pytest.mark.parametrize(("one", "other"), ONE_WAY)
def test_dependencies_between_domain_packages_go_one_way(one, other):
    uses = [f"{p.name}:{line}" for p in (PACKAGE / one).rglob("*.py") for line, m in imports(p)
            if m == f"effopt.{other}" or m.startswith(f"effopt.{other}.")]
    assert uses == [], f"effopt.{one} imports effopt.{other}: {uses}"


def test_the_check_finds_an_airflow_import_in_a_domain_package(tmp_path, monkeypatch):
    fake = tmp_path / "effopt" / "gpu"
    fake.mkdir(parents=True)
    (fake / "leak.py").write_text("def f():\n    from airflow.sdk import BaseHook\n"
                                  "    from effopt.hooks import cache\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "effopt")
    assert violations(fake) == ["effopt/gpu/leak.py:2 imports airflow.sdk", "effopt/gpu/leak.py:3 imports effopt.hooks"]


def test_sensors_and_triggers_are_packages_of_the_airflow_layer():
    assert (PACKAGE / "sensors" / "__init__.py").is_file() and (PACKAGE / "triggers" / "__init__.py").is_file()
