"""A hostile-input corpus for issue #15: ~70 faulty recipes, data files, disk states, plugins and predict calls,
each run as a subprocess of a chosen ``nlpkit`` in a fresh temporary folder.

Why a script and not tests: the issue's must-show is a before/after table over the same corpus, and "before" is
an older checkout whose test suite does not know these cases. Each case records its exit code, the first line of
its message, whether a Python traceback was printed, and whether any file appeared (or changed) in the temporary
folder outside the case's declared output folders (its own input files excluded).

    python benchmarks/bad_inputs.py --nlpkit /work/wt-before/.venv/bin --out before.json
    python benchmarks/bad_inputs.py --nlpkit .venv/bin --out after.json
    python benchmarks/bad_inputs.py --table before.json after.json > table.md

``--only REGEX`` runs the matching cases; ``--merge A.json B.json --out C.json`` folds such a rerun (B) into A.
Run it niced on a shared machine: each case starts Python and torch. About 70 cases, 5-10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from bad_inputs_cases import TIMEOUT_S, Case, Fixtures, Result, cases

# ---------------------------------------------------------------------------------------------------- running

def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def first_line(text: str) -> str:
    """The message's first line: click's ``Error:`` line, else a traceback's exception line, else the first line
    that says something (``key: ...``); a line ending in ':' is joined with the next, which holds the point."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    at = next((i for i, line in enumerate(lines) if line.startswith(("Error", "Aborted"))), None)
    if at is None and any(line.startswith("Traceback") for line in lines):
        at = len(lines) - 1
    if at is None:
        at = next((i for i, line in enumerate(lines) if ": " in line or line.lower().startswith("warning")), 0)
    if not lines:
        return ""
    line = lines[at]
    if line.endswith(":") and at + 1 < len(lines):
        line += " " + lines[at + 1]
    return line[:200]


def run_case(case: Case, nlpkit: Path, fixtures: Fixtures) -> Result:
    with tempfile.TemporaryDirectory(prefix="badin-") as tmp:
        root = Path(tmp)
        try:
            args = case.build(root, fixtures)
        except BaseException as failed:  # e.g. a fixture run this checkout cannot train: say so, go on
            return Result(case.group, case.name, "not built", f"{type(failed).__name__}: {failed}"[:200], False, [],
                          0.0, case.should_fail)
        before = snapshot(root)
        env = {k: v for k, v in os.environ.items() if not k.startswith("NLPKIT_")}
        env.update(PYTHONDONTWRITEBYTECODE="1", **case.env)
        if (root / "site").exists():
            env["PYTHONPATH"] = str(root / "site")

        def limits() -> None:
            if case.memory_limit:
                resource.setrlimit(resource.RLIMIT_AS, (case.memory_limit, case.memory_limit))

        start = time.perf_counter()
        # a session of its own, so a timeout ends the run's spawned worker processes too
        proc = subprocess.Popen([str(nlpkit), *args], cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env, preexec_fn=limits,
                                start_new_session=True, errors="backslashreplace")
        try:
            stdout, stderr = proc.communicate(case.stdin, timeout=TIMEOUT_S)
            code: int | str = proc.returncode
            output = stderr + "\n" + stdout
            shown = first_line(stderr) or first_line(stdout)
            if case.pick:
                shown = next((line.strip() for line in output.splitlines() if case.pick in line), shown)[:200]
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            code, output = f"timeout {TIMEOUT_S}s", stderr + stdout
            shown = "(killed after the timeout) " + (first_line(stderr) or first_line(stdout))
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # workers left behind by a parent that exited
            except ProcessLookupError:
                pass
        seconds = time.perf_counter() - start
        after = snapshot(root)
        allowed = tuple(o + os.sep for o in case.outputs)
        outside = sorted(p for p, stamp in after.items() if before.get(p) != stamp and not p.startswith(allowed))
        return Result(case.group, case.name, code, shown, "Traceback" in output, outside, round(seconds, 1),
                      case.should_fail)


def run_all(nlpkit_bin: Path, out: Path, only: str | None) -> None:
    nlpkit = nlpkit_bin.resolve() / "nlpkit"
    results = []
    with tempfile.TemporaryDirectory(prefix="badin-fixtures-") as tmp:
        fixtures = Fixtures(nlpkit, Path(tmp))  # trained lazily, by the first case that needs one
        for case in cases():
            if only and not re.search(only, f"{case.group} {case.name}"):
                continue
            result = run_case(case, nlpkit, fixtures)
            results.append(asdict(result))
            save(out, nlpkit_bin, results)  # after each case: a run cut short keeps what it measured
            print(f"{result.group:<10} {result.name:<45} exit={result.exit!s:<4} tb={int(result.traceback)} "
                  f"outside={len(result.wrote_outside)} {result.seconds:5.1f}s  {result.first_line}",
                  flush=True)
    save(out, nlpkit_bin, results)


