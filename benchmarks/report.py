"""The documents generated from ``benchmarks/results.jsonl``, the file every benchmark's ``--results`` appends to.

    python -m benchmarks.report            # print README.md's headline table
    python -m benchmarks.report --write    # rewrite it and BENCHMARKS.md
    python -m benchmarks.report --check    # exit 1 when either differs from the results file

README.md's headline block (between ``<!-- headline:begin -->`` and ``<!-- headline:end -->``; REPRODUCTION.md
shows it too) holds the test mAP of each scheme's default preset and the baselines at 32 bits, mean ± sample
standard deviation over seeds, as a ratio to ITQ trained in the same run. A run counts as the default when its
settings are those of the current default preset; the record over the most seeds holding a cell wins, the last
one on a tie; runs on a subset of the training items or a few labels are never headline cells.

BENCHMARKS.md is ``benchmarks/benchmarks.toml`` (each section's hand-written notes and its tables' columns)
filled from the last record of each benchmark; its appendix, ``benchmarks/speed_records.md``, is included verbatim.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import textwrap
import time
import tomllib

import numpy as np

from benchmarks import _common

RESULTS = os.path.join(_common.ROOT, "benchmarks", "results.jsonl")
SPEED_FILE = os.path.join(_common.ROOT, "benchmarks", "benchmarks.toml")  # BENCHMARKS.md's notes and tables
SPEED_APPENDIX = os.path.join(_common.ROOT, "benchmarks", "speed_records.md")  # earlier records, verbatim
BEGIN, END = "<!-- headline:begin -->", "<!-- headline:end -->"

BITS = 32
# (benchmark data name, column heading): the training set size is what the defaults have to hold at.
COLUMNS = (("mnist10k", "mnist-10k (9,000 training images)"),
           ("fashion10k", "fashion-mnist-10k (9,000)"),
           ("fashion70k", "fashion70k (69,000)"),
           ("digits", "digits (1,597)"))
ROWS = ("itq", "bgan", "cibhash", "greedyhash", "hashgan")


def load_results(path: str = RESULTS) -> list[dict]:
    """Every record of the results file, in file order; a malformed line is an error naming its number."""
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {number}: not a JSON record ({error})") from None
    return records


def _default_presets() -> dict[str, str]:
    from tfhash import schemes

    return {name: schemes.get(name).default_preset for name in schemes.names()}


def _restates_the_default(scheme: str, bits: int, overrides: dict) -> bool:
    """Whether every override sets a hyperparameter to the value the scheme's current default preset gives
    it at ``bits`` (a run made before a default took that value, with the value set by hand)."""
    from tfhash import schemes

    cls = schemes.get(scheme)
    default = cls.presets[cls.default_preset].settings(bits)["hyperparameters"]
    return all(key in default and default[key] == value for key, value in overrides.items())


def _trained_as_the_default_now(scheme: str, run: dict) -> bool:
    """Whether a run that recorded its hyperparameters trained with every value the scheme's current default
    preset sets at its code length (runs that predate the field: assumed so)."""
    recorded = run.get("hyperparameters")
    if recorded is None:
        return True
    from tfhash import schemes

    cls = schemes.get(scheme)
    preset = cls.presets[cls.default_preset].settings(run["bits"])["hyperparameters"]
    return all(recorded.get(key) == schemes.settings.recorded(cls, key, value) for key, value in preset.items())


def _given(record: dict, option: str) -> bool:
    """Whether the run's command set ``option`` (records that predate the field: read from the command)."""
    if option in record:
        return record[option] is not None
    return f"--{option.replace('_', '-')}" in record.get("command", "").split()


def run_method(record: dict, run: dict, defaults: dict[str, str]) -> str | None:
    """The row a run belongs to: a baseline's name, a scheme's name when it ran its default preset unchanged,
    or None (another preset, overrides, or epochs / batch size set on the command line)."""
    if run.get("baseline") and not run.get("compared"):
        return run["method"]
    if run.get("compared"):  # trained beside the candidates with its default preset
        return None if _given(record, "compare_epochs") else run.get("scheme") or run["method"].split()[0]
    scheme = record["scheme"]
    overrides = run.get("overrides") or {}
    changed = ((overrides and not _restates_the_default(scheme, run["bits"], overrides))
               or _given(record, "epochs") or _given(record, "batch_size")
               or not _trained_as_the_default_now(scheme, run))
    if run.get("preset") == defaults.get(scheme) and not changed:
        return scheme
    return None


