"""The trainer command line: one run trains, logs to TensorBoard, evaluates, exports; reruns resume."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from absl.testing import flagsaver
from tensorboard.backend.event_processing import event_accumulator

from tests.helpers import ROOT
from tfhash import datasets, schemes
from trainers import config as run_config
from trainers import train

pytestmark = pytest.mark.e2e  # trainer subprocesses, signals, multi-worker

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")


def _run(args, timeout=300):
    return subprocess.run([sys.executable, "-m", "trainers.train"] + args, cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def _events(log_dir):
    accumulator = event_accumulator.EventAccumulator(str(log_dir), size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    return accumulator


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("run") / "digits"
    result = _run(["--scheme=hashgan", "--dataset=digits", "--bits=16", f"--model_dir={model_dir}", "--epochs=3",
                   "--eval_every=2", "--verbose=2", "--export"])
    assert result.returncode == 0, result.stderr[-3000:]
    return model_dir, result


def test_one_run_prints_the_table_and_leaves_checkpoints_metrics_and_an_export(finished_run):
    model_dir, result = finished_run
    assert "| method | bits | mAP |" in result.stdout and "| hashgan | 16 |" in result.stdout
    assert "| itq | 16 |" in result.stdout
    assert (model_dir / "tfhash_config.json").is_file() and (model_dir / "ckpt-3.index").is_file()
    with open(model_dir / "metrics.json") as f:
        payload = json.load(f)
    assert [r["method"] for r in payload["rows"]] == ["hashgan", "lsh", "pcah", "itq", "sph", "sh"]
    assert payload["epochs"] == 3 and payload["preset"] == schemes.get("hashgan").default_preset
    assert payload["preset_selected_on"] and payload["preset_description"]
    assert all(0.0 <= r["mAP"] <= 1.0 for r in payload["rows"])
    assert [e["epoch"] for e in payload["evaluations"]] == [2, 3]
    assert len(payload["rows"][0]["pr_curve"]["precision"]) == 17  # radius 0..16
    assert (model_dir / "export" / "hashgan" / "3" / "saved_model.pb").is_file()
    assert (model_dir / "export" / "models.config").is_file()
    import tfhash

    exported = tfhash.load(str(model_dir / "export" / "hashgan" / "3"))
    split = datasets.load("digits", queries_per_class=10, seed=0)
    np.testing.assert_array_equal(exported.encode(split.query_x[:20]),
                                  tfhash.Hasher.load(str(model_dir)).encode(split.query_x[:20]))


def test_tensorboard_events_hold_losses_learning_rates_bit_histograms_samples_map_and_pr_curve(finished_run):
    model_dir, _ = finished_run
    events = _events(model_dir / "logs")
    tags = set(events.Tags()["tensors"])

    def plugin(tag):
        return events.SummaryMetadata(tag).plugin_data.plugin_name

    def steps(tag):
        return [e.step for e in events.Tensors(tag)]

    loss_terms = [n for n in schemes.get("hashgan").loss_names if not n.startswith("bit_")]
    for term in loss_terms:
        assert steps(f"loss/{term}") == [1, 2, 3] and plugin(f"loss/{term}") == "scalars"
    for tag in ("learning_rate/discriminator", "learning_rate/generator", "bits/frequency_min",
                "bits/frequency_max", "bits/batch_freq_min", "bits/batch_freq_max"):
        assert steps(tag) == [1, 2, 3] and plugin(tag) == "scalars", tag
    rates = [float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors("learning_rate/discriminator")]
    assert 3e-4 <= rates[-1] < rates[0] <= 9e-4  # the paper's linear decay
    assert plugin("bits/frequency") == "histograms" and steps("bits/frequency") == [1, 2, 3]
    assert plugin("samples/generated") == "images" and steps("samples/generated") == [1, 2, 3]
    width, height = (int(v) for v in tf.make_ndarray(events.Tensors("samples/generated")[0].tensor_proto)[:2])
    assert width > 100 and height > 100  # an 8x8 grid of enlarged 8x8 digits
    assert plugin("eval/mAP") == "scalars" and steps("eval/mAP") == [2, 3]
    maps = [float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors("eval/mAP")]
    assert all(0.0 < m <= 1.0 for m in maps)
    assert plugin("eval/precision_recall") == "images" and steps("eval/precision_recall") == [3]
    assert {"samples/generated", "eval/precision_recall", "bits/frequency"} <= tags


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_interrupted_run_resumes_when_rerun(tmp_path, signal_number):
    model_dir = tmp_path / "run"
    args = ["--dataset=digits", "--bits=8", f"--model_dir={model_dir}", "--epochs=8", "--eval_every=0",
            "--verbose=2", "--noexport"]
    process = subprocess.Popen([sys.executable, "-m", "trainers.train"] + args, cwd=ROOT, env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not (model_dir / "ckpt-2.index").exists():
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.time() < deadline, "no checkpoint after 240 s"
        time.sleep(0.02)
    process.send_signal(signal_number)
    process.communicate(timeout=60)
    assert process.returncode == -signal_number  # killed mid-run, not finished
    assert not (model_dir / "metrics.json").exists()
    saved = tf.train.latest_checkpoint(str(model_dir))
    done = int(saved.rsplit("-", 1)[1])
    assert 1 <= done < 8  # the checkpoint index is updated after the files are written

    result = _run(args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"checkpoint after epoch {done} of 8; resuming at epoch {done + 1}" in result.stdout
    assert "Epoch 1/8" not in result.stdout and f"Epoch {done + 1}/8" in result.stdout
    with open(model_dir / "metrics.json") as f:
        assert json.load(f)["epochs"] == 8
    import tfhash

    hasher = tfhash.Hasher.load(str(model_dir))
    assert hasher.epoch == 8
    assert int(hasher.model.scheme_optimizers["discriminator"].iterations.numpy()) == 8 * (1697 // 100)


def _main(args):
    """Runs the trainer's main in this process; returns the SystemExit message (or None)."""
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["train"] + args)
        try:
            train.main(["train"])
        except SystemExit as exit_:
            return str(exit_.code)
    return None


