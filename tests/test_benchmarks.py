"""The script behind every headline figure runs for every registered scheme (a tiny setting; the deep baselines
through --deep-baselines), and chooses settings on validation figures only."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import report
from tests.helpers import ROOT, SHARED_DATA
from tfhash import schemes

pytestmark = pytest.mark.e2e  # benchmark scripts end to end


# The deep baselines run through the same script with --deep-baselines in the first scheme's run.
@pytest.mark.parametrize("name", [n for n in schemes.names() if not schemes.get(n).spec.deep_baseline])
def test_retrieval_benchmark_runs_and_selects_on_validation(name, tmp_path):
    presets = sorted(schemes.get(name).presets)
    first = name == schemes.names()[0]
    deep = [n for n in schemes.names() if schemes.get(n).spec.deep_baseline and n != name]
    compare = ["--deep-baselines", "--compare-epochs", "1"] if first else []
    seeds = [0, 1] if first else [0]  # mean and spread over seeds: checked once
    # Schemes that train on labels: the semi-supervised protocol, a few labelled training items per class.
    labelled = ["--labelled-per-class", "3"] if schemes.get(name).needs_labels else []
    results = tmp_path / "results.jsonl"
    recorded = ["--results", str(results)] if first else []  # the results file: checked once
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.retrieval", "--scheme", name, "--data", "digits",
         "--bits", "8", "--seeds", *map(str, seeds), "--epochs", "1", "--presets", *presets, *compare, *labelled,
         *recorded],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    if recorded:  # the same record, with what it takes to trace and rerun it
        entry = json.loads(results.read_text())
        assert entry["command"].startswith(f"python -m benchmarks.retrieval --scheme {name} --data digits")
        assert entry["wall_seconds"] > 0 and "commit" in entry and entry["runs"] == payload["runs"]
        # The report reads it: ITQ makes a cell; a scheme trained for --epochs 1 is not its default preset.
        cells = report.headline_cells(report.load_results(str(results)), bits=8)
        assert ("digits", "itq") in cells and ("digits", name) not in cells
    assert payload["selection"] == "validation" and payload["scheme"] == name
    assert payload["labelled_per_class"] == (3 if schemes.get(name).needs_labels else None)
    runs = [r for r in payload["runs"] if not r["baseline"]]
    assert {r["preset"] for r in runs} == set(presets) and {r["seed"] for r in runs} == set(seeds)
    assert any(r["method"] == "itq" for r in payload["runs"])
    validation = {p: np.mean([r["validation"] for r in runs if r["method"] == p]) for p in presets}
    chosen = max(presets, key=lambda p: validation[p])
    if len(presets) > 1:
        assert f"| {chosen} (chosen on validation) |" in result.stdout
    assert "| digits | 8 | itq |" in result.stdout and " ± " in result.stdout
    if compare:  # the deep baselines' default presets, in the same run, reported beside and never chosen
        labels = [r["method"] for r in payload["runs"] if r.get("compared")]
        assert deep and len(labels) == 2 * len(deep)  # each deep baseline, each seed
        for other in deep:
            label = next(label for label in labels if label.startswith(f"{other} (default preset "))
            assert f"| digits | 8 | {label} |" in result.stdout


def test_train_step_benchmark_times_plain_and_xla_steps_in_fit_and_bare():
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.train_step", "--schemes", "sigah", "cibhash", "--items", "300",
         "--batch-size", "50", "--steps", "4"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    figures = {row["scheme"]: row for row in payload["rows"]}
    assert "xla_fit_ms" not in figures["cibhash"]  # declares it cannot compile: no XLA figure, trained plainly
    for mode in ("plain", "xla"):
        # fit's per-step time is a difference of two timings: over 4 steps only its sign can wobble.
        assert np.isfinite(figures["sigah"][f"{mode}_fit_ms"]) and figures["sigah"][f"{mode}_bare_ms"] > 0
    assert "| sigah |" in result.stdout and "no XLA kernel" in result.stdout  # BENCHMARKS.md's table, filled


def test_onednn_benchmark_times_each_setting_in_its_own_process():
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.onednn", "--schemes", "greedyhash", "sigah", "--preset", "default",
         "--shapes", "8x8x1", "--items", "512", "--repeats", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert [row["setting"] for row in payload["rows"]] == ["greedyhash 8x8x1", "sigah 8x8x1"]
    for row in payload["rows"]:
        assert row["off_seconds"] > 0 and row["on_seconds"] > 0
        assert row["speedup"] == pytest.approx(row["off_seconds"] / row["on_seconds"])
    assert "oneDNN reported on: off False, on True" in result.stdout  # each child really ran its setting


def test_search_benchmark_compares_the_exact_index_with_faiss_and_the_scan_limit():
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.search", "--database", "20000", "--queries", "50", "--repeats", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["identical_topk"] is True and payload["ours_over_faiss"] > 0 and payload["limit_qps"] > 0
    assert payload["range_identical"] is True and payload["range_hits_per_query"] > 0 and payload["range_ours_qps"] > 0
    assert "| tfhash `HammingIndex` (exact; the default) |" in result.stdout  # BENCHMARKS.md's table, filled


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_DATA, "fashion-mnist-train-60k")),
                    reason="../shared/data/fashion-mnist-train-60k not present")
def test_collection_benchmark_builds_resumes_and_searches_a_small_collection():
    result = subprocess.run([sys.executable, "-m", "benchmarks.collection", "--sizes", "2000", "30000",
                             "--epochs", "1"],
                            cwd=ROOT, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert [b["items"] for b in payload["builds"]] == [2000, 2000, 30000]
    assert "| PNG files (tf.data decode + resize) | 2,000 |" in result.stdout
    # killed by the first progress record of at least half the items, one batch (1,024) past it at most
    assert payload["resume"]["identical"] is True and 15000 <= payload["resume"]["killed_at"] < 15000 + 1024
    exact, *approximate = payload["search"]
    assert exact["recall@10"] == exact["ids@10"] == 1.0 and len(approximate) == 3
    for row in approximate:  # distance recall counts any tied code: never below the ids' share
        assert 0 < row["ids@10"] <= row["recall@10"] <= 1 and row["queries_per_s"] > 0


def test_a_reproduction_job_runs_appends_its_record_and_fills_its_cells(tmp_path, monkeypatch):
    from benchmarks import reproduce

    job = reproduce.Job("tiny-digits-8", "tiny", "digits", 8, ("sigah", "--seeds", "0", "--epochs", "1",
                                                              "--baselines", "itq", "--ablation=-discriminator"))
    monkeypatch.setattr(reproduce, "JOBS", [job])
    monkeypatch.setattr(reproduce, "JOBS_BY_NAME", {job.name: job})
    monkeypatch.setattr(reproduce, "JOBS_BY_CELL", {(job.group, job.data, job.bits): job})
    results = tmp_path / "results.jsonl"
    assert reproduce.main(["--run-missing", "--results", str(results)]) == 0
    records = report.load_results(str(results))
    assert len(records) == 1 and records[0]["peak_rss_mb"] > 0
    found = reproduce.job_records(records)
    assert list(found) == [job.name]
    on = reproduce.per_seed(found, reproduce.Ours("tiny", "itq_start"), "digits", 8, "mAP")
    precision = reproduce.per_seed(found, reproduce.Ours("tiny", "itq"), "digits", 8, "precision@100")
    assert list(on) == [0] and 0 < on[0] <= 1 and 0 < precision[0] <= 1
    # Nothing left to run: a second call starts nothing and appends nothing.
    assert reproduce.main(["--run-missing", "--results", str(results)]) == 0
    assert len(report.load_results(str(results))) == 1


def test_graph_benchmark_appends_its_record_with_the_feature_kind(tmp_path):
    from benchmarks import graph

    results = tmp_path / "results.jsonl"
    record = graph.main(["--items", "300", "--dim", "16", "--k1", "5", "--k2", "5", "--features", "pca",
                         "--results", str(results)])
    assert (record["features"], record["data"], record["dim"], record["items"]) == ("pca", "random", 16, 300)
    written = json.loads(results.read_text())
    assert written["benchmark"] == "graph" and written["mean_list"] == record["mean_list"] and written["commit"]
    with pytest.raises(SystemExit):
        graph.main(["--items", "300", "--results", str(tmp_path / "missing" / "results.jsonl")])
