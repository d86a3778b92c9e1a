"""Static checks of the Slicer module's files (real Slicer cannot run here).

- every Python file Slicer imports (the module script and the package files listed in
  ``BUSAssist/CMakeLists.txt``) parses on Python 3.9 and 3.12 and imports no torch, no training
  code and no command-line apps; the list covers everything the module script imports;
- ``Resources/UI/BUSAssist.ui`` is Qt Designer XML whose widgets are exactly those the code
  uses (through ``self.ui``) or binds to the parameter node, apart from static captions and
  containers;
- the icon, requirements, sample checksum and CMake extension metadata are consistent.
"""

from __future__ import annotations

import ast
import hashlib
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO_ROOT / "BUSAssist"
MODULE_SCRIPT = MODULE_DIR / "BUSAssist.py"
UI_FILE = REPO_ROOT / "Resources" / "UI" / "BUSAssist.ui"
PYENV = Path("/root/.pyenv/versions")

#: Qt widget classes the .ui may use without declaring them as custom widgets.
QT_WIDGETS = {
    "QWidget",
    "QLabel",
    "QPushButton",
    "QCheckBox",
    "QComboBox",
    "QProgressBar",
    "QLineEdit",
    "QPlainTextEdit",
}


def cmake_list(path: Path, variable: str) -> list[str]:
    text = path.read_text()
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"{variable} not set in {path}"
    return [item for item in match.group(1).split() if not item.startswith("#")]


def slicer_python_files() -> list[Path]:
    scripts = cmake_list(MODULE_DIR / "CMakeLists.txt", "MODULE_PYTHON_SCRIPTS")
    return [MODULE_DIR / script.replace("${MODULE_NAME}", "BUSAssist") for script in scripts]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def package_file(module: str) -> Path | None:
    """The source file of a ``busassist`` module (package __init__ or module file), if it exists."""
    base = MODULE_DIR / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def test_cmake_lists_every_file_the_module_imports():
    listed = {path.resolve() for path in slicer_python_files()}
    assert all(path.is_file() for path in listed)
    pending, seen = [MODULE_SCRIPT], set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in imported_modules(path):
            if module.split(".")[0] != "busassist":
                continue
            parts = module.split(".")
            for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
                found = package_file(".".join(parts[:depth]))
                if found is not None:
                    pending.append(found)
    missing = {p.relative_to(REPO_ROOT).as_posix() for p in seen} - {
        p.relative_to(REPO_ROOT).as_posix() for p in listed
    }
    assert not missing, f"imported by the Slicer module but not listed in BUSAssist/CMakeLists.txt: {missing}"


def test_slicer_files_import_no_torch_training_or_apps():
    for path in slicer_python_files():
        for module in imported_modules(path):
            root = module.split(".")[0]
            assert root != "torch", f"{path.name} imports {module}"
            assert not module.startswith(("busassist.training", "busassist.apps")), f"{path.name} imports {module}"


def test_importing_the_slicer_logic_loads_no_heavy_modules():
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import busassist.slicer; "
        "print(','.join(m for m in ('torch', 'onnxruntime', 'slicer', 'vtk', 'qt') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(MODULE_DIR)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("version", ["3.9", "3.12"])
