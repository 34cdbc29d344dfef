"""effopt installs two ways: pip (entry point) and Airflow's plugins folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    cmd = [uv, "build", "--wheel", "--out-dir", str(out), str(REPO)] if uv else \
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(REPO)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    (whl,) = out.glob("effopt-*.whl")
    return whl


def test_wheel_maps_plugins_effopt_and_declares_the_entry_point(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        text = zf.read(entry_points).decode()
    assert {"effopt/__init__.py", "effopt/plugin.py", "effopt/listener.py", "effopt/store.py"} <= names
    assert not any(n.startswith("plugins/") for n in names)
    assert "[airflow.plugins]\neffopt = effopt.plugin:EffoptPlugin" in text


def test_pip_installed_plugin_loads_through_its_entry_point(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target),
                    str(wheel)], check=True, timeout=300)
    code = textwrap.dedent(
        """
        from importlib.metadata import entry_points
        (ep,) = [e for e in entry_points(group="airflow.plugins") if e.name == "effopt"]
        plugin = ep.load()
        import effopt
        print(plugin.name, [m.__name__ for m in plugin.listeners], effopt.__file__)
        # The plugins-folder shim stands down when the entry point exists (no duplicate registration).
        import runpy, sys
        ns = runpy.run_path(sys.argv[1])
        print("shim-defines-plugin", "EffoptPlugin" in ns)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(target), "AIRFLOW_HOME": str(tmp_path / "home")}
    shim = str(REPO / "plugins" / "effopt_plugin.py")
    res = subprocess.run([sys.executable, "-c", code, shim], env=env, capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    first, second = res.stdout.strip().splitlines()[-2:]
    assert first.startswith("effopt ['effopt.listener'] ") and str(target) in first
    assert second == "shim-defines-plugin False"


def test_plugins_folder_hides_the_package_from_airflows_file_scan():
    # Airflow imports every .py under plugins/ as a top-level module unless ignored;
    # the package must be imported as a package (by the shim), not file by file.
    assert (REPO / "plugins" / ".airflowignore").read_text().split() == ["effopt/"]
    assert "from effopt.plugin import EffoptPlugin" in (REPO / "plugins" / "effopt_plugin.py").read_text()
