"""The headline figures of README.md (and REPRODUCTION.md) are the results file's, rendered by benchmarks.report."""

import json

import numpy as np
import pytest

from benchmarks import report


def _run(data, method, seed, test, **extra):
    return {"data": data, "bits": 32, "seed": seed, "method": method, "test": test, "validation": test, **extra}


def _record(runs, scheme="bgan", **extra):
    return {"benchmark": "retrieval", "protocol": "labels", "scheme": scheme, "train_size": None,
            "labelled_per_class": None, "commit": "abc", "runs": runs, **extra}


def _seeds(data, method, values, **extra):
    return [_run(data, method, seed, value, **extra) for seed, value in enumerate(values)]


ITQ = {"baseline": True}
COMPARED = {"baseline": True, "compared": True}
DEFAULT_BGAN = {"baseline": False, "preset": "neighbours", "overrides": {}}


def test_cell_is_mean_and_spread_with_the_same_runs_itq():
    record = _record(_seeds("mnist10k", "itq", [0.4, 0.5, 0.6], **ITQ)
                     + _seeds("mnist10k", "neighbours", [0.6, 0.7, 0.8], **DEFAULT_BGAN)
                     + _seeds("mnist10k", "cibhash (default preset 'scratch', 10 epochs)", [0.5, 0.5, 0.5],
                              **COMPARED))
    cells = report.headline_cells([record])
    assert cells[("mnist10k", "bgan")]["test"] == [0.6, 0.7, 0.8]
    assert report.format_cell(cells[("mnist10k", "bgan")]) == "0.700 ± 0.100 (1.40x)"
    assert report.format_cell(cells[("mnist10k", "cibhash")]) == "0.500 ± 0.000 (1.00x)"
    assert report.format_cell(None) == "not measured"
    single = {"test": [0.3], "itq": [0.6]}
    assert report.format_cell(single) == "0.300 (1 seed, 0.50x)"


def test_only_default_presets_and_full_size_runs_with_itq_make_cells():
    itq = _seeds("mnist10k", "itq", [0.5, 0.5], **ITQ)
    other_preset = _record(itq + _seeds("mnist10k", "paper", [0.9, 0.9], baseline=False, preset="paper",
                                        overrides={}))
    overridden = _record(itq + _seeds("mnist10k", "neighbours", [0.9, 0.9], baseline=False, preset="neighbours",
                                      overrides={"epochs": 3}))
    subset = _record(itq + _seeds("mnist10k", "neighbours", [0.9, 0.9], **DEFAULT_BGAN), train_size=2000)
    short = _record(itq + _seeds("mnist10k", "neighbours", [0.9, 0.9], **DEFAULT_BGAN), epochs=1)
    short_compared = _record(itq + _seeds("mnist10k", "bgan (default preset 'neighbours', 1 epochs)", [0.9, 0.9],
                                          **COMPARED), scheme="cibhash", compare_epochs=1)
    older = _record(itq + _seeds("mnist10k", "neighbours", [0.9, 0.9], **DEFAULT_BGAN),
                    command="python -m benchmarks.retrieval --scheme bgan --epochs 5")  # before the record held it
    no_itq = _record(_seeds("mnist10k", "neighbours", [0.9, 0.9], **DEFAULT_BGAN))
    other_bits = _record([dict(run, bits=64) for run in itq + _seeds("mnist10k", "neighbours", [0.9, 0.9],
                                                                       **DEFAULT_BGAN)])
    cells = report.headline_cells([other_preset, overridden, short, short_compared, older, subset, no_itq,
                                    other_bits])
    assert ("mnist10k", "bgan") not in cells
    assert np.allclose(cells[("mnist10k", "itq")]["test"], [0.5, 0.5])


def test_overrides_that_restate_the_current_default_keep_a_run_default():
    from tfhash import schemes

    itq = _seeds("mnist10k", "itq", [0.5], **ITQ)
    restating = _record(itq + _seeds("mnist10k", "neighbours", [0.8], baseline=False, preset="neighbours",
                                     overrides={"positive_weight": 10.0}))  # the default's own value at 32 bits
    assert report.headline_cells([restating])[("mnist10k", "bgan")]["test"] == [0.8]
    differing = _record(itq + _seeds("mnist10k", "neighbours", [0.9], baseline=False, preset="neighbours",
                                     overrides={"positive_weight": 11.0}))
    assert ("mnist10k", "bgan") not in report.headline_cells([differing])
    unknown = _record(itq + _seeds("mnist10k", "neighbours", [0.9], baseline=False, preset="neighbours",
                                   overrides={"k1": 20}))  # not a value the default sets
    assert ("mnist10k", "bgan") not in report.headline_cells([unknown])
    assert schemes.get("bgan").presets["neighbours"].settings(32)["hyperparameters"]["positive_weight"] == 10.0