def headline_cells(records: list[dict], bits: int = BITS) -> dict[tuple[str, str], dict]:
    """``{(data, method): {"test": [...], "itq": [...], "seeds": [...], "commit": ...}}`` from the record with
    the most seeds holding each cell, the last of them on a tie; the ITQ figures are the same record's."""
    defaults = _default_presets()
    cells = {}
    for record in records:
        if record.get("benchmark") != "retrieval" or record.get("protocol") != "labels":
            continue
        if record.get("train_size") is not None or record.get("labelled_per_class") is not None:
            continue
        found = {}
        for run in record["runs"]:
            if run["bits"] != bits:
                continue
            method = run_method(record, run, defaults)
            if method is not None:
                found.setdefault((run["data"], method), {})[run["seed"]] = run["test"]
        for (data, method), by_seed in found.items():
            itq = found.get((data, "itq"))
            if itq is None or sorted(itq) != sorted(by_seed):
                continue  # no ITQ on the same seeds in this run: not a headline cell
            seeds = sorted(by_seed)
            if len(seeds) < len(cells.get((data, method), {}).get("seeds", [])):
                continue  # a run over fewer seeds does not replace one over more
            cells[(data, method)] = {"test": [by_seed[s] for s in seeds], "itq": [itq[s] for s in seeds],
                                     "seeds": seeds, "commit": record.get("commit")}
    return cells


def format_cell(cell: dict | None) -> str:
    if cell is None:
        return "not measured"
    test = np.asarray(cell["test"], dtype=float)
    ratio = test.mean() / np.mean(cell["itq"])
    if test.size == 1:
        return f"{test[0]:.3f} (1 seed, {ratio:.2f}x)"
    return f"{test.mean():.3f} ± {test.std(ddof=1):.3f} ({ratio:.2f}x)"


def headline_table(records: list[dict], bits: int = BITS) -> str:
    """The markdown block: a caption and one row per method."""
    cells = headline_cells(records, bits)
    caption = (f"Test mAP at {bits} bits, default presets, mean ± sample standard deviation over 3 seeds (x ITQ "
               "trained in the same run); label protocol, 100 test queries per class (10 on digits), settings "
               "chosen on validation queries drawn from the training items. Generated by "
               "`python -m benchmarks.report --write` from `benchmarks/results.jsonl`, which holds each "
               "figure's command and commit.")
    lines = [*textwrap.wrap(caption, width=110, break_on_hyphens=False), "",
             "| method | " + " | ".join(heading for _, heading in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 1) + "|"]
    for method in ROWS:
        row = [format_cell(cells.get((data, method))) for data, _ in COLUMNS]
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def replace_block(text: str, block: str, name: str = "document") -> str:
    """``text`` with the part between the markers replaced by ``block``."""
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    if len(pattern.findall(text)) != 1:
        raise ValueError(f"{name}: expected one {BEGIN} ... {END} block")
    return pattern.sub(lambda _: f"{BEGIN}\n{block}\n{END}", text)


# --- tables declared as data: a selection of records and a format template per column -----------------------


def command(record: dict) -> str:
    """The record's command without where it wrote (``--results``, ``--checkpoint``): what reruns it."""
    words = shlex.split(record.get("command", ""))
    kept = [w for i, w in enumerate(words) if not (w in ("--results", "--checkpoint")
                                                  or i and words[i - 1] in ("--results", "--checkpoint"))]
    return shlex.join(kept)


def select(records: list[dict], spec: dict) -> list[dict]:
    """The records a table shows: those of ``spec["benchmark"]`` whose command starts with ``spec["command"]`` and
    whose fields equal ``spec["where"]``; the last one for each value of the fields ``spec["each"]`` names
    (one record when it names none), in the order those values first appear."""
    chosen = {}
    for record in records:
        if (record.get("benchmark") == spec["benchmark"] and command(record).startswith(spec.get("command", ""))
                and all(record.get(key) == value for key, value in spec.get("where", {}).items())):
            chosen[tuple(json.dumps(record.get(key)) for key in spec.get("each", ()))] = record
    return list(chosen.values())


