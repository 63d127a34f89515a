"""The headline figures, rendered from the results file the benchmark runs append to.

``benchmarks/results.jsonl`` holds one JSON line per run of ``benchmarks.retrieval --results`` (with the
command, commit and wall time). This script turns it into the one table of headline figures that README.md
shows between ``<!-- headline:begin -->`` and ``<!-- headline:end -->``:

    python -m benchmarks.report            # print the table
    python -m benchmarks.report --write    # rewrite the block in README.md
    python -m benchmarks.report --check    # exit 1 when the block differs from the results file

REPRODUCTION.md (``benchmarks.reproduce``) renders the same table at its top.

A cell is the test mAP of a scheme's default preset (or a baseline) at the table's code length (a run whose
overrides only set values the current default preset now has counts as the default), mean ±
sample standard deviation over the run's seeds, with its ratio to ITQ trained in the same run. When several
runs hold the same cell, the one over the most seeds wins, and the last line of the file among those. Runs on a
subset of the training items
(``--train-size``) or with a few labels (``--labelled-per-class``) are diagnostics, never headline cells.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import textwrap

import numpy as np

from benchmarks import _common

RESULTS = os.path.join(_common.ROOT, "benchmarks", "results.jsonl")
DOCUMENTS = ("README.md",)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=RESULTS, help="the results file (JSON lines)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="rewrite the headline block of README.md")
    action.add_argument("--check", action="store_true", help="exit 1 when a document's block differs")
    args = parser.parse_args(argv)

    block = headline_table(load_results(args.results))
    if not (args.write or args.check):
        print(block)
        return 0
    stale = []
    for name in DOCUMENTS:
        path = os.path.join(_common.ROOT, name)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        updated = replace_block(text, block, name)
        if updated == text:
            continue
        if args.check:
            stale.append(name)
        else:
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                f.write(updated)
            os.replace(path + ".tmp", path)
            print(f"rewrote the headline block of {name}")
    if stale:
        print(f"headline figures differ from {args.results}: {', '.join(stale)} "
              "(run python -m benchmarks.report --write)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
