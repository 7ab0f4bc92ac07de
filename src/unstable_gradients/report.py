"""Build-time reports: execute notebooks with a time/memory record, and render generated pages.

``python -m unstable_gradients.report execute [NOTEBOOK ...]``
    Executes notebooks in place (outputs and widget state saved, as committed), each in its own
    process tree whose resident memory is sampled, and records seconds and peak MB per notebook
    in ``book/_generated/execution_report.json``. Fails when a notebook breaks its budget
    (``--max-seconds``, ``--max-mb``; defaults 180 s and 2048 MB, DEVELOPERS.md).
``python -m unstable_gradients.report pages``
    Renders ``book/_generated/reproduction_index.md`` from the ledger and
    ``book/_generated/execution_report.md`` from the execution report, both included by pages of
    the book.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

from .reproduce import _read, find_book_root

__all__ = ["execute_notebook", "main", "render_pages"]


def _root() -> Path:
    root = find_book_root()
    if root is None:
        sys.exit("run this inside the book's repository (no _config.yml with a book/ folder found)")
    return root


def _notebooks(root: Path, given: list[str]) -> list[Path]:
    if given:
        return [Path(g).resolve() for g in given]
    return sorted(p for p in (root / "book").rglob("*.ipynb")
                  if "_build" not in p.parts and ".ipynb_checkpoints" not in p.parts)


def _missing_figures(nb) -> list[str]:
    """Names of the captioned figures (``mystnb.figure`` cell metadata) whose cell has no image output."""
    return [c.metadata["mystnb"]["figure"].get("name", "?") for c in nb.cells
            if c.cell_type == "code" and "figure" in c.metadata.get("mystnb", {})
            and not any("image/png" in o.get("data", {}) for o in c.get("outputs", []))]


def _run_one(path: str, timeout: int) -> None:
    """Child process: execute one notebook in place with nbclient (cwd = its folder)."""
    import nbformat
    from nbclient import NotebookClient

    # The kernel inherits the environment: a non-interactive MPLBACKEND (the Makefile exports Agg
    # for the tests) would silently drop every figure from the saved notebook.
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(Path(path).parent)}})
    start = time.perf_counter()
    stamp = lambda what: print(f"    [{time.perf_counter() - start:6.1f} s] {what}", file=sys.stderr, flush=True)  # noqa: E731
    if os.environ.get("UG_TRACE_CELLS"):   # where a slow or stalled run spends its time
        client.on_cell_start = lambda cell, cell_index: stamp(f"cell {cell_index} starts")
        client.on_cell_executed = lambda cell, cell_index, execute_reply: stamp(f"cell {cell_index} done")
        client.on_notebook_complete = lambda notebook: stamp("notebook complete")
    client.execute()
    missing = _missing_figures(nb)
    if missing:
        raise RuntimeError(f"{path}: captioned figures without an image output: {', '.join(missing)}")
    nbformat.write(nb, path)


def execute_notebook(path: Path, timeout: int = 600) -> dict:
    """Execute ``path`` in a child process; return seconds and peak resident MB of its process tree."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "unstable_gradients.report", "_run", str(path),
                             "--timeout", str(timeout)])
    peak = 0
    ps = psutil.Process(proc.pid)

    def sample() -> None:
        nonlocal peak
        while proc.poll() is None:
            try:
                procs = [ps] + ps.children(recursive=True)
                peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.1)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    rc = proc.wait()
    t.join()
    return dict(seconds=round(time.perf_counter() - start, 1), peak_rss_mb=round(peak / 2**20), ok=rc == 0)


def _report_path(root: Path) -> Path:
    return root / "book" / "_generated" / "execution_report.json"


def execute(paths: list[Path], root: Path, max_seconds: float, max_mb: float, timeout: int) -> int:
    report_file = _report_path(root)
    report = json.loads(report_file.read_text()) if report_file.exists() else {}
    report.pop("_environment", None)
    failures = []
    for path in paths:
        rel = path.relative_to(root / "book").as_posix()
        print(f"executing {rel} ...", flush=True)
        rec = execute_notebook(path, timeout)
        report[rel] = rec
        print(f"  {rec['seconds']} s, peak {rec['peak_rss_mb']} MB, {'ok' if rec['ok'] else 'FAILED'}", flush=True)
        if not rec["ok"]:
            failures.append(f"{rel}: execution failed")
        elif rec["seconds"] > max_seconds or rec["peak_rss_mb"] > max_mb:
            failures.append(f"{rel}: {rec['seconds']} s / {rec['peak_rss_mb']} MB over budget "
                            f"({max_seconds} s / {max_mb} MB)")
    report = dict(sorted(report.items()))
    report["_environment"] = _environment()
    report_file.parent.mkdir(parents=True, exist_ok=True)
    report_file.write_text(json.dumps(report, indent=1) + "\n")
    render_pages(root)
    for f in failures:
        print("BUDGET/EXECUTION FAILURE:", f, file=sys.stderr)
    return 1 if failures else 0


