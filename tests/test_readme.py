"""The README's example runs and trains: its INFERNO loss goes down."""
import re

import pytest
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README.md has no python example"
    ns: dict = {}
    exec(compile(blocks[0], str(README), "exec"), ns)
    losses = ns["wrapper"].loss_tracker.losses
    assert losses["valid"][-1] < losses["valid"][0]
    bins = ns["bins"]
    assert bins.shape == (len(ns["data"].val_dl.dataset),) and bins.min() >= 0 and bins.max() < 10


def test_readme_likelihood_example_runs():
    """The statistical-model example: the fit on Asimov data returns the truth, the profile
    width equals the Hessian uncertainty to a few per cent, the pyhf round trip keeps the NLL."""
    import math

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    ns: dict = {}
    exec(compile(blocks[1], str(README), "exec"), ns)
    best, scan = ns["best"], ns["scan"]
    assert best.converged and abs(float(best.poi) - 1.0) < 1e-5
    assert math.isclose(scan.width(), float(best.poi_unc), rel_tol=0.05)
    p = ns["model"].init
    assert math.isclose(float(ns["same_model"].nll(p, ns["observed"])), float(ns["model"].nll(p, ns["main"])),
                        rel_tol=1e-12)


def test_readme_analysis_example_runs():
    """The INFERNO-on-an-analysis example trains (its loss goes down) and measures."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    ns: dict = {}
    exec(compile(blocks[2], str(README), "exec"), ns)
    model = ns["model"]
    assert model.poi_names == ["mu"] and "scale" in model.names and "lepton_id" in model.names
    # ... and from ROOT files: the same events (in process order), the same Model
    before = model
    exec(compile(blocks[3], str(README), "exec"), ns)
    assert len(ns["events"]) == len(ns["data"])
    p = before.init
    assert float(ns["model"].nll(p, before.expected(p))) == pytest.approx(float(before.nll(p, before.expected(p))),
                                                                           rel=1e-6)


def test_readme_top_shows_the_two_commands():
    text = README.read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    cmds = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert cmds == ["make quick", "make test"]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "make test" in ci


def test_readme_table_matches_committed_results():
    """The medians quoted in the README are those of docs/results/results.csv."""
    import csv
    rows = list(csv.DictReader((README.parent / "docs" / "results" / "results.csv").open()))
    medians = {(r["label"], int(r["benchmark"])): float(r["median"]) for r in rows}
    quoted = {}
    for line in README.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and (cells[0], 0) in medians:
            for k, c in enumerate(cells[1:]):
                quoted[(cells[0], k)] = float(c.split()[0].strip("*"))
    assert len(quoted) == len(medians) == 8 * 5
    for key, v in quoted.items():
        assert abs(v - medians[key]) < 0.006, key