@pytest.mark.parametrize("args, message", [
    (["--scheme=nope"], f"--scheme must be one of {schemes.names()}"),
    (["--scheme=itq"], "It is a shallow baseline"),
    (["--set=weight_nope=1"], "unknown hyperparameter(s) ['weight_nope']"),
    (["--set=weight_entropy"], "--set must be key=value"),
    (["--bits=0"], "`bits` must be a positive integer"),
    (["--epochs=0"], "`--epochs` must be a positive integer"),
    (["--dataset=nope"], "--dataset must be one of"),
    (["--preset=nope"], "--preset: `preset` must be one of the 'hashgan' presets ['paper', 'vat'] or a JSON file"),
    (["--baselines=itq,nope"], "--baselines must be among"),
    (["--strategy=multi_worker"], "needs the TF_CONFIG environment variable"),
    (["--set=weight_entropy=-1"], "--set: `weight_entropy` must be a non-negative number, got -1"),
    (["--set=consistency_transform=nope"], "--set: `consistency_transform` must be one of"),
    (["--batch_size=5000"], "--batch_size 5000 is larger than the 1797 items of 'digits'"),
    (["--dataset=mnist", "--batch_size=80000"], "--batch_size 80000 is larger than the 70000 items of 'mnist'"),
])
def test_bad_flags_fail_before_any_data_is_loaded(tmp_path, monkeypatch, args, message):
    def no_loading(*a, **k):
        raise AssertionError("data was loaded")

    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setattr(datasets, "load", no_loading)
    error = _main(args + [f"--model_dir={tmp_path / 'run'}"])
    assert error is not None and message in error, error
    assert not (tmp_path / "run").exists()


