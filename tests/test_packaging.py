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

kasloop is not on PyPI, so the README's install commands are tested as written
too: its ``git+file://`` line installs a fresh commit of a copy of the tree,
its ``pip wheel`` line builds the wheel it then installs with an extra, and
docs/operations.md's ``langgraph.json`` puts a clone into a LangGraph Server
image. Builds use the dev venv's setuptools (``--no-build-isolation``) and
nothing from an index (``--no-index``, ``--no-deps``): no network.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUBPACKAGES = ["kasloop", "kasloop.graphs", "kasloop.nodes", "kasloop.tools", "kasloop.checkpoints", "kasloop.cli", "kasloop.channels"]
TOP_LEVEL_NAMES_THAT_MUST_NOT_EXIST = ["tools", "graphs", "nodes", "checkpoints"]
README = (REPO / "README.md").read_text()
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
# Files a built kasloop must carry: one module per sub-package and the package data.
INSTALLED_FILES = [
    "kasloop/__init__.py",
    "kasloop/py.typed",
    "kasloop/graphs/agent.py",
    "kasloop/nodes/act.py",
    "kasloop/tools/files.py",
    "kasloop/checkpoints/sqlite.py",
    "kasloop/cli/__init__.py",
    "kasloop/channels/__init__.py",
    "kasloop/demo/level3.jsonl",
    "kasloop/localmodel/qwen25-tools.jinja",
]
# What keeps pip off the network and out of the user's caches in these tests.
OFFLINE_PIP = ["--no-build-isolation", "--no-index", "--no-cache-dir"]


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


def _copy_tree(dest: Path) -> Path:
    """A copy of the working tree without venv, git data or build output, so builds never write into the repo."""
    shutil.copytree(
        REPO, dest, symlinks=True,
        ignore=shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".kasloop", ".pytest_cache", "*.pyc"),
    )
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("packaging")
    src = _copy_tree(root / "src")
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


# --- The README's install commands, as written -----------------------------------------------------


@dataclass(frozen=True)
class GitRepo:
    path: Path
    commit: str
    env: dict[str, str]
    root: Path


def _readme_command(prefix: str) -> list[str]:
    """The README line that starts with `prefix`, split as the shell would (trailing comment dropped)."""
    for line in README.splitlines():
        if line.startswith(prefix):
            return shlex.split(line, comments=True)
    pytest.fail(f"README.md has no line starting with {prefix!r}")


@pytest.fixture(scope="module")
def git_repo(tmp_path_factory: pytest.TempPathFactory) -> GitRepo:
    """A copy of the working tree, committed to a fresh git repository: what a clone of kasloop holds."""
    root = tmp_path_factory.mktemp("git-install")
    repo = _copy_tree(root / "kasloop")
    env = _clean_env()
    (root / "tmp").mkdir()
    env["TMPDIR"] = str(root / "tmp")  # pip clones and builds here, not in the shared /tmp
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    env["GIT_CONFIG_GLOBAL"] = os.devnull
    git = ["git", "-c", "user.name=kasloop tests", "-c", "user.email=tests@kasloop.invalid", "-c", "commit.gpgsign=false"]
    _check(_run([*git, "init", "-q"], cwd=repo, env=env), "git init")
    _check(_run([*git, "add", "-A"], cwd=repo, env=env), "git add")
    _check(_run([*git, "commit", "-q", "-m", "snapshot of the working tree"], cwd=repo, env=env), "git commit")
    commit = _run(["git", "rev-parse", "HEAD"], cwd=repo, env=env).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{40}", commit), commit
    return GitRepo(path=repo, commit=commit, env=env, root=root)


def _assert_installed(target: Path) -> None:
    for name in INSTALLED_FILES:
        installed = target / name
        assert installed.is_file(), f"{name} missing from the install in {target}"
        if name.endswith((".jsonl", ".jinja")):
            assert installed.read_bytes() == (REPO / name).read_bytes(), f"{name} differs from the source tree"
    for name in TOP_LEVEL_NAMES_THAT_MUST_NOT_EXIST:
        assert not (target / name).exists(), f"a top-level `{name}` was installed"
    [dist_info] = target.glob("kasloop-*.dist-info")
    metadata = (dist_info / "METADATA").read_text()
    assert f"Version: {VERSION}" in metadata
    assert "Provides-Extra: postgres" in metadata
    assert re.search(r'^Requires-Dist: langgraph-checkpoint-postgres.*extra == "postgres"', metadata, re.M), metadata[:2000]
    assert "kasloop = kasloop.cli:main" in (dist_info / "entry_points.txt").read_text()