def test_slicer_files_parse_on_python(version):
    interpreters = sorted(PYENV.glob(f"{version}.*/bin/python"))
    if not interpreters:
        pytest.skip(f"no Python {version} interpreter under {PYENV}")
    files = [str(p) for p in slicer_python_files()]
    code = "import sys\nfor f in sys.argv[1:]:\n    compile(open(f, encoding='utf-8').read(), f, 'exec')\n"
    result = subprocess.run([str(interpreters[-1]), "-c", code, *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_runtime_annotations_are_python39_safe():
    """Files without postponed annotations must not use ``X | Y`` in annotations (evaluated on 3.9)."""
    for path in slicer_python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        postponed = any(
            isinstance(n, ast.ImportFrom) and n.module == "__future__" and any(a.name == "annotations" for a in n.names)
            for n in tree.body
        )
        if postponed:
            continue
        for node in ast.walk(tree):
            annotation = getattr(node, "annotation", None) or getattr(node, "returns", None)
            if annotation is not None:
                assert not any(isinstance(n, ast.BinOp) for n in ast.walk(annotation)), (
                    f"{path.name}:{node.lineno}: 'X | Y' annotation breaks Python 3.9"
                )


# ---- the .ui file --------------------------------------------------------------------------------


def ui_widgets() -> dict[str, tuple[str, ET.Element]]:
    root = ET.parse(UI_FILE).getroot()
    assert root.tag == "ui" and root.get("version") == "4.0"
    widgets = {}
    for element in root.iter("widget"):
        name = element.get("name")
        assert name and name not in widgets, f"widget name {name!r} missing or repeated"
        widgets[name] = (element.get("class"), element)
    return widgets


def parameter_names(element: ET.Element) -> str | None:
    for prop in element.findall("property"):
        if prop.get("name") == "SlicerParameterName":
            return prop.findtext("string")
    return None


def parameter_node_fields() -> set[str]:
    tree = ast.parse(MODULE_SCRIPT.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "BUSAssistParameterNode":
            return {item.target.id for item in node.body if isinstance(item, ast.AnnAssign)}
    raise AssertionError("BUSAssistParameterNode not found")


def ui_references_in_code() -> set[str]:
    return set(re.findall(r"\bui\.([A-Za-z_]\w*)", MODULE_SCRIPT.read_text(encoding="utf-8")))


def test_ui_is_designer_xml_with_declared_widget_classes():
    root = ET.parse(UI_FILE).getroot()
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == root.findtext("class") == "BUSAssist"
    custom = {c.findtext("class") for c in root.iter("customwidget")}
    assert custom == {"ctkCollapsibleButton", "ctkPathLineEdit", "ctkSliderWidget", "qMRMLNodeComboBox", "qMRMLWidget"}
    for name, (cls, _) in ui_widgets().items():
        assert cls in QT_WIDGETS | custom, f"{name}: undeclared widget class {cls}"
    for connection in root.iter("connection"):
        assert connection.findtext("sender") in ui_widgets() and connection.findtext("receiver") in ui_widgets()


def test_ui_widgets_match_the_code():
    widgets = ui_widgets()
    referenced = ui_references_in_code()
    missing = referenced - set(widgets)
    assert not missing, f"BUSAssist.py uses widgets the .ui does not define: {missing}"

    bound = {name: parameter_names(element) for name, (_, element) in widgets.items() if parameter_names(element)}
    fields = parameter_node_fields()
    assert set(bound.values()) == fields, "SlicerParameterName bindings and parameter node fields differ"

    unused = []
    for name, (cls, _) in widgets.items():
        static = (cls == "QLabel" and name.endswith("Caption")) or cls in ("ctkCollapsibleButton", "qMRMLWidget")
        if name not in referenced and name not in bound and not static:
            unused.append(name)
    assert not unused, f".ui widgets the code never uses: {unused}"


def test_sliders_are_bounded_like_the_parameter_node():
    from busassist.constants import EFFECTIVE_WEIGHT_MAX, EFFECTIVE_WEIGHT_MIN, W_P

    _, slider = ui_widgets()["effectiveWeightSlider"]
    props = {p.get("name"): p for p in slider.findall("property")}
    assert float(props["minimum"].findtext("double")) == EFFECTIVE_WEIGHT_MIN
    assert float(props["maximum"].findtext("double")) == EFFECTIVE_WEIGHT_MAX
    assert float(props["value"].findtext("double")) == W_P
    source = MODULE_SCRIPT.read_text(encoding="utf-8")
    assert "WithinRange(EFFECTIVE_WEIGHT_MIN, EFFECTIVE_WEIGHT_MAX)] = W_P" in source


# ---- other resources -------------------------------------------------------------------------------


def test_icon_is_a_128_png():
    from PIL import Image

    with Image.open(REPO_ROOT / "Resources" / "Icons" / "BUSAssist.png") as icon:
        assert icon.format == "PNG" and icon.size == (128, 128)


def test_requirements_install_onnxruntime_and_never_a_package_slicer_ships():
    """pip would upgrade a package Slicer ships (pydicom, highdicom, ...) under the running application."""
    lines = [
        line.split("#")[0].strip() for line in (REPO_ROOT / "Resources" / "requirements.txt").read_text().splitlines()
    ]
    names = {re.split(r"[<>=!~ ;]", line)[0].lower() for line in lines if line}
    assert "onnxruntime" in names
    shipped_by_slicer = {"numpy", "pydicom", "pillow", "highdicom", "vtk", "simpleitk", "scipy", "requests", "torch"}
    assert not names & shipped_by_slicer


def test_extension_urls_into_this_repository_name_files_that_exist():
    text = (REPO_ROOT / "CMakeLists.txt").read_text()
    paths = re.findall(r"raw\.githubusercontent\.com/[^/]+/[^/]+/main/([^\s\"]+)", text)
    assert paths, "the extension names its icon and screenshot"
    for path in paths:
        assert (REPO_ROOT / path).is_file(), path


def test_sample_checksum_matches_the_bundled_study():
    from busassist.slicer import sample

    path = REPO_ROOT / "Resources" / "SampleData" / sample.SAMPLE_FILE
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sample.SAMPLE_SHA256, (
        "the sample study changed: update SAMPLE_SHA256 in busassist/slicer/sample.py"
    )


def test_cmake_extension_metadata_and_resources():
    text = (REPO_ROOT / "CMakeLists.txt").read_text()
    for variable in (
        "EXTENSION_HOMEPAGE",
        "EXTENSION_CONTRIBUTORS",
        "EXTENSION_DESCRIPTION",
        "EXTENSION_ICONURL",
        "EXTENSION_SCREENSHOTURLS",
    ):
        assert re.search(rf'set\({variable} "[^"]+"\)', text), variable
    assert 'set(EXTENSION_CATEGORY "Segmentation")' in text
    assert "add_subdirectory(BUSAssist)" in text
    module_cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    assert "slicerMacroBuildScriptedModule(" in module_cmake
    for resource in cmake_list(MODULE_DIR / "CMakeLists.txt", "MODULE_RESOURCES"):
        path = REPO_ROOT / "Resources" / resource.replace("${MODULE_NAME}", "BUSAssist")
        assert path.is_file(), f"listed resource {resource} is missing"