def test_a_model_dir_that_is_a_file_fails_before_any_data_is_loaded(tmp_path, monkeypatch):
    def no_loading(*a, **k):
        raise AssertionError("data was loaded")

    monkeypatch.setattr(datasets, "load", no_loading)
    model_dir = tmp_path / "notes.txt"
    model_dir.write_text("keep me")
    error = _main([f"--model_dir={model_dir}"])
    assert "--model_dir must be a directory, got an existing file" in error
    assert model_dir.read_text() == "keep me"


def test_a_data_set_that_needs_a_download_fails_at_once_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_host_reachable", lambda host: False)
    start = time.perf_counter()
    error = _main(["--dataset=mnist", f"--data_dir={tmp_path / 'tfds'}", f"--model_dir={tmp_path / 'run'}"])
    assert time.perf_counter() - start < 60
    assert "error:" in error and "offline" in error.lower() and "data_dir" in error, error
    assert not (tmp_path / "run").exists()


def test_resuming_with_other_hyperparameters_is_refused(finished_run):
    model_dir, _ = finished_run
    error = _main([f"--model_dir={model_dir}", "--bits=16", "--epochs=3", "--set=weight_entropy=0.5"])
    assert "trained with other settings (weight_entropy: saved 0.01, asked 0.5)" in error
    error = _main([f"--model_dir={model_dir}", "--bits=16", "--epochs=3", "--seed=4"])
    assert "trained with other settings (seed: saved 0, asked 4)" in error


def test_cli_exit_status_and_message_for_a_bad_flag(tmp_path):
    result = _run(["--set=nope=1", f"--model_dir={tmp_path / 'run'}"])
    assert result.returncode != 0 and "error: --set: unknown hyperparameter(s) ['nope']" in result.stderr


