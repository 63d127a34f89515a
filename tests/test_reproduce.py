"""REPRODUCTION.md: generated from the results file alone, every cell pointing at a figure its job records."""

import json
import os
import sys

import pytest

from benchmarks import _common, report, reproduce, retrieval
from tfhash import schemes
from trainers.config import parse_set_flags


def test_reproduction_md_is_the_report_of_the_committed_results_byte_for_byte():
    with open(reproduce.DOCUMENT, encoding="utf-8") as f:
        committed = f.read()
    records = report.load_results()
    started = reproduce.started_jobs(report.RESULTS, reproduce.job_records(records))
    assert reproduce.render(records, started) == committed, "run python -m benchmarks.reproduce --report"


def _labels(job):
    """Every method label a run of ``job`` records: its baselines, compared schemes and candidates."""
    args = retrieval.build_parser().parse_args(job.argv)
    cls = schemes.get(args.scheme)
    baselines = ["itq", *(args.baselines or cls.spec.paper_baselines)]
    grid = retrieval.parse_grid(args.grid, cls)
    runs = retrieval.candidates(cls, args.presets or [cls.default_preset], grid, parse_set_flags(args.set, cls),
                                args.ablation)
    return set(baselines) | set(args.compare) | {label for label, _, _ in runs}


def _references():
    """(where, Ours, data, bits) of every figure of ours the report shows (a table's column without a job for
    the row shows the paper's figure alone: e.g. code lengths not run here)."""
    for table in reproduce.TABLES:
        for row in table.rows:
            assert not row.paper or len(row.paper) == len(table.columns), (table.anchor, row.label)
            if row.ours is not None:
                cells = [c for c in table.columns if (row.ours.group, c.data, c.bits) in reproduce.JOBS_BY_CELL]
                assert cells, (table.anchor, row.label)
                for column in cells:
                    yield table.anchor, row.ours, column.data, column.bits
    for verdict in reproduce.VERDICTS:
        for ours in (verdict.on, verdict.off, *verdict.reference):
            for data in verdict.data:
                for bits in verdict.bits:
                    yield verdict.scheme, ours, data, bits


def test_every_cell_names_a_job_and_a_method_that_job_trains():
    for where, ours, data, bits in _references():
        job = reproduce.JOBS_BY_CELL.get((ours.group, data, bits))
        assert job is not None, (where, ours, data, bits)
        labels = _labels(job)
        assert ours.method in labels, (where, ours.method, sorted(labels))
        assert ours.minus is None or ours.minus in labels, (where, ours.minus)


def _record(job, runs, commit="abc1234"):
    return {"benchmark": "retrieval", "command": job.command + " --results benchmarks/results.jsonl",
            "commit": commit, "wall_seconds": 600.0, "peak_rss_mb": 1234.5, "protocol": "labels", "runs": runs,
            "scheme": job.args[0], "train_size": None, "labelled_per_class": None}


def _run(job, method, seed, test, **extra):
    return {"data": job.data, "bits": job.bits, "seed": seed, "method": method, "test": test, "validation": test,
            **extra}


def test_cells_show_mean_and_spread_paired_differences_and_the_job_cost():
    job = reproduce.JOBS_BY_CELL[("hashgan", "mnist10k", 32)]
    off = "paper -adversarial -feature -L2"  # the job's ablation
    runs = []
    for seed, (gan, no_gan, itq) in enumerate([(0.30, 0.40, 0.45), (0.32, 0.44, 0.45), (0.34, 0.42, 0.44)]):
        runs += [_run(job, "paper", seed, gan, test_details={"precision@1000": gan + 0.1}),
                 _run(job, off, seed, no_gan), _run(job, "itq", seed, itq)]
    found = reproduce.job_records([_record(job, runs)])
    assert found == {job.name: _record(job, runs)}
    assert reproduce.format_figure(reproduce.per_seed(found, reproduce.Ours("hashgan", "paper"), "mnist10k", 32,
                                                      "mAP")) == "0.320 ± 0.020"
    details = reproduce.per_seed(found, reproduce.Ours("hashgan", "paper"), "mnist10k", 32, "precision@1000")
    assert reproduce.format_figure(details, percent=True) == "42.00 ± 2.00"
    delta = reproduce.per_seed(found, reproduce.Ours("hashgan", "paper", minus=off), "mnist10k", 32, "mAP")
    assert reproduce.format_figure(delta, signed=True) == "-0.100 ± 0.020"
    assert reproduce.format_figure({0: 0.5}) == "0.500 (1 seed)"
    assert reproduce.format_figure({}) == "not run"
    assert reproduce.format_figure({0: -0.0004, 1: 0.0001}, signed=True) == "0.000 ± 0.000"

    text = reproduce.render([_record(job, runs)])
    assert "| HashGAN | 91.13 · not run | 92.70 · 32.00 ± 2.00 | 93.93 · not run |" in text
    assert f"- `{job.name}`: 10 min, peak 1,234 MB, commit abc1234: `{job.command}`" in text
    # The verdict's table pairs the seeds of the GAN on and off.
    row, = [r for r in reproduce.verdict_rows(found, reproduce.VERDICTS[0]) if r["on"]]
    assert (row["data"], row["bits"], reproduce.format_figure(row["delta"], signed=True)) == (
        "mnist10k", 32, "-0.100 ± 0.020")


