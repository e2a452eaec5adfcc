"""The wheel case of DESIGN §1: a built wheel installs only ``kasloop`` and every sub-package imports.

The four top-level source folders (graphs/, nodes/, tools/, checkpoints/) are
mapped to ``kasloop.*`` by ``package-dir``; a wheel must carry them under
``kasloop/`` and must not install a top-level ``tools`` (or ``graphs`` ...).

The wheel is built from a copy of the source tree (so the build never writes
``build/`` or ``*.egg-info`` into the working copy others are editing) with
``python -m build --wheel --no-isolation`` and installed into a fresh venv
with ``pip install --no-deps --no-index``. That venv sees the dev venv's
dependencies through a plain path line in a ``.pth`` file: such a line only
appends the folder to ``sys.path`` and does not run the ``.pth`` files inside
it, so kasloop's editable install there stays invisible.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUBPACKAGES = ["kasloop", "kasloop.graphs", "kasloop.nodes", "kasloop.tools", "kasloop.checkpoints", "kasloop.cli", "kasloop.channels"]
TOP_LEVEL_NAMES_THAT_MUST_NOT_EXIST = ["tools", "graphs", "nodes", "checkpoints"]


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    python: Path
    site_packages: Path
    env: dict[str, str]
    workdir: Path


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _check(proc: subprocess.CompletedProcess[str], what: str) -> None:
    assert proc.returncode == 0, f"{what} failed with exit {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PYTHONNOUSERSITE"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("packaging")
    src = root / "src"
    shutil.copytree(
        REPO, src, symlinks=True,
        ignore=shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".kasloop", ".pytest_cache", "*.pyc"),
    )
    env = _clean_env()
    dist = root / "dist"
    build = _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist)], cwd=src, env=env)
    _check(build, "python -m build --wheel --no-isolation")
    [wheel] = dist.glob("kasloop-*.whl")

    venv = root / "fresh-venv"
    _check(_run([sys.executable, "-m", "venv", str(venv)], cwd=root, env=env), "python -m venv")
    python = venv / "bin" / "python"
    _check(_run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)], cwd=root, env=env), "pip install wheel")

    site_packages = Path(_run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=root, env=env
    ).stdout.strip())
    assert site_packages.is_dir() and site_packages.resolve().is_relative_to(venv.resolve())
    dev_site = Path(sysconfig.get_paths()["purelib"])
    assert dev_site.resolve() != site_packages.resolve()
    (site_packages / "zz_dev_dependencies.pth").write_text(f"{dev_site}\n")

    workdir = root / "elsewhere"  # not the repo: nothing importable from the cwd
    workdir.mkdir()
    return Installed(wheel=wheel, venv=venv, python=python, site_packages=site_packages, env=env, workdir=workdir)


def _python(inst: Installed, code: str) -> subprocess.CompletedProcess[str]:
    return _run([str(inst.python), "-c", code], cwd=inst.workdir, env=inst.env, timeout=120)


def test_every_subpackage_imports_from_the_fresh_venv(installed: Installed) -> None:
    modules = SUBPACKAGES + ["kasloop.graphs.agent", "kasloop.nodes.act", "kasloop.tools.files", "kasloop.checkpoints.sqlite"]
    code = (
        "import importlib, json, sys\n"
        "import kasloop, kasloop.graphs, kasloop.nodes, kasloop.tools, kasloop.checkpoints, kasloop.cli\n"
        "print(kasloop.__file__)\n"
        f"print(json.dumps({{m: importlib.import_module(m).__file__ for m in {modules!r}}}))\n"
    )
    proc = _python(installed, code)
    _check(proc, "importing kasloop from the wheel")
    first, files_json = proc.stdout.strip().splitlines()[-2:]
    kasloop_file = Path(first).resolve()
    assert kasloop_file.is_relative_to(installed.venv.resolve()), f"kasloop came from {kasloop_file}, not the fresh venv"
    assert not kasloop_file.is_relative_to(REPO), "the editable install leaked into the wheel venv"
    for module, file in json.loads(files_json).items():
        path = Path(file).resolve()
        assert path.is_relative_to(installed.site_packages.resolve() / "kasloop"), f"{module} imported from {path}"


def test_dependencies_come_from_the_dev_venv_but_its_editable_install_does_not(installed: Installed) -> None:
    proc = _python(installed, "import langgraph, sys; print(langgraph.__path__[0]); print(any('__editable__' in k for k in sys.modules))")
    _check(proc, "importing a dependency")
    langgraph_dir, editable_loaded = proc.stdout.strip().splitlines()
    assert Path(langgraph_dir).resolve().is_relative_to(Path(sysconfig.get_paths()["purelib"]).resolve())
    assert editable_loaded == "False"


@pytest.mark.parametrize("name", TOP_LEVEL_NAMES_THAT_MUST_NOT_EXIST)
def test_no_top_level_source_folder_name_is_importable(installed: Installed, name: str) -> None:
    proc = _python(installed, f"import {name}")
    assert proc.returncode != 0, f"`import {name}` worked in the wheel venv: a top-level package was installed"
    assert f"No module named '{name}'" in proc.stderr, proc.stderr
    assert not (installed.site_packages / name).exists()
    assert not (installed.site_packages / f"{name}.py").exists()


def test_package_data_is_readable_from_the_installed_wheel(installed: Installed) -> None:
    proc = _python(
        installed,
        "from importlib import resources; import json\n"
        "text = resources.files('kasloop').joinpath('demo/level3.jsonl').read_text()\n"
        "print(len([json.loads(l) for l in text.splitlines() if l.strip()]))",
    )
    _check(proc, "reading kasloop/demo/level3.jsonl")
    assert int(proc.stdout.strip()) >= 2


def test_wheel_file_list(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as zf:
        names = zf.namelist()
    for required in [
        "kasloop/__init__.py",
        "kasloop/py.typed",
        "kasloop/graphs/__init__.py",
        "kasloop/graphs/agent.py",
        "kasloop/nodes/__init__.py",
        "kasloop/nodes/act.py",
        "kasloop/tools/__init__.py",
        "kasloop/tools/files.py",
        "kasloop/checkpoints/__init__.py",
        "kasloop/checkpoints/sqlite.py",
        "kasloop/cli/__init__.py",
        "kasloop/demo/level3.jsonl",
    ]:
        assert required in names, f"{required} missing from {installed.wheel.name}"
    top = {name.split("/", 1)[0] for name in names}
    assert top == {"kasloop", "kasloop-0.1.0.dist-info"}, sorted(top)
    assert not any("/tests/" in n or n.startswith("tests/") for n in names)
    assert not any(n.endswith(".pyc") for n in names)
    with zipfile.ZipFile(installed.wheel) as zf:
        entry_points = zf.read("kasloop-0.1.0.dist-info/entry_points.txt").decode()
    assert "kasloop = kasloop.cli:main" in entry_points


def test_installed_console_script_help_exits_0(installed: Installed) -> None:
    script = installed.venv / "bin" / "kasloop"
    assert script.exists()
    proc = _run([str(script), "--help"], cwd=installed.workdir, env={**installed.env, "COLUMNS": "200"}, timeout=120)
    _check(proc, "kasloop --help")
    for command in ("run", "approvals", "demo"):
        assert command in proc.stdout


def test_installed_demo_runs_end_to_end(installed: Installed) -> None:
    """The demo uses package data, the scripted model, every sub-package and SQLite: a full wheel smoke test."""
    folder = installed.workdir / "demo"
    proc = _run([str(installed.venv / "bin" / "kasloop"), "demo", "--dir", str(folder)],
                cwd=installed.workdir, env={**installed.env, "COLUMNS": "200"}, timeout=120)
    _check(proc, "kasloop demo")
    assert (folder / "workspace" / "report.md").exists()
    assert not (folder / "workspace" / "draft.txt").exists()