def test_a_run_that_recorded_what_it_trained_with_is_the_default_only_if_the_default_still_trains_so():
    from tfhash import schemes

    cls = schemes.get("bgan")
    now = {**cls.default_hyperparameters(), **cls.presets["neighbours"].settings(32)["hyperparameters"]}
    itq = _seeds("mnist10k", "itq", [0.5], **ITQ)
    current = _record(itq + _seeds("mnist10k", "neighbours", [0.8], **DEFAULT_BGAN, hyperparameters=now))
    assert report.headline_cells([current])[("mnist10k", "bgan")]["test"] == [0.8]
    # A preset that changed since the run (here: its weight rule) no longer counts the run as its default.
    before = _record(itq + _seeds("mnist10k", "neighbours", [0.9], **DEFAULT_BGAN,
                                  hyperparameters={**now, "positive_weight_exponent": 1.0}))
    assert ("mnist10k", "bgan") not in report.headline_cells([before])


def test_the_last_record_over_the_most_seeds_holding_a_cell_wins():
    first = _record(_seeds("digits", "itq", [0.5], **ITQ) + _seeds("digits", "neighbours", [0.1], **DEFAULT_BGAN))
    second = _record(_seeds("digits", "itq", [0.6], **ITQ) + _seeds("digits", "neighbours", [0.9], **DEFAULT_BGAN))
    cell = report.headline_cells([first, second])[("digits", "bgan")]
    assert cell["test"] == [0.9] and cell["itq"] == [0.6]
    three = _record(_seeds("digits", "itq", [0.5, 0.5, 0.5], **ITQ))
    assert report.headline_cells([three, second])[("digits", "itq")]["test"] == [0.5, 0.5, 0.5]  # more seeds win


def test_a_damaged_results_file_names_its_line(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(_record([])) + "\n{not json\n")
    with pytest.raises(ValueError, match="line 2"):
        report.load_results(str(path))


def test_replace_block_needs_exactly_one_block():
    text = f"a\n{report.BEGIN}\nold\n{report.END}\nb"
    assert report.replace_block(text, "new") == f"a\n{report.BEGIN}\nnew\n{report.END}\nb"
    with pytest.raises(ValueError, match="one"):
        report.replace_block("no block here", "new")


def test_generated_documents_are_the_results_files():
    for path, text in report.documents(report.load_results()).items():
        with open(path, encoding="utf-8") as f:
            assert f.read() == text, f"{path} differs from the results file: run python -m benchmarks.report --write"


def _speed(name, rows, **extra):
    return {"benchmark": name, "command": f"python -m benchmarks.{name} --results x.jsonl", "commit": "0123456789",
            "machine": {"cpu": "CPU (avx2)", "cpus": 2}, "rows": rows, **extra}


def test_a_declared_table_fills_its_templates_from_the_last_record_of_its_benchmark():
    spec = {"benchmark": "search", "rows": "rows",
            "columns": [["index", "{index}"], ["queries/s", "{qps:,.0f}"], ["ratio", ["{ratio:.2f}x", "-"]],
                        ["bits", "{record[bits]}"]]}
    older = _speed("search", [{"index": "old", "qps": 1.0}], bits=32)
    newer = _speed("search", [{"index": "a", "qps": 12345.6, "ratio": 1.5}, {"index": "b", "qps": 7.0}], bits=64)
    other = _speed("encode", [{"index": "c", "qps": 1.0}])
    lines = report.record_table(spec, [older, newer, other])
    assert lines[:4] == ["| index | queries/s | ratio | bits |", "|---|---|---|---|", "| a | 12,346 | 1.50x | 64 |",
                         "| b | 7 | - | 64 |"]
    assert lines[-1] == "`python -m benchmarks.search`; commit 0123456, CPU (avx2), 2 cores."  # where it wrote: dropped
    assert report.record_table(spec, [other])[2] == "| not run yet | | | |"


def test_a_declared_table_can_show_the_last_record_of_each_value_of_a_field_and_filter_by_command():
    spec = {"benchmark": "graph", "each": ["data"], "where": {"k1": 20}, "command": "python -m benchmarks.graph",
            "columns": [["data", "{data}"], ["share", "{share:.1%}"]]}
    records = [_speed("graph", [], data="a", k1=20, share=0.1), _speed("graph", [], data="b", k1=20, share=0.2),
               _speed("graph", [], data="a", k1=20, share=0.3), _speed("graph", [], data="c", k1=5, share=0.4)]
    assert report.record_table(spec, records)[2:4] == ["| a | 30.0% |", "| b | 20.0% |"]
    assert report.select(records, {**spec, "command": "python -m benchmarks.graph --data"}) == []
