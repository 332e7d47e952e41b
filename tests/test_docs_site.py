"""The documentation site builds (Sphinx + MyST, ``make docs``) with warnings as errors, and its
API reference is made from the docstrings.

One build for the module (about 45 s of CPU: it imports the package and renders every
docstring); skipped where the docs extras (``pip install -e ".[docs]"``) are missing.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("myst_parser")
pytest.importorskip("furo")

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from sphinx.cmd.build import build_main

    out = tmp_path_factory.mktemp("site")
    rc = build_main(["-W", "--keep-going", "-b", "html", "-q", str(DOCS), str(out)])
    assert rc == 0, "the documentation site has warnings or errors (run `make docs` to see them)"
    return out


def test_site_has_the_guide_and_the_api_pages(site):
    for page in ("index", "training", "likelihood", "nuisances", "pyhf", "formats", "architecture", "errors",
                 "explain"):
        assert (site / f"{page}.html").exists(), f"{page}.html was not built"
    for page in ("index", "inferno", "loss", "likelihood", "nuisance", "training", "templates", "explain", "compat",
                 "paper", "htautau"):
        assert (site / "api" / f"{page}.html").exists(), f"api/{page}.html was not built"


def test_loss_page_documents_the_loss(site):
    html = (site / "api" / "loss.html").read_text()
    # documented objects (with an anchor), at their public path
    assert 'id="inferno.loss.InfernoLoss"' in html and 'id="inferno.loss.inferno_loss"' in html
    assert 'id="inferno.loss.Analysis"' in html
    # the docstrings' reST is rendered, not shown raw: roles, maths, Google-style sections
    assert not re.search(r":(class|func|math|mod|meth|data):`", html)
    assert "Parameters" in html and "math notranslate" in html


def test_each_object_is_documented_once(site):
    """A name re-exported by a package is documented there, not again in its module."""
    ids = []
    for page in (site / "api").glob("*.html"):
        ids += re.findall(r'<dt class="sig sig-object py" id="([^"]+)"', page.read_text())
    assert "inferno.loss.InfernoLoss" in ids and "inferno.loss.callback.InfernoLoss" not in ids
    assert len(ids) == len(set(ids))


def test_front_door_links_its_names(site):
    html = (site / "api" / "inferno.html").read_text()
    assert 'href="loss.html#inferno.loss.InfernoLoss"' in html
    assert 'href="training.html#inferno.training.ModelWrapper"' in html


def test_guide_maths_is_rendered(site):
    html = (site / "index.html").read_text()
    assert "$\\mu$" not in html and "\\(\\mu\\)" in html