def _cell(templates, row: dict, record: dict) -> str:
    """The first template that ``row`` (and its ``record``) fills; blank when none does."""
    for template in [templates] if isinstance(templates, str) else templates:
        try:
            return template.format(**row, record=record)
        except (KeyError, IndexError, TypeError, ValueError):
            continue
    return ""


def record_table(spec: dict, records: list[dict]) -> list[str]:
    """A markdown table: a row per item of each selected record's ``spec["rows"]`` list (the record itself when it
    names none), a column per ``[heading, template]`` of ``spec["columns"]`` (a list of templates: the first that
    fills), then the line naming what made it."""
    chosen = select(records, spec)
    columns = spec["columns"]
    lines = ["| " + " | ".join(heading for heading, _ in columns) + " |", "|---" * len(columns) + "|"]
    for record in chosen:
        for row in record[spec["rows"]] if "rows" in spec else [record]:
            lines.append("| " + " | ".join(_cell(template, row, record) for _, template in columns) + " |")
    if not chosen:
        return lines + ["| not run yet |" + " |" * (len(columns) - 1)]
    made = sorted({f"`{command(r)}`" for r in chosen}) if spec.get("commands", True) else []
    machine = chosen[-1].get("machine", {})
    commits = ", ".join(sorted({str(r.get("commit"))[:7] for r in chosen}))
    return lines + ["", "; ".join(made + [f"commit {commits}, {machine.get('cpu', 'CPU not recorded')}, "
                                           f"{machine.get('cpus', '?')} cores"]) + "."]


def render_section(section: dict, records: list[dict]) -> list[str]:
    lines = [f"## {section['title']}", ""]
    if "run" in section:
        lines += ["```bash", section["run"].strip(), "```", ""]
    for part in section["parts"]:
        if "text" in part:
            lines += [part["text"].strip(), ""]
        if "columns" in part:
            lines += [*record_table({"benchmark": section.get("benchmark"), **part}, records), ""]
    return lines


def render_benchmarks(records: list[dict], path: str = SPEED_FILE) -> str:
    """BENCHMARKS.md's text."""
    with open(path, "rb") as f:
        declared = tomllib.load(f)
    lines = [f"# {declared['title']}", "", declared["intro"].strip(), ""]
    for section in declared["section"]:
        lines += render_section(section, records)
    with open(SPEED_APPENDIX, encoding="utf-8") as f:
        return "\n".join(lines + [declared["appendix"].strip(), "", f.read()])


def finish(record: dict, results: str | None, started: float) -> None:
    """A benchmark's last words: its BENCHMARKS.md tables filled from ``record``, then ``record`` as one JSON
    line, also appended to ``results`` (with its command, commit and wall time) when given."""
    with open(SPEED_FILE, "rb") as f:
        sections = tomllib.load(f)["section"]
    for part in (part for section in sections for part in section["parts"]
                 if part.get("benchmark", section.get("benchmark")) == record["benchmark"] and "columns" in part):
        print("\n".join(record_table({**part, "benchmark": record["benchmark"], "commands": False}, [record])[:-2]))
        print()
    if results:
        _common.append_result(results, record, time.perf_counter() - started)
    print(json.dumps(record, sort_keys=True, default=float))


def documents(records: list[dict]) -> dict[str, str]:
    """``{path: text}`` of every generated document, README.md's with its block replaced."""
    readme = os.path.join(_common.ROOT, "README.md")
    with open(readme, encoding="utf-8") as f:
        text = replace_block(f.read(), headline_table(records), "README.md")
    return {readme: text, os.path.join(_common.ROOT, "BENCHMARKS.md"): render_benchmarks(records)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=RESULTS, help="the results file (JSON lines)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="rewrite README.md's headline block and BENCHMARKS.md")
    action.add_argument("--check", action="store_true", help="exit 1 when a document differs from the results")
    args = parser.parse_args(argv)

    from tfhash import _io  # here: the speed scripts that import this module need not load TensorFlow

    records = load_results(args.results)
    if not (args.write or args.check):
        print(headline_table(records))
        return 0
    stale = []
    for path, text in documents(records).items():
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                continue
        if args.check:
            stale.append(os.path.basename(path))
        else:
            _io.write_bytes_atomically(path, text, mode="w")
            print(f"rewrote {os.path.basename(path)}")
    if stale:
        print(f"{', '.join(stale)} differ from {args.results} (run python -m benchmarks.report --write)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