def save(out: Path, nlpkit_bin: Path, results: list[dict]) -> None:
    commit = subprocess.run(["git", "-C", str(nlpkit_bin.parent.parent), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"nlpkit": str(nlpkit_bin), "commit": commit, "cases": results}, indent=1) + "\n")


# ------------------------------------------------------------------------------------------------------ table

def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def verdict(r: dict) -> str:
    bad = []
    if r["traceback"]:
        bad.append("traceback")
    if r["wrote_outside"]:
        bad.append("wrote outside")
    if r["should_fail"] and r["exit"] == 0:
        bad.append("exit 0")
    if not r["should_fail"] and r["exit"] not in (0, "not built"):
        bad.append(f"exit {r['exit']} where it should carry on")
    if not isinstance(r["exit"], int):
        bad.append(str(r["exit"]))
    return ", ".join(bad) or "ok"


def table(before_path: Path, after_path: Path) -> str:
    before = json.loads(before_path.read_text())
    after = json.loads(after_path.read_text())
    old = {(r["group"], r["name"]): r for r in before["cases"]}
    expected = {(c.group, c.name): c.should_fail for c in cases()}  # the corpus's word, not the record's
    for r in before["cases"] + after["cases"]:
        r["should_fail"] = expected.get((r["group"], r["name"]), r["should_fail"])
    rows = [f"Before: `{before['commit']}`, after: `{after['commit']}`. Verdict: a traceback, a file written outside "
            "the output folders, exit 0 where the case must fail (or not 0 where it should carry on: a corrupt "
            "results.json re-run, a broken plugin skipped), or a timeout; else ok. Whether a message is clear is for "
            "the reader.\n",
            "| class | case | before: exit, first line | after: exit, first line | traceback? (before/after) | "
            "wrote outside? (before/after) | verdict before / after |",
            "|---|---|---|---|---|---|---|"]
    for r in after["cases"]:
        b = old.get((r["group"], r["name"]))

        def show(x: dict | None) -> str:
            return "not run" if x is None else f"{x['exit']}: {cell(x['first_line'])}"

        def outside(x: dict | None) -> str:
            if x is None:
                return "-"
            files = x["wrote_outside"]
            return f"yes, {len(files)} files: {files[0]} ..." if files else "no"

        rows.append(f"| {r['group']} | {cell(r['name'])} | {show(b)} | {show(r)} | "
                    f"{'-' if b is None else ('yes' if b['traceback'] else 'no')} / {'yes' if r['traceback'] else 'no'}"
                    f" | {cell(outside(b))} / {cell(outside(r))} | {'-' if b is None else verdict(b)} / "
                    f"{verdict(r)} |")
    counts = {name: sum(verdict(r) == "ok" for r in data["cases"]) for name, data in (("before", before),
                                                                                       ("after", after))}
    rows.append(f"\nok: before {counts['before']}/{len(before['cases'])}, after {counts['after']}/"
                f"{len(after['cases'])}.")
    return "\n".join(rows) + "\n"


def merge(first: Path, second: Path, out: Path) -> None:
    """A rerun of some cases (``--only``) folded into a whole run's results, in the corpus's order."""
    a, b = json.loads(first.read_text()), json.loads(second.read_text())
    by_case = {(r["group"], r["name"]): r for r in a["cases"] + b["cases"]}
    order = [(c.group, c.name) for c in cases()]
    a["cases"] = [by_case[key] for key in order if key in by_case]
    a["rerun"] = sorted({r["name"] for r in b["cases"]})
    out.write_text(json.dumps(a, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nlpkit", type=Path, help="the bin folder of the venv whose nlpkit is run")
    parser.add_argument("--out", type=Path, help="results JSON")
    parser.add_argument("--only", help="run the cases whose 'class name' matches this regular expression")
    parser.add_argument("--merge", nargs=2, type=Path, metavar=("A", "B"), help="B's cases replace A's, into --out")
    parser.add_argument("--table", nargs=2, type=Path, metavar=("BEFORE", "AFTER"), help="print the markdown table")
    args = parser.parse_args()
    if args.table:
        sys.stdout.write(table(*args.table))
    elif args.merge and args.out:
        merge(*args.merge, args.out)
    elif args.nlpkit and args.out:
        run_all(args.nlpkit, args.out, args.only)
    else:
        parser.error("give --nlpkit and --out, or --table BEFORE AFTER")


if __name__ == "__main__":
    main()