def test_each_verdict_and_bgan_table_4_carry_their_hand_written_findings():
    # The findings are notes written from the figures (they replace sentences composed from the figures).
    text = reproduce.render([])
    for verdict in reproduce.VERDICTS:
        assert verdict.finding and f"- **{verdict.scheme}**: {verdict.finding}" in text
    table = next(t for t in reproduce.TABLES if t.anchor == "bgan-table-4")
    assert table.finding and table.finding in text


def test_a_record_belongs_to_the_job_with_the_same_arguments_and_the_last_one_wins():
    job = reproduce.JOBS_BY_CELL[("sigah", "mnist10k", 32)]
    first = _record(job, [_run(job, "itq", 0, 0.5)], commit="1111111")
    reordered = dict(first, commit="2222222", command=reproduce.PREFIX + " ".join(
        ["--seeds", "0", "1", "2", "--bits", "32", "--data", "mnist10k", "--scheme", "sigah", "--presets", "paper",
         "itq_start", "--ablation=-discriminator", "--results", "x.jsonl"]))
    other = dict(first, commit="3333333", command=job.command.replace("--bits 32", "--bits 16 32"))
    stated = dict(first, commit="4444444", command=job.command + " --protocol euclidean")
    assert reproduce.job_records([first, other, stated])[job.name]["commit"] == "1111111"
    assert reproduce.job_records([first, reordered, other])[job.name]["commit"] == "2222222"
    assert reproduce.job_records([{"benchmark": "search", "command": "python -m benchmarks.search"}]) == {}


