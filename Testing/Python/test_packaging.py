"""Packaging: the wheel's contents and entry points, Python 3.9 syntax, and a torch-free CLI.

The wheel is built from a copy of the source tree (without .venv, runs, .cache, build output),
so the test neither writes build/ and *.egg-info into the checkout nor picks up stale files
from an earlier build/ folder. ``--no-build-isolation`` uses the venv's setuptools (>= 70.1
builds wheels without the ``wheel`` package).
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = REPO_ROOT / "BUSAssist" / "busassist"
PYTHON39 = Path("/root/.pyenv/versions/3.9.18/bin/python")

#: Never copied: environments, training output, caches and earlier build output.
COPY_IGNORE = shutil.ignore_patterns(
    ".venv", "runs", ".cache", ".git", "build", "dist", "*.egg-info", "__pycache__", "*.pyc",
    ".pytest_cache", ".ruff_cache", "results", "out",
)  # fmt: skip

CORE_MODULES = [
    "busassist/__init__.py",
    "busassist/constants.py",
    "busassist/core/__init__.py",
    "busassist/core/io.py",
    "busassist/core/preprocessing.py",
    "busassist/core/inference.py",
    "busassist/core/model_store.py",
    "busassist/training/metrics.py",
    "busassist/apps/__init__.py",
    "busassist/apps/cli.py",
    "busassist/apps/analyze.py",
    "busassist/training/__init__.py",
    "busassist/training/cli.py",
    "busassist/training/model.py",
    "busassist/training/export.py",
]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("setuptools")
    source = tmp_path_factory.mktemp("source") / "busassist"
    shutil.copytree(REPO_ROOT, source, ignore=COPY_IGNORE)
    out = tmp_path_factory.mktemp("wheel")
    command = [
        sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
        "--disable-pip-version-check", "--no-index", "-w", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=out)
    assert done.returncode == 0, f"pip wheel failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    wheels = list(out.glob("busassist-*.whl"))
    assert len(wheels) == 1, f"expected one wheel in {out}, found {sorted(p.name for p in out.iterdir())}"
    return wheels[0]


def wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_wheel_contains_core_modules(wheel: Path) -> None:
    names = wheel_names(wheel)
    missing = [m for m in CORE_MODULES if m not in names]
    assert not missing, f"missing from {wheel.name}: {missing}"
    # Every source module of the package is shipped, and nothing from the tests.
    sources = {
        "busassist/" + p.relative_to(PACKAGE_DIR).as_posix()
        for p in PACKAGE_DIR.rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert sources - names == set()
    assert not any(n.startswith(("Testing/", "tests/", "conftest")) or "/test_" in n for n in names)
    # the built-in study specs travel with the trainer (``busassist-train study run cv``)
    specs = {"busassist/" + p.relative_to(PACKAGE_DIR).as_posix() for p in PACKAGE_DIR.rglob("studies/*.toml")}
    assert specs and specs - names == set()


def test_wheel_entry_points(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        entry_points = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
        assert len(entry_points) == 1
        text = archive.read(entry_points[0]).decode()
    parser = configparser.ConfigParser()
    parser.read_string(text)
    scripts = dict(parser["console_scripts"])
    assert scripts["busassist"] == "busassist.apps.cli:main"
    assert scripts["busassist-train"] == "busassist.training.__main__:main"  # pins the arithmetic, then the CLI


def test_wheel_metadata_dependencies_are_torch_free(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        (metadata_name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(metadata_name).decode()
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    core = [r for r in requires if "extra ==" not in r]
    assert any(r.startswith("onnxruntime") for r in core)
    assert any(r.startswith("pydicom") for r in core)
    assert not any(r.startswith("torch") for r in core), core
    assert any(r.startswith("torch==2.13.0") and 'extra == "train"' in r for r in requires)


def test_wheel_contains_bundled_model(wheel: Path) -> None:
    """Check later: the bundled model ships as package data ``busassist/models``."""
    names = wheel_names(wheel)
    assert "busassist/models/emtnet.onnx" in names
    assert "busassist/models/emtnet.onnx.sha256" in names
    assert "busassist/models/emtnet.onnx.probe.npz" in names  # auto's parity check without onnxruntime
    # The shipped checksum file matches the shipped model.
    import hashlib

    with zipfile.ZipFile(wheel) as archive:
        int8 = ["busassist/models/int8"] if "busassist/models/int8/emtnet.onnx" in names else []
        assert bool(int8) == (REPO_ROOT / "Resources" / "Models" / "int8" / "emtnet.onnx").is_file()
        for folder in ["busassist/models", *int8]:  # float32 (default), and the int8 form when a release has one
            digest = hashlib.sha256(archive.read(f"{folder}/emtnet.onnx")).hexdigest()
            expected = archive.read(f"{folder}/emtnet.onnx.sha256").decode().split()[0]
            assert digest == expected, folder
            assert f"{folder}/emtnet.onnx.probe.npz" in names and f"{folder}/model_card.json" in names


# ---------------------------------------------------------------------------------------------
# Python 3.9 and a torch-free inference path


def python39_sources() -> list[Path]:
    """Everything Slicer 5.8 (Python 3.9) imports: the core, the Slicer logic, the presenter, and the CLI."""
    core = sorted((PACKAGE_DIR / "core").glob("*.py"))
    slicer = sorted((PACKAGE_DIR / "slicer").glob("*.py"))
    apps = [PACKAGE_DIR / "apps" / name for name in ("cli.py", "analyze.py", "options.py")]
    return [*core, *slicer, *apps, PACKAGE_DIR / "presenter.py", PACKAGE_DIR / "constants.py"]


@pytest.mark.skipif(not PYTHON39.is_file(), reason=f"{PYTHON39} is not installed")
def test_inference_modules_compile_under_python39(tmp_path: Path) -> None:
    sources = python39_sources()
    assert len(sources) >= 7
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(tmp_path)}  # keep .pyc files out of the checkout
    done = subprocess.run(
        [str(PYTHON39), "-m", "py_compile", *map(str, sources)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(not PYTHON39.is_file(), reason=f"{PYTHON39} is not installed")
def test_constants_import_under_python39(tmp_path: Path) -> None:
    # constants.py needs only the standard library, so 3.9 can execute it, not just parse it.
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_DIR.parent), "PYTHONPYCACHEPREFIX": str(tmp_path)}
    code = "from busassist.constants import threshold_for_effective_weight as t; assert abs(t(10) - 3/13) < 1e-12"
    done = subprocess.run([str(PYTHON39), "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr


def test_cli_and_inference_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import busassist.core.inference, busassist.core.io, busassist.apps.cli, busassist.apps.analyze\n"
        "from busassist.apps.cli import build_parser\n"
        "build_parser().parse_args(['analyze', 'x', '--out', 'y'])\n"
        "heavy = sorted(m for m in ('torch', 'onnx', 'torchvision') if m in sys.modules)\n"
        "assert 'busassist.core.inference' in sys.modules\n"
        "print(','.join(heavy) or 'none')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_DIR.parent)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "torch" not in done.stdout.strip().split(","), f"imported: {done.stdout.strip()}"