def _environment() -> dict:
    import os

    versions = {}
    for mod in ("torch", "numpy", "matplotlib", "ipywidgets", "myst_nb", "jupyter_book"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # pragma: no cover - optional packages
            versions[mod] = "not installed"
    return dict(python=platform.python_version(), cpus=os.cpu_count(), machine=platform.machine(), packages=versions)


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def render_pages(root: Path | None = None, keep: set[str] | None = None) -> None:
    """Write the generated Markdown tables from the ledger and the execution report.

    Only notebooks in ``keep`` (ids like ``"causes/02_three_factors"``) are listed; by default
    those whose ``.ipynb`` exists under ``book/``, so a stale entry never links to a missing page.
    """
    root = root or _root()
    gen = root / "book" / "_generated"
    gen.mkdir(parents=True, exist_ok=True)
    if keep is None:
        keep = {p.relative_to(root / "book").with_suffix("").as_posix()
                for p in (root / "book").rglob("*.ipynb") if "_build" not in p.parts}
    entries = [e for e in _read(gen / "reproductions.json") if e["notebook"] in keep]
    n_ok = sum(e["passed"] for e in entries)
    lines = [f"**{n_ok} of {len(entries)}** checked numbers reproduce within tolerance.", ""]
    for notebook in sorted({e["notebook"] for e in entries}):
        rows = [e for e in entries if e["notebook"] == notebook]
        lines += [f"## {{doc}}`/book/{notebook}`", "", "| id | source | paper | ours | tolerance | status |",
                  "|---|---|--:|--:|--:|---|"]
        notes: list[str] = []
        for e in rows:
            tol = f"±{e['tolerance']:.0%}" if e.get("relative") else f"±{_fmt(e['tolerance'])}"
            status = "reproduced" if e["passed"] else "**not reproduced**"
            if e.get("note"):
                if e["note"] not in notes:
                    notes.append(e["note"])
                status += f" [{notes.index(e['note']) + 1}]"
            lines.append(f"| `{e['id']}` | {e['source']} | {_fmt(e['paper'])} | {_fmt(e['ours'])} | {tol} | {status} |")
        lines += [""] + [f"[{i + 1}] {n}  " for i, n in enumerate(notes)] + [""]
    (gen / "reproduction_index.md").write_text("\n".join(lines) + "\n")
    report_file = _report_path(root)
    report = json.loads(report_file.read_text()) if report_file.exists() else {}
    env = report.pop("_environment", {})
    report = {k: v for k, v in report.items() if k.removesuffix(".ipynb") in keep}
    lines = ["| notebook | time (s) | peak memory (MB) | status |", "|---|---|---|---|"]
    total = 0.0
    for name, rec in report.items():
        total += rec["seconds"]
        lines.append(f"| {{doc}}`/book/{name.removesuffix('.ipynb')}` | {rec['seconds']} | {rec['peak_rss_mb']} | {'ok' if rec['ok'] else 'failed'} |")
    lines += ["", f"Total: {total:.0f} s for {len(report)} notebooks."]
    if env:
        pk = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items())
        lines += ["", f"Measured with Python {env.get('python')} on {env.get('cpus')} CPU cores "
                      f"({env.get('machine')}); {pk}."]
    (gen / "execution_report.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unstable_gradients.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("execute", help="execute notebooks in place and record time and memory")
    ex.add_argument("notebooks", nargs="*")
    ex.add_argument("--max-seconds", type=float, default=180)
    ex.add_argument("--max-mb", type=float, default=2048)
    ex.add_argument("--timeout", type=int, default=600)
    sub.add_parser("pages", help="render the generated Markdown pages")
    run = sub.add_parser("_run")
    run.add_argument("notebook")
    run.add_argument("--timeout", type=int, default=600)
    args = parser.parse_args(argv)
    if args.cmd == "_run":
        _run_one(args.notebook, args.timeout)
        return 0
    root = _root()
    if args.cmd == "pages":
        render_pages(root)
        return 0
    return execute(_notebooks(root, args.notebooks), root, args.max_seconds, args.max_mb, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
