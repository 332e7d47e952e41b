"""The package's front door: explicit imports and __all__, every name importable, the version
defined once, nothing optional imported by `import inferno`, and every name of the old
star-import front door still there for existing code."""
import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import inferno

ROOT = Path(__file__).resolve().parents[1]


def test_explicit_imports_and_all():
    tree = ast.parse((ROOT / "inferno" / "__init__.py").read_text())
    stars = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names)]
    assert not stars, "inferno/__init__.py must not use star imports"
    assert len(set(inferno.__all__)) == len(inferno.__all__)
    for name in inferno.__all__:
        assert hasattr(inferno, name), name
    ns = {}
    exec("from inferno import *", ns)
    assert "nn" not in ns  # the module inferno.nn does not shadow torch.nn in a user's script


def test_old_front_door_names_still_importable():
    for m in ("data", "callback", "model_wrapper", "interp", "inference", "nuisance", "inferno", "paper", "pyhf"):
        for name in importlib.import_module(f"inferno.{m}").__all__:
            assert hasattr(inferno, name), f"inferno.{name} (from inferno.{m})"


def test_version_defined_once():
    hits = [p for p in list((ROOT / "inferno").rglob("*.py")) + [ROOT / "setup.py", ROOT / "settings.ini"]
            if re.search(r"""^(__version__\s*=\s*["']|version\s*=\s*["']?\d)""", p.read_text(), re.M)]
    assert hits == [ROOT / "inferno" / "_version.py"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", inferno.__version__)


def test_import_loads_no_optional_dependency():
    code = ("import sys, inferno; bad = [m for m in ('uproot', 'pyarrow', 'hist', 'mplhep', 'onnx', 'onnxruntime', "
            "'pyhf', 'matplotlib') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_old_module_paths_are_the_new_modules():
    """The pytorch_inferno-style module paths (and the package's earlier ones) import the modules
    that now hold the names, in a fresh interpreter (import statements, not attribute access)."""
    from inferno.compat import MODULE_ALIASES
    for old, new in MODULE_ALIASES.items():
        assert importlib.import_module(old) is importlib.import_module(new), old
        assert not (ROOT / (old.replace(".", "/") + ".py")).exists(), f"{old} is an alias, not a file"
    code = ("from inferno.inferno import PaperInferno, VariableSoftmax\n"
            "from inferno.inference import calc_profile\nfrom inferno.interp import interp_shape\n"
            "from inferno.pyhf import to_pyhf_workspace\nfrom inferno.model_wrapper import ModelWrapper\n"
            "from inferno.callback import AbsCallback\nfrom inferno.readers import read_root\n"
            "import inferno.inference, inferno.callback\n"
            "assert inferno.inference.calc_profile is calc_profile and inferno.callback.AbsCallback is AbsCallback\n"
            "assert ModelWrapper.__module__ == 'inferno.training.wrapper'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
