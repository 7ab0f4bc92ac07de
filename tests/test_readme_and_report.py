"""The README's example runs as written, and the report module renders its pages."""
from __future__ import annotations

import json
import re
from pathlib import Path

from unstable_gradients.report import render_pages

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert blocks, "README has no python example"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "||de/dW||" in out and "ratio" in out
    assert "['vanishing']" in out   # the diagnose example names what it finds


def test_render_pages_from_ledger_and_report(tmp_path):
    gen = tmp_path / "book" / "_generated"
    gen.mkdir(parents=True)
    (gen / "reproductions.json").write_text(json.dumps([
        dict(id="a", source="Paper, Table 1", paper=1.0, ours=1.001, tolerance=0.01, passed=True,
             notebook="part/nb", relative=False, status="reproduced", note=""),
        dict(id="b", source="Paper, Fig. 2", paper=2.0, ours=3.0, tolerance=0.1, passed=False,
             notebook="part/nb", relative=True, status="not reproduced", note="why"),
    ]))
    (gen / "execution_report.json").write_text(json.dumps(
        {"part/nb.ipynb": dict(seconds=12.5, peak_rss_mb=600, ok=True), "_environment": dict(python="3.11")}))
    render_pages(tmp_path, keep={"part/nb"})
    index = (gen / "reproduction_index.md").read_text()
    assert "1 of 2** checked numbers reproduce" in index
    assert "**not reproduced** [1]" in index and "±10%" in index and "{doc}`/book/part/nb`" in index
    assert "[1] why" in index
    status = (gen / "execution_report.md").read_text()
    assert "| 12.5 | 600 | ok |" in status and "Python 3.11" in status


def test_execute_keeps_figures_under_a_non_interactive_backend(tmp_path, monkeypatch):
    """``report execute`` must save the figures even when MPLBACKEND=Agg (as ``make`` exports)."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    from unstable_gradients.report import _missing_figures, execute_notebook

    cell = new_code_cell("import matplotlib.pyplot as plt\nplt.plot([1, 2]);")
    cell.metadata["mystnb"] = {"figure": {"caption": "a line", "name": "fig-test"}}
    path = tmp_path / "nb.ipynb"
    nbformat.write(new_notebook(cells=[cell], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                        "language": "python"}}), path)
    assert _missing_figures(nbformat.read(path, as_version=4)) == ["fig-test"]
    monkeypatch.setenv("MPLBACKEND", "Agg")
    rec = execute_notebook(path, timeout=120)
    assert rec["ok"]
    assert _missing_figures(nbformat.read(path, as_version=4)) == []
