"""The tutorial notebooks in nbs/ execute without error.

Each notebook runs in a fresh kernel of the running interpreter (``kernel_name='python3'``
resolves to it when ipykernel is installed there), single-threaded, with a temporary
folder as working directory so that files the notebooks write stay out of the repository.
The notebooks assert their key results (e.g. INFERNO's interval narrower than the
classifier's), so a wrong result fails the test, not only an exception.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NBS = Path(__file__).resolve().parents[1] / "nbs"
NOTEBOOKS = sorted(NBS.glob("[0-9][0-9]_*.ipynb"))
TIMEOUT = 240  # seconds per cell; each notebook takes well under a minute on one thread


def test_notebooks_are_present_and_stored_without_outputs():
    names = [p.name for p in NOTEBOOKS]
    assert names[:3] == ["01_quickstart.ipynb", "02_custom_nuisances.ipynb",
                         "03_likelihood_and_pyhf.ipynb"], names
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, (
                    f"{path.name} is stored with outputs: clear them before committing")
        assert any("assert" in c.source for c in nb.cells if c.cell_type == "code"), (
            f"{path.name} checks none of its results")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("INFERNO_QUIET", "1")
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    start = time.perf_counter()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"{path.name}: a cell failed:\n{e}")
    elapsed = time.perf_counter() - start
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: error outputs {[(o['ename'], o['evalue']) for o in errors]}"
    assert not list(NBS.glob("*.json")), "a notebook wrote into nbs/ instead of its working directory"
    print(f"{path.name}: {elapsed:.1f} s")
