"""The reproduction ledger: tolerance checks, documented gaps, and the JSON file's bookkeeping."""
from __future__ import annotations

import json
import math

import pytest

from unstable_gradients.reproduce import Ledger, Reproduction, ReproductionError, ledger_path

KEYS = {"id", "source", "paper", "ours", "tolerance", "passed", "notebook"}


@pytest.fixture
def path(tmp_path):
    return tmp_path / "r.json"


def _entries(path):
    data = json.loads(path.read_text())
    return data["entries"] if isinstance(data, dict) else data


def test_check_within_tolerance_records_a_pass(path):
    ledger = Ledger.for_notebook("nb1", path=path)
    rec = ledger.check("fig5.slope", source="survey Fig. 5", paper=0.25, ours=0.26, tolerance=0.02)
    assert isinstance(rec, Reproduction)
    assert rec.passed is True and rec.status == "reproduced"
    (entry,) = _entries(path)
    assert KEYS <= set(entry)
    assert entry["id"] == "fig5.slope" and entry["source"] == "survey Fig. 5"
    assert entry["paper"] == 0.25 and entry["ours"] == 0.26 and entry["tolerance"] == 0.02
    assert entry["passed"] is True and entry["notebook"] == "nb1"
    assert ledger.entries == [rec]


def test_boundary_of_the_tolerance_passes(path):
    ledger = Ledger.for_notebook("nb1", path=path)
    assert ledger.check("edge", source="s", paper=1.0, ours=1.5, tolerance=0.5).passed


def test_check_out_of_tolerance_raises_and_records_a_failure(path):
    ledger = Ledger.for_notebook("nb1", path=path)
    with pytest.raises(ReproductionError, match="acc") as err:
        ledger.check("acc", source="Nielsen ch. 5", paper=0.96, ours=0.90, tolerance=0.01)
    assert isinstance(err.value, AssertionError)
    (entry,) = _entries(path)
    assert entry["passed"] is False and entry["ours"] == 0.90
    assert ledger.entries[0].status == "not reproduced"


def test_nan_result_fails(path):
    with pytest.raises(ReproductionError):
        Ledger.for_notebook("nb1", path=path).check("x", source="s", paper=1.0, ours=math.nan, tolerance=10)
    assert _entries(path)[0]["passed"] is False


@pytest.mark.parametrize(
    "ours,ok", [(105.0, True), (95.0, True), (111.0, False), (89.0, False)],
    ids=["plus5pct", "minus5pct", "plus11pct", "minus11pct"],
)
def test_relative_tolerance(path, ours, ok):
    ledger = Ledger.for_notebook("nb1", path=path)
    if ok:
        assert ledger.check("rel", source="s", paper=100.0, ours=ours, tolerance=0.1, relative=True).passed
    else:
        with pytest.raises(ReproductionError):
            ledger.check("rel", source="s", paper=100.0, ours=ours, tolerance=0.1, relative=True)
    assert _entries(path)[0]["passed"] is ok


def test_relative_tolerance_scales_with_negative_paper_values(path):
    ledger = Ledger.for_notebook("nb1", path=path)
    assert ledger.check("neg", source="s", paper=-50.0, ours=-54.0, tolerance=0.1, relative=True).passed
    with pytest.raises(ReproductionError):
        ledger.check("neg2", source="s", paper=-50.0, ours=-56.0, tolerance=0.1, relative=True)


def test_known_gap_out_of_tolerance_does_not_raise(path):
    ledger = Ledger.for_notebook("nb1", path=path)
    rec = ledger.check("gap", source="paper Table 1", paper=0.5, ours=0.9, tolerance=0.05,
                       known_gap="the paper trained for 10x longer")
    assert rec.passed is False and rec.status == "not reproduced"
    assert rec.note == "the paper trained for 10x longer"
    (entry,) = _entries(path)
    assert entry["status"] == "not reproduced" and entry["passed"] is False


def test_known_gap_within_tolerance_raises(path):
    ledger = Ledger.for_notebook("nb1", path=path)
    with pytest.raises(ReproductionError, match="known_gap"):
        ledger.check("gap", source="s", paper=0.5, ours=0.51, tolerance=0.05, known_gap="we used to differ")
    assert _entries(path)[0]["passed"] is True  # recorded before raising


