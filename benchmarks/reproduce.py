"""REPRODUCTION.md: each paper's tables as printed, our figure in the same cell, and the verdict on the GANs.

    python -m benchmarks.reproduce --list                 # every job: its command, and whether it has run
    python -m benchmarks.reproduce --run JOB [JOB ...]    # run jobs; each appends its record when it ends
    python -m benchmarks.reproduce --run-missing          # every job the results file does not hold yet, in order
    python -m benchmarks.reproduce --report               # rewrite REPRODUCTION.md from the results file
    python -m benchmarks.reproduce --check                # exit 1 when REPRODUCTION.md differs from it

A **job** is one ``benchmarks.retrieval`` command on one data set at one code length, declared with the
papers' tables and the hand-written notes in ``benchmarks/reproduction.toml``; it appends one record to
``benchmarks/results.jsonl``, and keeps its finished runs in ``checkpoints/JOB`` beside it until then, so it
resumes after an interruption (docs/benchmarks.md). No sentence is composed from figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import shlex
import subprocess
import sys
import tomllib

import numpy as np

from benchmarks import _common, report

DOCUMENT = os.path.join(_common.ROOT, "REPRODUCTION.md")
APPENDIX = os.path.join(_common.ROOT, "benchmarks", "quality_records.md")  # earlier records, moved here verbatim
TABLES_FILE = os.path.join(_common.ROOT, "benchmarks", "reproduction.toml")  # the papers' tables and the notes
PREFIX = "python -m benchmarks.retrieval "


# --- what to run -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Job:
    name: str
    group: str
    data: str
    bits: int
    args: tuple  # benchmarks.retrieval arguments, without --data, --bits and --results

    @property
    def argv(self) -> list:
        return ["--scheme", *self.args[:1], "--data", self.data, "--bits", str(self.bits), *self.args[1:]]

    @property
    def command(self) -> str:
        return PREFIX + shlex.join(self.argv)


TWO_DATA = ("mnist10k", "fashion10k")


def load_jobs(path=TABLES_FILE):
    """The jobs ``benchmarks/reproduction.toml`` declares: one per data set and code length of each entry."""
    with open(path, "rb") as f:
        return [Job(f"{entry['group']}-{data}-{bits}", entry["group"], data, bits, (entry["scheme"], *entry["args"]))
                for entry in tomllib.load(f)["job"] for data in entry.get("data", TWO_DATA)
                for bits in entry.get("bits", (16, 32, 64))]


JOBS = load_jobs()
JOBS_BY_NAME = {job.name: job for job in JOBS}
JOBS_BY_CELL = {(job.group, job.data, job.bits): job for job in JOBS}
assert len(JOBS_BY_NAME) == len(JOBS) == len(JOBS_BY_CELL), "job names and cells must be unique"


# --- what to show ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Ours:
    """Our figure for a row: run ``method`` of job group ``group`` (a baseline's name, a candidate's label, or
    a ``--compare`` scheme's name); with ``minus``, the per-seed difference from that method of the same runs."""

    group: str
    method: str
    minus: str | None = None
    versus_itq: bool = False  # also show the ratio to ITQ trained in the same runs


@dataclasses.dataclass(frozen=True)
class Column:
    heading: str
    data: str
    bits: int
    metric: str = "mAP"  # "mAP" is the run's test figure, CODE_SHAPE's keys its code shape; others its test_details


@dataclasses.dataclass(frozen=True)
class Row:
    label: str
    paper: tuple = ()  # the paper's figures as printed, one per column ("" where the paper has none)
    ours: Ours | None = None


@dataclasses.dataclass(frozen=True)
class Table:
    anchor: str
    title: str
    notes: str
    columns: tuple
    rows: tuple
    percent: bool = False  # the paper prints percentages: ours are shown the same way
    findings: object = None  # (table, found) -> a table computed from the figures, shown under the table
    finding: str = ""  # a hand-written note on what the figures show


@dataclasses.dataclass(frozen=True)
class Verdict:
    scheme: str
    on: Ours
    off: Ours
    reference: tuple  # non-adversarial methods: the best of them, per cell
    data: tuple = TWO_DATA
    bits: tuple = (16, 32, 64)
    note: str = ""
    finding: str = ""  # a hand-written note on what the row's figures show


def _mean(found, row, column, metric="mAP"):
    """The mean over seeds of ``row``'s figure in ``column`` (None when its job has not run)."""
    values = per_seed(found, row.ours, column.data, column.bits, metric)
    return float(np.mean(list(values.values()))) if values else None


def binary_optimisation_findings(table, found):
    """BGAN's Table 4 as differences: each variant against app continuation (the `paper` preset), the paper's
    difference beside ours, and how binary the trained outputs are."""
    two_step, tanh, app = table.rows
    lines = ["What the figures show, each variant against app continuation on the same seed (the paper's "
             "difference · ours), and how binary the trained outputs are (share within 1% of ±1 at the last beta; "
             "range of bit frequencies over the database):", "",
             "| bits | tanh − app | two-step − app | outputs at ±1: app / tanh / two-step | bit frequencies: app / "
             "tanh / two-step |", "|---|---|---|---|---|"]
    for index, column in enumerate(table.columns):
        differences, base = [], _mean(found, app, column)
        for row in (tanh, two_step):
            paper = float(row.paper[index]) - float(app.paper[index])
            mine = _mean(found, row, column)
            ours = None if mine is None or base is None else mine - base
            differences.append(f"{paper:+.3f} · " + ("not run" if ours is None else f"{ours:+.4f}"))
        shares, frequencies = [], []
        for row in (app, tanh, two_step):
            share = _mean(found, row, column, "saturation")
            shares.append("not run" if share is None else f"{share:.2%}")
            frequencies.append("not run" if share is None else f"{_mean(found, row, column, 'bit_freq_min'):.2f}-"
                                                               f"{_mean(found, row, column, 'bit_freq_max'):.2f}")
        lines.append(f"| {column.bits} | {' | '.join(differences)} | {' / '.join(shares)} | "
                     f"{' / '.join(frequencies)} |")
    return "\n".join(lines)


NON_ADVERSARIAL_NAMES = {"itq": "ITQ", "scratch": "CIBHash", "bgan": "BGAN l_N"}
FINDINGS = {"binary_optimisation_findings": binary_optimisation_findings}


def load_tables(path=TABLES_FILE):
    """``(tables, verdicts, record tables, texts)`` as ``benchmarks/reproduction.toml`` declares them."""
    with open(path, "rb") as f:
        declared = tomllib.load(f)

    def ours(entry):
        return None if entry is None else Ours(**entry)

    tables = [Table(t["anchor"], t["title"], t["notes"], tuple(Column(*column) for column in t["columns"]),
                    tuple(Row(row["label"], tuple(row.get("paper", ())), ours(row.get("ours"))) for row in t["rows"]),
                    percent=t.get("percent", False), findings=FINDINGS.get(t.get("findings")),
                    finding=t.get("finding", "")) for t in declared["table"]]
    verdicts = [Verdict(v["scheme"], ours(v["on"]), ours(v["off"]), tuple(ours(r) for r in v["reference"]),
                        note=v["note"], finding=v["finding"]) for v in declared["verdict"]]
    return tables, verdicts, declared["record_table"], declared["text"]


TABLES, VERDICTS, RECORD_TABLES, TEXT = load_tables()


# --- reading the results -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _parser():
    from benchmarks import retrieval

    return retrieval.build_parser()


def _arguments(argv):
    values = vars(_parser().parse_args(argv))
    values.pop("results")
    values.pop("checkpoint")
    return values


def record_arguments(record):
    """The parsed arguments of a record's command, or None when it is not a retrieval command we can read."""
    command = record.get("command", "")
    if record.get("benchmark") != "retrieval" or not command.startswith(PREFIX):
        return None
    try:
        return _arguments(shlex.split(command[len(PREFIX):]))
    except SystemExit:  # a command line of an older version of the script
        return None


def job_records(records):
    """``{job name: record}``: the last record of each job in the results file."""
    wanted = {job.name: _arguments(job.argv) for job in JOBS}
    found = {}
    for record in records:
        arguments = record_arguments(record)
        if arguments is None:
            continue
        for name, expected in wanted.items():
            if arguments == expected:
                found[name] = record
    return found


def _job(group_name, data, bits):
    return JOBS_BY_CELL.get((group_name, data, bits))


# How binary a trained scheme's outputs are, recorded on its run (benchmarks.retrieval.code_shape).
CODE_SHAPE = ("saturation", "bit_freq_min", "bit_freq_max")


def per_seed(found, ours, data, bits, metric):
    """``{seed: value}`` of ``ours`` in its job's record (empty when the job has not run)."""
    job = _job(ours.group, data, bits)
    record = found.get(job.name) if job else None
    if record is None:
        return {}

    def values(method):
        out = {}
        for run in record["runs"]:
            if run["data"] != data or run["bits"] != bits:
                continue
            if run["method"] != method and not (run.get("compared") and run.get("scheme") == method):
                continue
            if metric == "mAP":
                value = run["test"]
            elif metric in CODE_SHAPE:
                value = run.get(metric)
            else:
                value = run.get("test_details", {}).get(metric)
            if value is not None:
                out[run["seed"]] = float(value)
        return out

    mine = values(ours.method)
    if ours.minus is None:
        return mine
    base = values(ours.minus)
    return {seed: mine[seed] - base[seed] for seed in mine if seed in base}


def _number(value, percent, signed=False, digits=3):
    text = f"{value * 100:.2f}" if percent else f"{value:.{digits}f}"
    if float(text) == 0:  # a difference that rounds to nothing carries no sign ("-0.000" reads as a loss)
        return text.lstrip("-")
    return ("+" if signed and value > 0 else "") + text


def format_figure(by_seed, percent=False, signed=False):
    if not by_seed:
        return "not run"
    values = np.array([by_seed[s] for s in sorted(by_seed)])
    if values.size == 1:
        return f"{_number(values[0], percent, signed)} (1 seed)"
    return f"{_number(values.mean(), percent, signed)} ± {_number(values.std(ddof=1), percent)}"


# --- rendering ------------------------------------------------------------------------------------------


def _job_names(cells):
    """The names of the jobs behind ``(Ours, data, bits)`` cells, in order, each once (cells without a job: none)."""
    names = []
    for ours, data, bits in cells:
        job = _job(ours.group, data, bits)
        if job and job.name not in names:
            names.append(job.name)
    return names


def _count(count, noun):
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _job_lines(names, found, started=None):
    """One line per job: its cost and commit, or how far it has got (``started``: job name -> finished runs)."""
    lines = []
    for name in names:
        job, record = JOBS_BY_NAME[name], found.get(name)
        runs = (started or {}).get(name, 0)
        if record is None and runs:
            lines.append(f"- `{name}`: started, {_count(runs, 'run')} finished so far "
                         f"(`benchmarks/checkpoints/{name}`); its "
                         f"cells fill when the last one has: `{job.command}`")
        elif record is None:
            lines.append(f"- `{name}`: not run yet: `{job.command}`")
        else:
            memory = record.get("peak_rss_mb")
            cost = f"{record['wall_seconds'] / 60:.0f} min" + (f", peak {memory:,.0f} MB" if memory else "")
            untimed = sum(run.get("untimed_epochs", 0) for run in record.get("runs", []))
            if untimed:  # epochs an interrupted invocation trained without keeping their time
                cost += f" (without the time of {_count(untimed, 'epoch')} trained before an interruption)"
            commits = f"commit {str(record.get('commit'))[:7]}"
            runs_before, epochs_before = record.get("resumed_runs", 0), record.get("resumed_epochs", 0)
            if runs_before or epochs_before:
                made = " and ".join([_count(runs_before, "run")] * bool(runs_before) +
                                    [_count(epochs_before, "epoch") + " of unfinished runs"] * bool(epochs_before))
                commits += f" (resumed after an interruption: {made} made before)"
            lines.append(f"- `{name}`: {cost}, {commits}: `{job.command}`")
    return lines


def render_table(table, found, started=None):
    lines = [f'<a id="{table.anchor}"></a>', f"### {table.title}", "", table.notes, "",
             "Each cell: the paper's figure as printed · ours (mean ± sample standard deviation over the seeds, "
             "test queries)." if any(row.paper and row.ours for row in table.rows) else
             "Ours: mean ± sample standard deviation over the seeds, test queries.", "",
             "| | " + " | ".join(column.heading for column in table.columns) + " |",
             "|---" * (len(table.columns) + 1) + "|"]
    for row in table.rows:
        cells = []
        for index, column in enumerate(table.columns):
            paper = row.paper[index] if row.paper else ""
            ours = ""
            if row.ours is not None and _job(row.ours.group, column.data, column.bits) is not None:
                values = per_seed(found, row.ours, column.data, column.bits, column.metric)
                ours = format_figure(values, table.percent, signed=row.ours.minus is not None)
                if row.ours.versus_itq and values:
                    itq = per_seed(found, Ours(row.ours.group, "itq"), column.data, column.bits, column.metric)
                    if itq:
                        ours += f" ({np.mean(list(values.values())) / np.mean(list(itq.values())):.2f}x ITQ)"
            cells.append(" · ".join(part for part in (paper, ours) if part) or "")
        lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    if table.findings is not None:
        lines += ["", table.findings(table, found)]
    if table.finding:
        lines += ["", table.finding]
    jobs = _job_names((row.ours, column.data, column.bits) for row in table.rows if row.ours is not None
                      for column in table.columns)
    if jobs:
        lines += ["", "Runs:", *_job_lines(jobs, found, started)]
    return "\n".join(lines)


def _best_reference(found, references, data, bits):
    best = None
    for ours in references:
        values = per_seed(found, ours, data, bits, "mAP")
        if values and (best is None or np.mean(list(values.values())) > np.mean(list(best[1].values()))):
            best = (ours.method, values)
    return best


def verdict_rows(found, verdict):
    """One row per (data, bits): on, off, the paired difference and the best non-adversarial method."""
    rows = []
    for data in verdict.data:
        for bits in verdict.bits:
            on = per_seed(found, verdict.on, data, bits, "mAP")
            off = per_seed(found, verdict.off, data, bits, "mAP")
            delta = {s: on[s] - off[s] for s in on if s in off}
            best = _best_reference(found, verdict.reference, data, bits)
            rows.append({"data": data, "bits": bits, "on": on, "off": off, "delta": delta, "best": best})
    return rows


def render_verdict(found, started=None):
    lines = ['<a id="verdict"></a>', "## The verdict: does the adversarial part pull its weight?", "",
             TEXT["verdict"], ""]
    rows_of = {verdict.scheme: verdict_rows(found, verdict) for verdict in VERDICTS}
    lines += [f"- **{verdict.scheme}**: {verdict.finding}" for verdict in VERDICTS]
    lines += ["", "| scheme | data | bits | GAN on | GAN off | Δ (on − off) | best non-adversarial |",
              "|---|---|---|---|---|---|---|"]
    for verdict in VERDICTS:
        anchor = f'<a id="verdict-{verdict.scheme.lower().replace("-", "")}"></a>'
        for index, r in enumerate(rows_of[verdict.scheme]):
            label = f"{anchor}{verdict.scheme}" if index == 0 else verdict.scheme
            best = "not run"
            if r["best"]:
                method, values = r["best"]
                best = f"{format_figure(values)} ({NON_ADVERSARIAL_NAMES.get(method, method)})"
            lines.append(f"| {label} | {r['data']} | {r['bits']} | {format_figure(r['on'])} | "
                         f"{format_figure(r['off'])} | {format_figure(r['delta'], signed=True)} | {best} |")
    lines += ["", "What each row compares:", *[f"- **{v.scheme}**: {v.note}." for v in VERDICTS]]
    names = _job_names((ours, data, bits) for verdict in VERDICTS
                       for ours in (verdict.on, verdict.off, *verdict.reference)
                       for data in verdict.data for bits in verdict.bits)
    lines += ["", "Runs:", *_job_lines(names, found, started)]
    return "\n".join(lines)


def render_record_table(entry, records):
    """A table filled from other benchmarks' records (``[[record_table]]`` in the declarations)."""
    lines = [f'<a id="{entry["anchor"]}"></a>', f"### {entry['title']}", "", entry["notes"], "",
             *report.record_table(entry, records)]
    return "\n".join(lines + (["", entry["footer"]] if "footer" in entry else []))


# Each section: its title and the prefix of its tables' anchors.
SECTIONS = (("Defaults at the papers' data size", "defaults"), ("HashGAN", "hashgan"), ("BGAN", "bgan"),
            ("DSH-GANs", "dshgan"), ("SiGAH", "sigah"))


def render(records, started=None):
    """REPRODUCTION.md's text from the result records; ``started`` (job name -> finished runs) names the jobs
    under way (``started_jobs``)."""
    found = job_records(records)
    done = sum(name in found for name in JOBS_BY_NAME)
    lines = ["# Reproduction report", "", TEXT["intro"], "",
             f"Jobs run: {done} of {len(JOBS)}" + (f", {len(started)} under way" if started else "") + " "
             + TEXT["jobs"], "", "## Headline figures", "", report.headline_table(records), "",
             render_verdict(found, started), ""]
    for title, prefix in SECTIONS:
        lines += [f"## {title}", ""]
        lines += [line for table in TABLES if table.anchor.startswith(prefix + "-")
                  for line in (render_table(table, found, started), "")]
        lines += [line for entry in RECORD_TABLES if entry["section"] == prefix
                  for line in (render_record_table(entry, records), "")]
    with open(APPENDIX, encoding="utf-8") as f:
        records_text = f.read()
    return "\n".join(lines + ["## Appendix: quality records made before these jobs", "", TEXT["appendix"], "",
                              records_text])


# --- command line -----------------------------------------------------------------------------------------


def checkpoint_directory(job, results):
    """Where ``job`` keeps its finished runs until its record is written: beside the results file, so running
    the job again after an interruption resumes it."""
    return os.path.join(os.path.dirname(os.path.abspath(results)), "checkpoints", job.name)


def finished_runs(job, results):
    """How many runs ``job`` has finished towards its record (0 when it has not started or has its record)."""
    path = os.path.join(checkpoint_directory(job, results), "runs.jsonl")
    if not os.path.isfile(path):
        return 0
    with open(path, encoding="utf-8") as f:
        return sum(line.endswith("\n") for line in f)  # a line cut short by an interruption is not a run


def started_jobs(results, found):
    """Job name -> finished runs, for each job under way: runs finished, no record yet."""
    runs = {job.name: finished_runs(job, results) for job in JOBS if job.name not in found}
    return {name: n for name, n in runs.items() if n}


def run_job(job, results):
    print(f"[{job.name}] {job.command}", flush=True)
    # TensorFlow turns its oneDNN kernels on by itself only on processors with AVX-512 VNNI, BF16 or AMX; elsewhere
    # BGAN's paper networks train 2.3-2.9x as slowly without them (BENCHMARKS.md (q)). A TF_ENABLE_ONEDNN_OPTS
    # already set is kept; the record says which ran (machine.onednn).
    env = {"TF_ENABLE_ONEDNN_OPTS": "1", **os.environ}
    completed = subprocess.run([sys.executable, "-m", "benchmarks.retrieval", *job.argv, "--results", results,
                                "--checkpoint", checkpoint_directory(job, results)], cwd=_common.ROOT, env=env)
    return completed.returncode


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=report.RESULTS, help="the results file (JSON lines)")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--list", action="store_true", help="every job, its command and whether it has run")
    action.add_argument("--run", nargs="+", metavar="JOB", help="run these jobs")
    action.add_argument("--run-missing", action="store_true", help="run every job without a record, in order")
    action.add_argument("--report", action="store_true", help="rewrite REPRODUCTION.md")
    action.add_argument("--check", action="store_true", help="exit 1 when REPRODUCTION.md differs")
    args = parser.parse_args(argv)

    records = report.load_results(args.results) if os.path.exists(args.results) else []
    found = job_records(records)
    started = started_jobs(args.results, found)
    if args.list:
        for job in JOBS:
            runs = started.get(job.name, 0)
            status = "done" if job.name in found else "started" if runs else "missing"
            print(f"{status:8} {job.name:28} {job.command}" + (f"  # {_count(runs, 'run')} finished" if runs else ""))
        return 0
    if args.run or args.run_missing:
        unknown = [name for name in args.run or [] if name not in JOBS_BY_NAME]
        if unknown:
            parser.error(f"--run takes job names (see --list), got {unknown}")
        jobs = [JOBS_BY_NAME[n] for n in args.run] if args.run else [j for j in JOBS if j.name not in found]
        for job in jobs:
            if run_job(job, args.results) != 0:
                print(f"[{job.name}] failed", file=sys.stderr)
                return 1
        return 0
    text = render(records, started)
    if args.check:
        with open(DOCUMENT, encoding="utf-8") as f:
            if f.read() != text:
                print(f"{DOCUMENT} differs from {args.results} (run python -m benchmarks.reproduce --report)",
                      file=sys.stderr)
                return 1
        return 0
    with open(DOCUMENT + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(DOCUMENT + ".tmp", DOCUMENT)
    print(f"wrote {DOCUMENT}: {sum(n in found for n in JOBS_BY_NAME)} of {len(JOBS)} jobs have figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
