"""The documentation's code runs, and its pages link to pages that exist.

Every ```python block of ``docs/*.md`` is executed; the blocks of one page run in order in a
shared namespace (a page is a script split by prose), in a temporary working directory.
Blocks tagged otherwise (```bash, ```text, ```pycon) are not run. The API reference is built
from the docstrings with the site (``make docs``; ``tests/test_docs_site.py``).
"""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def python_blocks(path: Path):
    """(line number, code) of every ```python block of a Markdown file."""
    text = path.read_text()
    return [(text[:m.start()].count("\n") + 2, m.group(1)) for m in _BLOCK.finditer(text)]


def test_pages_exist():
    names = {p.name for p in PAGES}
    for required in ("index.md", "architecture.md", "nuisances.md", "pyhf.md"):
        assert required in names, f"docs/{required} is missing"
    assert (DOCS / "conf.py").exists() and (DOCS / "api" / "index.md").exists(), "the site's API reference is missing"


def test_block_extraction():
    blocks = python_blocks(DOCS / "index.md")
    assert len(blocks) >= 2 and all("```" not in code for _, code in blocks)


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: p.name)
def test_doc_snippets_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INFERNO_QUIET", "1")
    namespace = {"__name__": f"docs_{page.stem}"}
    for line, code in python_blocks(page):
        try:
            exec(compile(code, f"{page.relative_to(ROOT)}:{line}", "exec"), namespace)
        except Exception as e:  # name the block that failed
            raise AssertionError(f"the python block at {page.name} line {line} failed: "
                                 f"{type(e).__name__}: {e}") from e
    import matplotlib.pyplot as plt
    plt.close("all")


def test_docs_link_to_existing_pages():
    for page in PAGES + sorted((DOCS / "api").glob("*.md")):
        for target in re.findall(r"\]\(([\w./-]+\.(?:md|ipynb|py))\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
