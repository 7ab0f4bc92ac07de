"""The reproduction ledger: every number the book takes from a paper is checked here.

``Ledger.for_notebook(name)`` starts (or refreshes) a notebook's entries in
``book/_generated/reproductions.json``; ``ledger.check(...)`` records the paper's value, ours,
the tolerance and the source, and raises ``ReproductionError`` when ours is out of tolerance.
A claim the book cannot reproduce is recorded with ``known_gap="why"``: it is then listed as
"not reproduced" with the reason instead of failing, and it fails if it ever starts to match
(so the text that explains the gap cannot go stale).

The index page of the book (``book/reproduction_index.md``) is generated from the ledger by
``python -m unstable_gradients.report index``.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["Reproduction", "ReproductionError", "Ledger", "find_book_root", "ledger_path"]


class ReproductionError(AssertionError):
    """Our number drifted out of the paper's tolerance (or a documented gap closed)."""


@dataclass
class Reproduction:
    id: str
    source: str
    paper: float
    ours: float
    tolerance: float
    passed: bool
    notebook: str
    relative: bool = False
    status: str = "reproduced"
    note: str = ""

    def __str__(self) -> str:
        tol = f"±{self.tolerance:.0%}" if self.relative else f"±{self.tolerance:g}"
        return f"{self.id:<34} paper {self.paper:>9.4g}  ours {self.ours:>9.4g}  ({tol})  {self.status}"


def find_book_root(start: Path | None = None) -> Path | None:
    """The project root: ``$UG_BOOK_ROOT``, else the first parent holding ``_config.yml`` and ``book/``."""
    if os.environ.get("UG_BOOK_ROOT"):
        return Path(os.environ["UG_BOOK_ROOT"])
    here = (start or Path.cwd()).resolve()
    for p in [here, *here.parents]:
        if (p / "_config.yml").exists() and (p / "book").is_dir():
            return p
    return None


def ledger_path(root: Path | None = None) -> Path | None:
    root = root or find_book_root()
    return root / "book" / "_generated" / "reproductions.json" if root else None


def _read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    return data.get("entries", []) if isinstance(data, dict) else data


def _write(path: Path, entries: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = sorted(entries, key=lambda e: (e["notebook"], e["id"]))
    path.write_text(json.dumps(entries, indent=1) + "\n")


class Ledger:
    """The entries of one notebook. Outside the book's tree (no ``_config.yml`` found) checks still
    run and raise, but nothing is written, so the package works in anyone's project."""

    def __init__(self, notebook: str, path: Path | None = None) -> None:
        self.notebook = notebook
        self.path = path
        self.entries: list[Reproduction] = []

    @classmethod
    def for_notebook(cls, notebook: str, path: str | Path | None = None) -> "Ledger":
        """Start ``notebook``'s entries afresh: its old entries are dropped from the ledger file."""
        path = Path(path) if path else ledger_path()
        ledger = cls(notebook, path)
        if path is not None:
            _write(path, [e for e in _read(path) if e["notebook"] != notebook])
        return ledger

    def check(self, id: str, *, source: str, paper: float, ours: float, tolerance: float,
              relative: bool = False, known_gap: str | None = None, note: str = "") -> Reproduction:
        """Record one comparison and fail loudly when it does not hold.

        ``tolerance`` is absolute, or a fraction of ``|paper|`` with ``relative=True``. Justify it
        in the notebook (e.g. "the paper prints two decimals: ±0.005 plus rounding of ours").
        """
        if not (math.isfinite(paper) and math.isfinite(tolerance) and tolerance >= 0):
            raise ValueError(f"{id}: paper value and tolerance must be finite, tolerance >= 0")
        allowed = tolerance * abs(paper) if relative else tolerance
        paper, ours, tolerance = float(paper), float(ours), float(tolerance)  # numpy scalars too
        within = bool(math.isfinite(ours) and abs(ours - paper) <= allowed + 1e-12)
        status = "reproduced" if within else "not reproduced"
        rec = Reproduction(id=id, source=source, paper=float(paper), ours=float(ours), tolerance=float(tolerance),
                           passed=within, notebook=self.notebook, relative=relative,
                           status=status, note=known_gap or note)
        self._store(rec)
        if known_gap is not None and within:
            raise ReproductionError(f"{id}: documented as not reproduced ({known_gap}) but ours={ours:.6g} now "
                                    f"matches paper={paper:.6g}; update the text and drop known_gap")
        if not within and known_gap is None:
            raise ReproductionError(f"{id} ({source}): ours={ours:.6g} is outside paper={paper:.6g} ± "
                                    f"{allowed:.3g}")
        return rec

    def check_in_spread(self, id: str, *, source: str, paper: float, samples, lower: float = 5.0,
                        upper: float = 95.0, note: str = "") -> Reproduction:
        """Compare a paper's single-run number with our distribution over seeds.

        ``ours`` is the median of ``samples``; the check passes when the paper's value lies inside
        our [lower, upper] percentile interval, i.e. the tolerance is the distance from the median
        to that percentile on the paper's side. Use it where the paper reports one seed.
        """
        import numpy as np

        samples = np.asarray(samples, dtype=float)
        med, lo, hi = (float(v) for v in np.percentile(samples, [50, lower, upper]))
        tol = (hi - med) if paper >= med else (med - lo)
        spread = f"paper inside our {lower:g}-{upper:g}% interval over {samples.size} seeds"
        return self.check(id, source=source, paper=paper, ours=med, tolerance=tol,
                          note=f"{spread}; {note}" if note else spread)

    def _store(self, rec: Reproduction) -> None:
        self.entries = [e for e in self.entries if e.id != rec.id] + [rec]
        if self.path is not None:
            others = [e for e in _read(self.path) if not (e["notebook"] == self.notebook and e["id"] == rec.id)]
            _write(self.path, others + [asdict(rec)])

    def table(self) -> str:
        """The notebook's entries as aligned text lines (deterministic, for nbval-checked cells)."""
        return "\n".join(str(e) for e in self.entries)
