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


@pytest.fixture(scope="module")
def clean_venv(wheel, tmp_path_factory) -> Path:
    """A new virtualenv with the pinned runtime set and the wheel, nothing from this checkout on its path.

    uv installs from its local cache (``make install`` filled it), so no network is needed."""
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed (make install-dev installs it)")
    venv = tmp_path_factory.mktemp("clean") / "venv"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True, timeout=300)
    res = subprocess.run([uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "--offline",
                          "-r", str(REPO / "requirements.txt"), "-c", str(REPO / "constraints.txt"), str(wheel)],
                         capture_output=True, text=True, timeout=900)
    if res.returncode != 0:  # a cache without one of the pins: the network is allowed to fill it
        res = subprocess.run([uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"),
                              "-r", str(REPO / "requirements.txt"), "-c", str(REPO / "constraints.txt"), str(wheel)],
                             capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return venv


def test_an_installed_wheel_renders_a_waste_report_and_prices_a_plan_with_no_paths_set(clean_venv, tmp_path):
    """Templates, the rate table and the spot catalog are package data: nothing is read from a checkout."""
    code = textwrap.dedent(
        """
        import numpy as np, effopt
        from effopt.metrics import make_series
        from effopt.prices import load_rate_table
        from effopt.rightsizing.apply import ResourceChange, Resources, WorkloadRef, build_plan
        from effopt.spot.catalog import catalog_for
        from effopt.waste import WorkloadUsage
        from effopt.waste.service import build_report

        rates = load_rate_table()
        t = 1.7e9 + 300.0 * np.arange(288)
        cpu = make_series("ns/api", "app", "cpu", t, np.full(t.size, 0.2), request=4.0)
        report = build_report([WorkloadUsage("ns/api", "app", cpu=cpu)], rates)
        change = ResourceChange(WorkloadRef("Deployment", "ns", "api"), "app", Resources(cpu_request=4.0),
                                Resources(cpu_request=0.5), "test")
        plan = build_plan([change], rates, now=1.8e9)
        print(effopt.__file__)
        print(rates.path)
        print("waste" in report.html_page and "over_provisioned" in report.html_page)
        print(plan.items[0].monthly_cost_delta < 0)
        print(len(catalog_for("snapshot").instance_types()) > 10)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "AIRFLOW__EFFOPT__"))}
    env["AIRFLOW_HOME"] = str(tmp_path / "home")
    res = subprocess.run([str(clean_venv / "bin" / "python"), "-c", code], env=env, capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    where, table, rendered, priced, catalog = res.stdout.strip().splitlines()[-5:]
    assert where.startswith(str(clean_venv)) and table.startswith(str(clean_venv))
    assert rendered == priced == catalog == "True"