def test_trainer_and_library_train_the_same_preset(tmp_path):
    import tfhash

    config = run_config.resolve("hashgan", "digits", preset="vat", overrides=["weight_entropy=0.2"],
                                learning_rate=1e-3)
    assert config["preset"] is schemes.get("hashgan").presets["vat"]
    assert config["hyperparameters"] == {"weight_entropy": 0.2, "learning_rate": 1e-3}  # explicit overrides only
    assert (config["epochs"], config["batch_size"]) == (30, 100)
    assert not config["epochs_given"]  # tfhash.fit takes the preset's epochs, scaled for the training size
    assert run_config.resolve("hashgan", "digits", epochs=2)["epochs_given"]
    x = np.random.default_rng(0).random((32, 8, 8, 1)).astype(np.float32)
    from_library = tfhash.fit("hashgan", x, bits=8, preset="vat", epochs=1, batch_size=16, verbose=0)
    result = _run(["--preset=vat", "--dataset=digits", "--bits=8", "--epochs=1", f"--model_dir={tmp_path / 'run'}",
                   "--noexport", "--verbose=0", "--baselines=itq"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "preset 'vat' (1 epochs, batch 100)" in result.stdout
    with open(tmp_path / "run" / "metrics.json") as f:
        payload = json.load(f)
    saved = payload["hyperparameters"]
    assert payload["preset"] == "vat"
    library = from_library.model.get_config()
    assert {k: v for k, v in saved.items() if k not in ("input_shape",)} == \
        {k: v for k, v in library.items() if k not in ("input_shape",)}
    with open(tmp_path / "run" / "tfhash_config.json") as f:
        assert json.load(f)["preset"] == "vat"
    with pytest.raises(ValueError, match="--preset must be|--preset: "):
        run_config.resolve("hashgan", "digits", preset="nope")


def test_feature_scheme_runs_through_the_same_command_line(tmp_path):
    result = _run(["--scheme=sigah", "--dataset=digits", "--bits=16", f"--model_dir={tmp_path / 'sigah'}",
                   "--epochs=2", "--verbose=0", "--baselines=itq"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| sigah | 16 |" in result.stdout and "| itq | 16 |" in result.stdout
    assert f"preset '{schemes.get('sigah').default_preset}'" in result.stdout  # the scheme's default
    assert (tmp_path / "sigah" / "export" / "sigah" / "2" / "saved_model.pb").is_file()
    events = _events(tmp_path / "sigah" / "logs")
    tags = set(events.Tags()["tensors"])
    assert {"loss/reconstruction", "loss/energy_fake", "learning_rate/hash_function", "bits/frequency"} <= tags
    assert "samples/generated" not in tags  # feature vectors: no image grid


def test_semi_supervised_run_keeps_a_few_labels_and_shows_generated_images(tmp_path):
    model_dir = tmp_path / "dshgan"
    args = ["--scheme=dshgan", "--preset=semi", "--dataset=digits", "--bits=16", f"--model_dir={model_dir}",
            "--epochs=2", "--set=generator_epochs=1", "--verbose=0", "--baselines=itq", "--noexport", "--eval_every=0"]
    assert "--labelled_per_class: `labelled_per_class` must be a positive integer" in _main(
        args + ["--labelled_per_class=0"])
    assert _main(args + ["--labelled_per_class=5"]) is None
    with open(model_dir / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["labelled_per_class"] == 5 and metrics["hyperparameters"]["num_classes"] == 10
    assert [r["method"] for r in metrics["rows"]] == ["dshgan", "itq"]
    tags = set(_events(model_dir / "logs").Tags()["tensors"])
    assert {"samples/generated", "loss/triplet", "loss/stage"} <= tags


def test_multi_worker_run_writes_outputs_from_the_chief_only(tmp_path):
    import socket

    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    model_dir = tmp_path / "run"
    processes = []
    for index in range(2):
        env = dict(ENV, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "trainers.train", "--strategy=multi_worker", "--epochs=2", "--bits=16",
             f"--model_dir={model_dir}", "--verbose=0", "--baselines=itq"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    for process in processes:
        try:
            outputs.append(process.communicate(timeout=300))
        finally:
            if process.poll() is None:
                process.kill()
        assert process.returncode == 0, outputs[-1][1][-3000:]
    assert "| hashgan | 16 |" in outputs[0][0] and "| hashgan | 16 |" not in outputs[1][0]
    with open(model_dir / "metrics.json") as f:
        payload = json.load(f)
    assert payload["replicas"] == 2 and payload["strategy"] == "multi_worker"
    assert (model_dir / "ckpt-2.index").is_file()
    assert (model_dir / "export" / "hashgan" / "2" / "saved_model.pb").is_file()
    assert not (model_dir / ".worker-1" / "metrics.json").exists()


def test_metrics_of_a_resumed_run_cover_every_part_of_it(tmp_path):
    model_dir = tmp_path / "run"
    args = ["--dataset=digits", "--bits=8", f"--model_dir={model_dir}", "--eval_every=1", "--verbose=0",
            "--noexport", "--baselines=itq"]
    first = _run(args + ["--epochs=2"])
    assert first.returncode == 0, first.stderr[-3000:]
    with open(model_dir / "metrics.json") as f:
        before = json.load(f)
    assert [e["epoch"] for e in before["evaluations"]] == [1, 2] and before["train_seconds"] > 0
    second = _run(args + ["--epochs=3"])  # continues the same run for one more epoch
    assert second.returncode == 0, second.stderr[-3000:]
    with open(model_dir / "metrics.json") as f:
        after = json.load(f)
    assert [e["epoch"] for e in after["evaluations"]] == [1, 2, 3]
    assert after["evaluations"][:2] == before["evaluations"]
    with open(model_dir / "run_record.json") as f:
        record = json.load(f)
    assert [e["epoch"] for e in record["epochs"]] == [1, 2, 3]
    assert after["train_seconds"] == record["epochs"][-1]["train_seconds"] > before["train_seconds"]