def _import_from(target: Path, cwd: Path, env: dict[str, str]) -> None:
    """Import kasloop from `target` (ahead of the dev venv's editable install) and read its package data."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "import kasloop, kasloop.graphs.agent, kasloop.nodes.act, kasloop.tools.files, kasloop.checkpoints.sqlite, kasloop.cli\n"
        "from importlib import resources\n"
        "print(kasloop.__file__)\n"
        "print(len(resources.files('kasloop').joinpath('localmodel/qwen25-tools.jinja').read_text()))\n"
        "print(len(resources.files('kasloop').joinpath('demo/level3.jsonl').read_text()))\n"
    )
    proc = _run([sys.executable, "-c", code, str(target)], cwd=cwd, env=env, timeout=120)
    _check(proc, "importing kasloop from the install")
    kasloop_file, template_chars, script_chars = proc.stdout.strip().splitlines()[-3:]
    assert Path(kasloop_file).resolve().is_relative_to(target.resolve()), kasloop_file
    assert int(template_chars) > 0 and int(script_chars) > 0


def test_the_readme_git_url_command_installs_kasloop_from_a_commit(git_repo: GitRepo) -> None:
    command = _readme_command('pip install "kasloop[postgres] @ git+file:///path/to/kasloop"')
    assert command[:2] == ["pip", "install"] and len(command) == 3, command
    requirement = command[2].replace("/path/to/kasloop", str(git_repo.path))
    target = git_repo.root / "site-git"
    proc = _run(
        [sys.executable, "-m", "pip", "install", "--no-deps", *OFFLINE_PIP, "--target", str(target), requirement],
        cwd=git_repo.root, env=git_repo.env,
    )
    _check(proc, f"pip install {requirement!r}")
    _assert_installed(target)
    [dist_info] = target.glob("kasloop-*.dist-info")
    direct_url = json.loads((dist_info / "direct_url.json").read_text())
    assert direct_url["url"] == f"file://{git_repo.path}"
    assert direct_url["vcs_info"] == {"vcs": "git", "commit_id": git_repo.commit}
    _import_from(target, git_repo.root, git_repo.env)


def test_the_readme_wheel_commands_build_and_install_kasloop(git_repo: GitRepo) -> None:
    build = _readme_command("python -m pip wheel ")
    assert build[:4] == ["python", "-m", "pip", "wheel"], build
    _check(_run([sys.executable, *build[1:], *OFFLINE_PIP], cwd=git_repo.path, env=git_repo.env), " ".join(build))
    install = _readme_command('pip install "dist/kasloop-')
    assert install[:2] == ["pip", "install"] and len(install) == 3, install
    wheel_with_extra = install[2]
    wheel = git_repo.path / wheel_with_extra.split("[")[0]
    assert wheel.is_file(), f"the README names {wheel.name}; the build made {sorted(p.name for p in (git_repo.path / 'dist').iterdir())}"
    assert wheel.name == f"kasloop-{VERSION}-py3-none-any.whl"
    target = git_repo.root / "site-wheel"
    proc = _run(
        [sys.executable, "-m", "pip", "install", "--no-deps", *OFFLINE_PIP, "--target", str(target), wheel_with_extra],
        cwd=git_repo.path, env=git_repo.env,
    )
    _check(proc, f"pip install {wheel_with_extra!r}")
    _assert_installed(target)
    _import_from(target, git_repo.root, git_repo.env)


def test_the_documented_langgraph_server_image_installs_a_clone(git_repo: GitRepo) -> None:
    """docs/operations.md: kasloop is not on PyPI, so the image gets it from a clone in the project folder."""
    langgraph = Path(sys.executable).parent / "langgraph"
    if not langgraph.exists():
        pytest.skip("langgraph-cli is not installed (the studio extra)")
    doc = (REPO / "docs" / "operations.md").read_text()
    [config] = [block for block in re.findall(r"```json\n(.*?)```", doc, re.S) if "vendor/kasloop" in block]
    project = git_repo.root / "project"
    project.mkdir()
    (project / "kasloop.toml").write_text('autonomy = 3\nmodel = "openai:gpt-4o-mini"\n')
    (project / "langgraph.json").write_text(config)
    [dependency] = [dep for dep in json.loads(config)["dependencies"] if dep != "."]
    _check(_run(["git", "clone", "-q", str(git_repo.path), str(project / dependency)], cwd=project, env=git_repo.env), "git clone")
    env = {**git_repo.env, "LANGGRAPH_CLI_NO_ANALYTICS": "1", "LANGGRAPH_NO_VERSION_CHECK": "true", "LANGSMITH_TRACING": "false"}
    proc = _run([str(langgraph), "dockerfile", str(project / "Dockerfile")], cwd=project, env=env, timeout=120)
    _check(proc, "langgraph dockerfile")
    dockerfile = (project / "Dockerfile").read_text()
    assert f"ADD {dependency} /deps/kasloop" in dockerfile, dockerfile
    assert '"agent": "kasloop.graphs.studio:agent"' in dockerfile and '"team": "kasloop.graphs.studio:team"' in dockerfile
    [added] = re.findall(r"^ADD \. (\S+)$", dockerfile, re.M)
    [workdir] = re.findall(r"^WORKDIR (\S+)$", dockerfile, re.M)
    assert workdir == added, "the server starts in the folder that holds kasloop.toml"