def test_the_command_line_checks_and_lists(tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    results.write_text("")
    assert reproduce.main(["--list", "--results", str(results)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == len(reproduce.JOBS) and all(line.startswith("missing") for line in listed)
    with pytest.raises(SystemExit):
        reproduce.main(["--run", "no-such-job", "--results", str(results)])
    assert "no-such-job" in capsys.readouterr().err
    assert os.path.exists(reproduce.DOCUMENT)


def test_a_recorded_command_reads_back_to_its_job_when_an_argument_holds_spaces(tmp_path, monkeypatch):

    job = reproduce.JOBS_BY_CELL[("hashgan", "mnist10k", 32)]  # '--ablation=-adversarial -feature -L2'
    monkeypatch.setattr(sys, "argv", ["benchmarks/retrieval.py", *job.argv])
    _common.append_result(str(tmp_path / "results.jsonl"), {"benchmark": "retrieval", "runs": []}, 1.0)
    records = report.load_results(str(tmp_path / "results.jsonl"))
    assert records[0]["command"] == job.command
    assert list(reproduce.job_records(records)) == [job.name]


def test_an_interrupted_job_resumes_from_its_finished_runs_and_its_record_says_so(tmp_path, monkeypatch):
    import tfhash

    real_fit, calls = tfhash.fit, []

    def fit(*args, checkpoint_dir=None, interrupt_at=None, **kwargs):
        calls.append(checkpoint_dir)
        if len(calls) == interrupt_at:
            raise KeyboardInterrupt  # the session ends while this run trains
        return real_fit(*args, checkpoint_dir=checkpoint_dir, **kwargs)

    directory, results = tmp_path / "job", tmp_path / "results.jsonl"
    argv = ["--scheme", "sigah", "--data", "digits", "--bits", "8", "--seeds", "0", "1", "--epochs", "1",
            "--baselines", "lsh", "--results", str(results), "--checkpoint", str(directory)]
    monkeypatch.setattr(sys, "argv", ["benchmarks/retrieval.py", *argv])
    monkeypatch.setattr(tfhash, "fit", lambda *a, **k: fit(*a, interrupt_at=2, **k))
    with pytest.raises(KeyboardInterrupt):
        retrieval.main(argv)
    assert not results.exists() and (directory / "runs.jsonl").read_text().count("\n") == 5  # 2 seeds' baselines, 1 run
    interrupted_at = calls[-1]
    assert os.path.dirname(interrupted_at) == str(directory)

    # Another command is refused the directory, and so is a directory this benchmark did not make.
    with pytest.raises(SystemExit, match="another command"):
        retrieval.main([*argv[:-2], "--bits", "16", "--checkpoint", str(directory)])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(SystemExit, match="did not make"):
        retrieval.main([*argv[:-2], "--checkpoint", str(tmp_path / "mine")])
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    with pytest.raises(SystemExit, match="must be a directory"):
        retrieval.main([*argv[:-2], "--checkpoint", str(tmp_path / "mine" / "notes.txt")])
    (tmp_path / "empty").mkdir()  # not made by the benchmark: never filled, so never removed
    with pytest.raises(SystemExit, match="did not make"):
        retrieval.main([*argv[:-2], "--checkpoint", str(tmp_path / "empty")])
    assert (tmp_path / "empty").is_dir()
    arguments = json.loads((directory / "command.json").read_text())
    holder = retrieval.RunLog(str(directory), arguments)  # a command still running on the directory
    with pytest.raises(SystemExit, match="in use"):
        retrieval.main(argv)
    holder._lock.close()

    # A directory made before an option existed is the same command while that option keeps its default.
    del arguments["train_size"]
    (directory / "command.json").write_text(json.dumps(arguments))
    with pytest.raises(SystemExit, match="another command"):
        retrieval.main([*argv, "--train-size", "100"])
    with open(directory / "runs.jsonl", "a") as f:
        f.write('{"key": ["digits", 8, 1, "itq_st')  # the interruption cut the last line short
    calls.clear()
    monkeypatch.setattr(tfhash, "fit", fit)
    retrieval.main(argv)
    assert calls == [interrupted_at]  # only the unfinished run trains, in the epoch checkpoints it had begun
    record = report.load_results(str(results))[0]
    assert record["resumed_runs"] == 5 and "resumed_epochs" not in record
    assert [(r["seed"], r["method"]) for r in record["runs"]] == [
        (0, "itq"), (0, "lsh"), (0, "itq_start"), (1, "itq"), (1, "lsh"), (1, "itq_start")]
    assert not directory.exists()  # removed once the record is written
    assert reproduce.record_arguments(record) == reproduce.record_arguments(
        dict(record, command=record["command"].replace(f" --checkpoint {directory}", "")))


def test_a_run_resumed_from_its_epoch_checkpoints_counts_the_time_of_the_epochs_trained_before(tmp_path, monkeypatch):
    import keras

    import tfhash

    real_fit = tfhash.fit

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt  # after the first epoch's checkpoint and running total are written

    directory, results = tmp_path / "job", tmp_path / "results.jsonl"
    argv = ["--scheme", "sigah", "--data", "digits", "--bits", "8", "--seeds", "0", "--epochs", "2",
            "--baselines", "lsh", "--results", str(results), "--checkpoint", str(directory)]
    monkeypatch.setattr(tfhash, "fit",
                        lambda *a, callbacks=(), **k: real_fit(*a, callbacks=[*callbacks, Interrupt()], **k))
    with pytest.raises(KeyboardInterrupt):
        retrieval.main(argv)
    clock, = directory.glob("*.seconds.json")
    totals = json.loads(clock.read_text())
    assert list(totals) == ["1"] and totals["1"]["untimed_epochs"] == 0 and totals["1"]["seconds"] > 0
    clock.write_text(json.dumps({"1": {"seconds": 1000.0, "untimed_epochs": 0}}))  # a long first epoch
    monkeypatch.setattr(tfhash, "fit", real_fit)
    retrieval.main(argv)
    record = report.load_results(str(results))[0]
    run, = [run for run in record["runs"] if not run["baseline"]]
    assert 1000 < run["train_seconds"] < record["wall_seconds"] and "untimed_epochs" not in run
    assert not directory.exists()
    assert (record["resumed_runs"], record["resumed_epochs"]) == (2, 1)  # the baselines, and the first epoch
    name = reproduce.JOBS[0].name
    line, = reproduce._job_lines([name], {name: record})
    assert line.endswith(" (resumed after an interruption: 2 runs and 1 epoch of unfinished runs made before): `"
                         + reproduce.JOBS[0].command + "`")


def test_the_training_clock_counts_the_epochs_it_has_no_time_for():
    class Clock(retrieval.TrainingClock):
        def __init__(self, totals=None):
            super().__init__()
            self.totals = totals or {}

    totals = {1: {"seconds": 30.0, "untimed_epochs": 0}, 2: {"seconds": 70.0, "untimed_epochs": 0}}
    resumed = Clock(dict(totals))
    resumed.on_epoch_begin(2)
    assert (resumed.earlier, resumed.untimed_epochs) == (70.0, 0) and resumed.seconds() >= 70.0
    resumed.on_epoch_end(2)
    assert resumed.totals[3]["seconds"] >= 70.0 and resumed.totals[3]["untimed_epochs"] == 0
    late = Clock(dict(totals))  # epoch 3 was checkpointed, and the process ended before its total was written
    late.on_epoch_begin(3)
    assert (late.earlier, late.untimed_epochs) == (70.0, 1)
    assert resumed.resumed_epochs == 2
    unknown = Clock()  # checkpoints made before there was a clock
    unknown.on_epoch_begin(5)
    assert (unknown.earlier, unknown.untimed_epochs) == (0.0, 5)
    complete = Clock(dict(totals))  # the last checkpoint was the last epoch: the fit trains none
    assert complete.seconds(epochs_done=2) >= 70.0 and complete.untimed_epochs == 0
    record = {"wall_seconds": 600.0, "runs": [{"untimed_epochs": 5}, {"test": 0.5}]}
    line, = reproduce._job_lines(["bgan-table4-cifar6k-24"], {"bgan-table4-cifar6k-24": record})
    assert line.startswith("- `bgan-table4-cifar6k-24`: 10 min (without the time of 5 epochs trained before an "
                           "interruption), commit")


def test_a_logged_run_of_settings_the_command_no_longer_asks_for_is_trained_again(tmp_path, monkeypatch, capsys):
    import tfhash

    real_fit, calls = tfhash.fit, []

    def fit(*args, checkpoint_dir=None, interrupt=False, **kwargs):
        calls.append(checkpoint_dir)
        if interrupt and len(calls) == 2:
            raise KeyboardInterrupt
        return real_fit(*args, checkpoint_dir=checkpoint_dir, **kwargs)

    directory, results = tmp_path / "job", tmp_path / "results.jsonl"
    argv = ["--scheme", "sigah", "--data", "digits", "--bits", "8", "--seeds", "0", "1", "--epochs", "1",
            "--baselines", "lsh", "--results", str(results), "--checkpoint", str(directory)]
    monkeypatch.setattr(tfhash, "fit", lambda *a, **k: fit(*a, interrupt=True, **k))
    with pytest.raises(KeyboardInterrupt):
        retrieval.main(argv)
    # Seed 0's run was trained by an earlier preset, whose learning rate was 0.02.
    entries = [json.loads(line) for line in (directory / "runs.jsonl").read_text().splitlines()]
    (trained,) = [entry for entry in entries if entry["key"] == ["digits", 8, 0, "itq_start"]]
    asked = trained["run"]["hyperparameters"]["learning_rate"]
    trained["run"]["hyperparameters"]["learning_rate"] = 0.02
    (directory / "runs.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in entries))
    calls.clear()
    capsys.readouterr()
    monkeypatch.setattr(tfhash, "fit", fit)
    retrieval.main(argv)
    assert len(calls) == 2  # seed 0's run again, then seed 1's unfinished one
    assert (f"digits 8 bits seed 0 itq_start: finished earlier with other settings (learning_rate: logged 0.02, "
            f"asked {asked!r}); trained again") in capsys.readouterr().out
    record = report.load_results(str(results))[0]
    assert record["resumed_runs"] == 4  # the four baseline runs
    assert [run["hyperparameters"]["learning_rate"] for run in record["runs"] if not run["baseline"]] == [asked] * 2


def test_changed_settings_compare_what_a_run_recorded_with_what_the_command_asks_for():
    cls = schemes.get("bgan")
    runs = retrieval.candidates(cls, ["neighbours"], [{}], {"k1": 10, "momentum": 0.0}, None)
    settings = cls.presets["neighbours"].settings(32)
    recorded = {**cls.default_hyperparameters(), **settings["hyperparameters"], "k1": 10, "momentum": 0.0}
    run = {"hyperparameters": recorded, "batch_size": settings["batch_size"]}
    key = ("cifar6k", 32, 0, "neighbours")
    assert retrieval.changed_settings(cls, runs, None, key, run) == {}
    assert retrieval.changed_settings(cls, runs, 128, key, run) == {"batch_size": (256, 128)}
    older = {name: value for name, value in recorded.items() if name != "momentum"}  # logged before it existed
    assert retrieval.changed_settings(cls, runs, None, key, dict(run, hyperparameters=older)) == {}
    runs = retrieval.candidates(cls, ["neighbours"], [{}], {"k1": 10, "momentum": 0.5}, None)
    changed = retrieval.changed_settings(cls, runs, None, key, dict(run, hyperparameters=older))
    assert changed == {"momentum": (0.0, 0.5)}
    other = dict(run, hyperparameters={**recorded, "k1": 20, "learning_rate": 0.01, "momentum": 0.5})
    assert retrieval.changed_settings(cls, runs, None, key, other) == {"k1": (20, 10), "learning_rate": (0.01, 1e-3)}
    assert retrieval.changed_settings(cls, runs, None, ("cifar6k", 32, 0, "itq"), {"test": 0.1}) == {}


def test_a_job_carried_to_another_clone_by_its_committed_files_resumes_from_its_finished_runs(tmp_path, monkeypatch,
                                                                                             capsys):
    import subprocess

    import tfhash

    real_fit, calls = tfhash.fit, []

    def fit(*args, checkpoint_dir=None, interrupt=False, **kwargs):
        calls.append(checkpoint_dir)
        hasher = real_fit(*args, checkpoint_dir=checkpoint_dir, **kwargs)
        if interrupt and len(calls) == 2:
            raise KeyboardInterrupt  # the sitting ends after the second deep run's epochs, before its figures
        return hasher

    job = reproduce.JOBS_BY_CELL[("sigah", "mnist10k", 32)]  # its directory, with a small run in it
    argv = ["--scheme", "sigah", "--data", "digits", "--bits", "8", "--seeds", "0", "1", "--epochs", "1",
            "--baselines", "lsh"]
    here, there = tmp_path / "here" / "results.jsonl", tmp_path / "there" / "results.jsonl"
    directory = reproduce.checkpoint_directory(job, str(here))
    monkeypatch.setattr(sys, "argv", ["benchmarks/retrieval.py", *argv])
    monkeypatch.setattr(tfhash, "fit", lambda *a, **k: fit(*a, interrupt=True, **k))
    with pytest.raises(KeyboardInterrupt):
        retrieval.main([*argv, "--results", str(here), "--checkpoint", directory])
    assert os.listdir(calls[-1])  # the interrupted run had saved epoch checkpoints: they stay behind

    # What git keeps of the directory (command.json, runs.jsonl; not the epoch checkpoints or the lock) is all
    # the other clone gets.
    root = os.path.dirname(os.path.dirname(os.path.abspath(reproduce.__file__)))
    mapped = {name: os.path.join("benchmarks", "checkpoints", job.name, name)  # a directory's path ends in /
              + ("/" if os.path.isdir(os.path.join(directory, name)) else "") for name in os.listdir(directory)}
    listing = subprocess.run(["git", "check-ignore", "--no-index", *mapped.values()], cwd=root,
                             capture_output=True, text=True)
    if listing.returncode > 1:
        pytest.skip(f"not a git checkout: {listing.stderr.strip()}")
    ignored = set(listing.stdout.split())
    kept = sorted(name for name, path in mapped.items() if path not in ignored)
    assert kept == ["command.json", "runs.jsonl"]
    carried = reproduce.checkpoint_directory(job, str(there))
    os.makedirs(carried)
    for name in kept:
        with open(os.path.join(directory, name), "rb") as source, open(os.path.join(carried, name), "wb") as copy:
            copy.write(source.read())
    other = {"cpus": 64, "cpu": "Other CPU (avx2 fma avx512f)", "python": "3.12.0", "numpy": "2.0.0"}
    with open(os.path.join(carried, "runs.jsonl"), encoding="utf-8") as f:  # the runs were made on another machine
        entries = [dict(json.loads(line), machine=other) for line in f]
    with open(os.path.join(carried, "runs.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps(entry) + "\n" for entry in entries)

    reproduce.main(["--list", "--results", str(there)])
    listed = [line for line in capsys.readouterr().out.splitlines() if f" {job.name} " in line]
    assert listed[0].startswith("started") and listed[0].endswith("# 5 runs finished")
    started = reproduce.started_jobs(str(there), {})
    assert started == {job.name: 5}  # and the report says so under the job's tables, not "not run yet"
    line, = reproduce._job_lines([job.name], {}, started)
    assert line == f"- `{job.name}`: started, 5 runs finished so far (`benchmarks/checkpoints/{job.name}`); its " \
                   f"cells fill when the last one has: `{job.command}`"
    calls.clear()
    monkeypatch.setattr(tfhash, "fit", fit)
    retrieval.main([*argv, "--results", str(there), "--checkpoint", carried])
    assert len(calls) == 1 and os.path.dirname(calls[0]) == carried  # only the unfinished run trains
    record = report.load_results(str(there))[0]
    assert record["resumed_runs"] == 5 and [(r["seed"], r["method"]) for r in record["runs"]] == [
        (0, "itq"), (0, "lsh"), (0, "itq_start"), (1, "itq"), (1, "lsh"), (1, "itq_start")]
    assert not os.path.exists(carried)
    line, = reproduce._job_lines([job.name], {job.name: record})
    assert "(resumed after an interruption: 5 runs made before): `" in line


def test_a_record_names_the_processor_and_the_vector_extensions_its_kernels_could_use(tmp_path):

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu sse2 avx avx2 fma avx512f "
                       "avx512bw\n\nprocessor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n")
    assert _common.cpu(str(cpuinfo)) == "AMD EPYC 9B14 (avx2 fma avx512f)"
    cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd sve\n")  # ARM: "Features", no model name
    assert _common.cpu(str(cpuinfo)).endswith(" (asimd sve)")
    assert _common.cpu(str(tmp_path / "absent")).endswith(" ()")


@pytest.mark.e2e  # two TensorFlow start-ups (about 20 s): kept out of the fast loop
def test_a_record_says_whether_tensorflow_ran_its_onednn_kernels():
    import subprocess


    probe = ("from benchmarks import _common; before = _common.onednn(); import tensorflow; "
             "print(before, _common.onednn())")
    for setting, expected in (("1", "None True"), ("0", "None False")):
        shown = subprocess.run([sys.executable, "-c", probe], cwd=_common.ROOT, capture_output=True, text=True,
                               env=dict(os.environ, TF_ENABLE_ONEDNN_OPTS=setting), check=True).stdout.split("\n")
        assert shown[-2] == expected, (setting, shown)
    assert _common.machine()["onednn"] in (True, False)  # this process has imported TensorFlow


def test_jobs_run_with_onednn_unless_the_caller_chose(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(reproduce.subprocess, "run",
                        lambda argv, **kwargs: seen.append(kwargs["env"]["TF_ENABLE_ONEDNN_OPTS"]) or
                        reproduce.subprocess.CompletedProcess(argv, 0))
    job = reproduce.JOBS[0]
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    reproduce.run_job(job, str(tmp_path / "results.jsonl"))
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    reproduce.run_job(job, str(tmp_path / "results.jsonl"))
    assert seen == ["1", "0"]


def test_the_bgan_section_shows_the_last_graph_record_of_each_data_set_and_feature_kind():
    def graph(data, features, same, k1=20):
        given = "" if data == "random" else f" --data {data}"  # synthetic items: no --data
        return {"benchmark": "graph", "command": f"python -m benchmarks.graph{given} --features {features}",
                "data": data, "features": features, "items": 5102, "k1": k1, "k2": 30, "same_class_k1": same,
                "same_class_expanded": same - 0.05, "mean_list": 166.9}

    entry = next(entry for entry in reproduce.RECORD_TABLES if entry["anchor"] == "bgan-graph")
    records = [graph("cifar6k", "pca", 0.30), graph("cifar6k", "pixels", 0.222), graph("mnist10k", "pca", 0.891),
               graph("cifar6k", "pca", 0.25), graph("cifar6k", "pixels", 0.9, k1=5), graph("random", "pixels", 0.5)]
    text = reproduce.render_record_table(entry, records)
    rows = [line for line in text.splitlines() if line.startswith("| ") and "%" in line]
    assert rows == ["| cifar6k | pca | 5,102 | 25.0% | 20.0% (167) |",  # the last of each, where the first stood
                    "| cifar6k | pixels | 5,102 | 22.2% | 17.2% (167) |",
                    "| mnist10k | pca | 5,102 | 89.1% | 84.1% (167) |"]
    assert "| not run yet |" in reproduce.render_record_table(entry, [])
    assert '<a id="bgan-graph"></a>' in reproduce.render(records)


def test_the_conv_learning_rate_section_shows_each_rate_s_validation_and_test_figures():
    def run(rate, validation, test):
        return {"baseline": False, "method": f"neighbours learning_rate={rate}", "validation": validation,
                "test": test, "overrides": {"learning_rate": rate}, "saturation": 0.5, "bit_freq_min": 0.3,
                "bit_freq_max": 0.7, "train_seconds": 600.0}

    entry = next(entry for entry in reproduce.RECORD_TABLES if entry["anchor"] == "bgan-conv-rate")
    itq = {"baseline": True, "method": "itq", "validation": 0.14, "test": 0.15}
    record = {"benchmark": "retrieval", "command": entry["command"] + " --results x.jsonl --checkpoint y",
              "commit": "abcdef123", "machine": {"cpu": "X", "cpus": 2},
              "runs": [itq, run(0.0003, 0.13, 0.12), run(0.0001, 0.12, 0.13)]}
    lines = reproduce.render_record_table(entry, [record]).splitlines()
    assert "| Adam 0.0003 | 0.1300 | 0.1200 | 0.5000 | 0.30-0.70 |" in lines
    assert "| Adam 0.0001 | 0.1200 | 0.1300 | 0.5000 | 0.30-0.70 |" in lines
    assert "| itq | 0.1400 | 0.1500 |  |  |" in lines
    assert f"`{entry['command']}`; commit abcdef1, X, 2 cores." in lines
    other = dict(record, command=entry["command"].replace("--seeds 0", "--seeds 1"))
    assert "| not run yet |" in reproduce.render_record_table(entry, [other])


def test_bgan_table_4_says_how_each_variant_differs_from_app_continuation_and_how_binary_the_outputs_are():
    table = next(t for t in reproduce.TABLES if t.anchor == "bgan-table-4")
    shape = {"saturation": 0.0, "bit_freq_min": 0.431, "bit_freq_max": 0.552}
    records = []
    for group, method, test in [("bgan-table4", "paper", 0.1270), ("bgan-table4-tanh", "paper activation=tanh", 0.1272),
                                ("bgan-table4-twostep", "paper activation=tanh beta_stages=[1.0]", 0.1200)]:
        job = reproduce.JOBS_BY_CELL[(group, "cifar6k", 32)]
        records.append(_record(job, [_run(job, method, 0, test, **shape), _run(job, "itq", 0, 0.14)]))
    text = table.findings(table, reproduce.job_records(records))
    lines = text.splitlines()
    assert ("| 32 | +0.014 · +0.0002 | -0.032 · -0.0070 | 0.00% / 0.00% / 0.00% | 0.43-0.55 / 0.43-0.55 / "
            "0.43-0.55 |") in lines
    assert ("| 24 | +0.005 · not run | -0.025 · not run | not run / not run / not run | not run / not run / "
            "not run |") in lines
    records[0]["runs"][0]["saturation"] = 0.4  # outputs that did become binary show in the table
    text = table.findings(table, reproduce.job_records(records))
    assert "| 32 | +0.014 · +0.0002 | -0.032 · -0.0070 | 40.00% / 0.00% / 0.00% |" in text