@pytest.mark.parametrize(
    "kwargs",
    [dict(paper=math.nan, tolerance=0.1), dict(paper=1.0, tolerance=-0.1), dict(paper=1.0, tolerance=math.inf)],
    ids=["nan_paper", "negative_tolerance", "infinite_tolerance"],
)
def test_invalid_check_arguments(path, kwargs):
    with pytest.raises(ValueError):
        Ledger.for_notebook("nb1", path=path).check("bad", source="s", ours=1.0, **kwargs)


def test_rechecking_an_id_replaces_its_entry(path):
    ledger = Ledger.for_notebook("nb1", path=path)
    ledger.check("a", source="s", paper=1.0, ours=1.0, tolerance=0.1)
    ledger.check("a", source="s", paper=1.0, ours=1.05, tolerance=0.1)
    assert [e["ours"] for e in _entries(path)] == [1.05]
    assert len(ledger.entries) == 1


def test_recreating_a_notebooks_ledger_drops_only_its_entries(path):
    nb1 = Ledger.for_notebook("nb1", path=path)
    nb1.check("a", source="s", paper=1.0, ours=1.0, tolerance=0.1)
    nb1.check("b", source="s", paper=2.0, ours=2.0, tolerance=0.1)
    nb2 = Ledger.for_notebook("nb2", path=path)
    nb2.check("c", source="s", paper=3.0, ours=3.0, tolerance=0.1)
    assert sorted((e["notebook"], e["id"]) for e in _entries(path)) == [("nb1", "a"), ("nb1", "b"), ("nb2", "c")]

    again = Ledger.for_notebook("nb1", path=path)  # e.g. the notebook is re-executed
    assert again.entries == []
    assert [(e["notebook"], e["id"]) for e in _entries(path)] == [("nb2", "c")]
    again.check("a", source="s", paper=1.0, ours=1.01, tolerance=0.1)
    assert sorted((e["notebook"], e["id"]) for e in _entries(path)) == [("nb1", "a"), ("nb2", "c")]


def test_same_id_in_two_notebooks_is_kept_apart(path):
    Ledger.for_notebook("nb1", path=path).check("x", source="s", paper=1.0, ours=1.0, tolerance=0)
    Ledger.for_notebook("nb2", path=path).check("x", source="s", paper=2.0, ours=2.0, tolerance=0)
    assert sorted((e["notebook"], e["paper"]) for e in _entries(path)) == [("nb1", 1.0), ("nb2", 2.0)]


def test_table_lists_entries(path):
    ledger = Ledger.for_notebook("nb1", path=path)
    ledger.check("one", source="s", paper=1.0, ours=1.0, tolerance=0.1)
    ledger.check("two", source="s", paper=2.0, ours=2.1, tolerance=0.1, relative=True)
    lines = ledger.table().splitlines()
    assert len(lines) == 2 and lines[0].startswith("one") and "reproduced" in lines[1] and "10%" in lines[1]


def test_outside_the_book_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.delenv("UG_BOOK_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    assert ledger_path() is None
    ledger = Ledger.for_notebook("nb1")
    assert ledger.path is None
    ledger.check("a", source="s", paper=1.0, ours=1.0, tolerance=0.1)
    with pytest.raises(ReproductionError):  # checks still run
        ledger.check("b", source="s", paper=1.0, ours=2.0, tolerance=0.1)
    assert list(tmp_path.iterdir()) == []


def test_book_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("UG_BOOK_ROOT", str(tmp_path))
    expected = tmp_path / "book" / "_generated" / "reproductions.json"
    assert ledger_path() == expected
    Ledger.for_notebook("nb1").check("a", source="s", paper=1.0, ours=1.0, tolerance=0.1)
    assert _entries(expected)[0]["id"] == "a"


def test_book_root_found_from_config_file(tmp_path, monkeypatch):
    monkeypatch.delenv("UG_BOOK_ROOT", raising=False)
    (tmp_path / "_config.yml").write_text("title: x\n")
    (tmp_path / "book" / "sub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "book" / "sub")
    assert ledger_path() == tmp_path / "book" / "_generated" / "reproductions.json"


def test_check_accepts_numpy_scalars(tmp_path):
    import numpy as np

    ledger = Ledger.for_notebook("nb", path=tmp_path / "r.json")
    rec = ledger.check("np", source="S", paper=np.float64(1.0), ours=np.float32(1.0), tolerance=np.float64(0.1))
    assert rec.passed is True and isinstance(rec.ours, float)
    assert '"passed": true' in (tmp_path / "r.json").read_text()
