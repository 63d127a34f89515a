"""What tfhash never does to a user's files: replace a directory that is not its own export, overwrite
another model's checkpoints, or write files others cannot read under the user's umask. Real files in a
temp dir."""

import json
import os
import shutil
import stat
import subprocess
import sys
import threading

import numpy as np
import pytest

import tfhash
from tests import scheme_inputs as inputs
from tfhash import schemes


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    name = schemes.names()[0]
    shape = inputs.input_shape(name)
    x = np.random.default_rng(0).random((48,) + tuple(shape)).astype(np.float32)
    run = tmp_path_factory.mktemp("runs") / "run"
    return tfhash.fit(name, x, bits=8, epochs=1, batch_size=16, verbose=0, checkpoint_dir=str(run)), run, x


def _tree(path):
    return sorted((os.path.relpath(os.path.join(r, f), path), os.path.getsize(os.path.join(r, f)))
                  for r, _, files in os.walk(path) for f in files)


def test_export_overwrite_never_replaces_a_training_run_or_other_directory(trained, tmp_path):
    hasher, run, _ = trained
    before = _tree(run)
    with pytest.raises(ValueError, match="not a tfhash export.*only replaces a previous export"):
        hasher.export(str(run), overwrite=True)
    assert _tree(run) == before  # the checkpoints are all still there
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "thesis.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a tfhash export"):
        hasher.export(str(mine), overwrite=True)
    assert (mine / "thesis.txt").read_text() == "keep me"
    first = hasher.export(str(tmp_path / "export"))
    assert hasher.export(first, overwrite=True) == first  # a previous export is replaced
    document = tmp_path / "codes.tflite"
    document.write_text("not a model")
    with pytest.raises(ValueError, match="not a TFLite model"):
        tfhash.export.export_tflite(hasher, str(document), overwrite=True)
    assert document.read_text() == "not a model"


def test_save_never_overwrites_another_models_checkpoints(trained, tmp_path):
    hasher, run, x = trained
    other = tfhash.fit(hasher.scheme, x, bits=16, epochs=1, batch_size=16, verbose=0)
    before = _tree(run)
    with pytest.raises(ValueError, match="holds the checkpoints of another model.*bits=8"):
        other.save(str(run))
    assert _tree(run) == before
    loose = tmp_path / "loose"
    hasher.save(str(loose))
    (loose / tfhash.hasher.CONFIG_FILE).unlink()
    with pytest.raises(ValueError, match="checkpoints without a tfhash_config.json"):
        other.save(str(loose))
    hasher.save(str(run))  # the same model may add a checkpoint to its own directory


def test_checkpoints_without_config_are_not_trained_over(trained):
    hasher, run, x = trained
    config = run / tfhash.hasher.CONFIG_FILE
    saved = config.read_text()
    config.unlink()
    try:
        with pytest.raises(ValueError, match="holds checkpoints but no tfhash_config.json"):
            tfhash.fit(hasher.scheme, x, bits=8, epochs=2, batch_size=16, checkpoint_dir=str(run))
    finally:
        config.write_text(saved)


def test_written_files_honour_the_umask(trained, tmp_path):
    hasher, _, x = trained
    old = os.umask(0o022)
    try:
        serving = tfhash.export.export_serving(hasher, str(tmp_path / "serving"), "model")
        tflite = tfhash.export.export_tflite(hasher, str(tmp_path / "model.tflite"))
        run = tmp_path / "saved"
        hasher.save(str(run))
    finally:
        os.umask(old)
    paths = [tflite, str(tmp_path / "serving" / "models.config"), str(run / tfhash.hasher.CONFIG_FILE)]
    for root, directories, files in os.walk(serving):
        paths += [os.path.join(root, f) for f in files]
        for d in [root] + [os.path.join(root, d) for d in directories]:
            assert stat.S_IMODE(os.stat(d).st_mode) == 0o755, d
    for path in paths:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644, path


def _two_epoch_run(x, directory):
    name = schemes.names()[0]
    tfhash.fit(name, x, bits=8, epochs=2, batch_size=16, verbose=0, checkpoint_dir=str(directory))
    return directory


def _truncate(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)


@pytest.mark.e2e
def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(trained, tmp_path):
    _, _, x = trained
    run = _two_epoch_run(x, tmp_path / "run")
    _truncate(run / "ckpt-2.data-00000-of-00001")
    with pytest.warns(UserWarning, match=r"checkpoint .*ckpt-2 is unreadable .*restored the previous checkpoint "
                                         r".*ckpt-1 \(epoch 1\)"):
        loaded = tfhash.Hasher.load(str(run))
    assert loaded.epoch == 1 and loaded.encode(x[:3]).shape == (3, 1)
    with pytest.warns(UserWarning, match="ckpt-2 is unreadable"):  # training resumes from the intact one
        resumed = tfhash.fit(loaded.scheme, x, bits=8, epochs=2, batch_size=16, verbose=0, checkpoint_dir=str(run))
    assert resumed.trained and tfhash.Hasher.load(str(run)).epoch == 2
    _truncate(run / "ckpt-2.index")  # the new epoch-2 checkpoint, then the older one too
    _truncate(run / "ckpt-1.data-00000-of-00001")
    with pytest.raises(ValueError, match=r"no checkpoint in .* could be restored .*corrupt.*ckpt-2: .*ckpt-1: "):
        tfhash.Hasher.load(str(run))


@pytest.mark.parametrize("edit,message", [
    (lambda text: text[: len(text) // 2], r"tfhash_config.json is not valid JSON"),
    (lambda text: text.replace('"scheme": "', '"scheme": "x', 1), r"tfhash_config.json: field 'scheme' must be one of"),
    (lambda text: text.replace('"bits": 8', '"bits": "8"', 1), r"field 'config.bits' must be a positive integer"),
    (lambda text: text.replace('"input_shape": [', '"input_shape": [0, ', 1), r"field 'config.input_shape'"),
    (lambda text: text.replace('"config": {', '"config": {"colour": 1, ', 1), r"unknown: \['colour'\]"),
    # A readable config that does not describe the checkpoint: named, never a silently half-restored model.
    (lambda text: text.replace('"bits": 8', '"bits": 16', 1), r"could be restored into the model its "
                                                               r"tfhash_config.json describes \(scheme .*bits=16"),
])
def test_an_edited_or_broken_config_is_named_with_its_field(trained, tmp_path, edit, message):
    hasher, _, x = trained
    run = tmp_path / "run"
    hasher.save(str(run))
    config = run / tfhash.hasher.CONFIG_FILE
    config.write_text(edit(config.read_text()))
    with pytest.raises(ValueError, match=message):
        tfhash.Hasher.load(str(run))
    # Resuming reads the same file: refused too (an edited bits is named as the saved setting it differs from).
    with pytest.raises(ValueError, match=message if "bits=16" not in message else "holds a .* model with bits=16"):
        tfhash.fit(hasher.scheme, x, bits=8, epochs=2, batch_size=16, verbose=0, checkpoint_dir=str(run))


def test_a_config_naming_another_scheme_is_refused(trained, tmp_path):
    hasher, _, x = trained
    others = [name for name in schemes.names() if name != hasher.scheme]
    run = tmp_path / "run"
    hasher.save(str(run))
    config = run / tfhash.hasher.CONFIG_FILE
    description = json.loads(config.read_text())
    description["scheme"] = others[0]
    config.write_text(json.dumps(description))
    with pytest.raises(ValueError, match=rf"tfhash_config.json: field 'config'.*{others[0]!r}"):
        tfhash.Hasher.load(str(run))


def _scratch_project(tmp_path, monkeypatch):
    """A working directory full of the user's files, inside a home directory of its own."""
    home = tmp_path / "home"
    project = home / "project"
    project.mkdir(parents=True)
    (project / "thesis.txt").write_text("keep me")
    (home / "notes.txt").write_text("keep me too")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(project)
    return home, project


@pytest.mark.parametrize("target", ["", ".", "..", "HOME", "/"])
def test_export_refuses_the_working_directory_its_ancestors_home_and_root(trained, tmp_path, monkeypatch, target):
    hasher, _, _ = trained
    home, project = _scratch_project(tmp_path, monkeypatch)
    target = str(home) if target == "HOME" else target
    before, before_home = _tree(project), _tree(home)
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="`path`"):
            hasher.export(target, overwrite=overwrite)
        with pytest.raises(ValueError, match="`path`"):
            tfhash.export.export_tflite(hasher, target, overwrite=overwrite)
    assert _tree(project) == before and _tree(home) == before_home
    assert sorted(os.listdir(home)) == ["notes.txt", "project"]  # no temporary directory left either


@pytest.mark.e2e
def test_export_command_with_an_empty_output_exits_non_zero_and_writes_nothing(trained, tmp_path, monkeypatch):
    hasher, run, _ = trained
    project = tmp_path / "project"
    project.mkdir()
    (project / "thesis.txt").write_text("keep me")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}  # the installed command, from the user's directory
    result = subprocess.run([sys.executable, "-m", "export.export_model", f"--checkpoint_dir={run}",
                             "--format=saved_model", "--output="], cwd=project, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0, result.stdout
    assert "wrote" not in result.stdout and "empty path" in result.stderr, result.stderr
    monkeypatch.chdir(project)  # the other formats, as the command calls them
    with pytest.raises(ValueError, match="`base_dir` must name the directory.*empty path"):
        tfhash.export.export_serving(hasher, "", "model")
    with pytest.raises(ValueError, match="`path` must name a path to write, got an empty path"):
        tfhash.export.export_tflite(hasher, "")
    assert sorted(os.listdir(project)) == ["thesis.txt"] and (project / "thesis.txt").read_text() == "keep me"


def test_a_training_run_is_never_written_into_or_replaced_with_an_export(trained, tmp_path):
    hasher, run, x = trained
    export = hasher.export(str(tmp_path / "export"))
    with pytest.raises(ValueError, match="`checkpoint_dir`.*holds a SavedModel export"):
        tfhash.fit(hasher.scheme, x, bits=8, epochs=1, batch_size=16, verbose=0, checkpoint_dir=export)
    with pytest.raises(ValueError, match="`directory`.*holds a SavedModel export"):
        hasher.save(export)
    with pytest.raises(ValueError, match="`checkpoint_dir` must name a directory"):
        tfhash.fit(hasher.scheme, x, bits=8, epochs=1, batch_size=16, verbose=0, checkpoint_dir="")
    # An export that also holds a run's checkpoints is not replaced, even with overwrite=True.
    for name in os.listdir(run):
        if name.startswith("ckpt") or name == "checkpoint":
            shutil.copy(run / name, os.path.join(export, name))
    before = _tree(export)
    with pytest.raises(ValueError, match="also holds other files.*checkpoint"):
        hasher.export(export, overwrite=True)
    assert _tree(export) == before


def test_an_export_that_gains_a_file_while_it_is_replaced_is_kept(trained, tmp_path, monkeypatch):
    hasher, _, _ = trained
    target = tmp_path / "encoder"
    hasher.export(str(target))
    write = tfhash.export._write_saved_model

    def run_saved_meanwhile(*args):  # a training run writes its checkpoint into the old export meanwhile
        tmp = write(*args)
        (target / "checkpoint").write_text("run")
        return tmp

    monkeypatch.setattr(tfhash.export, "_write_saved_model", run_saved_meanwhile)
    with pytest.raises(FileExistsError, match=r"no longer only a previous export .*checkpoint.*nothing was replaced"):
        hasher.export(str(target), overwrite=True)
    assert (target / "checkpoint").read_text() == "run" and tfhash.export.is_export(str(target))
    assert sorted(os.listdir(tmp_path)) == ["encoder"]


def _racing(monkeypatch, module, name, writers):
    """Makes ``writers`` threads reach ``module.name`` together (after their checks), one at a time inside it."""
    original, barrier, lock = getattr(module, name), threading.Barrier(writers, timeout=120), threading.Lock()

    def wrapped(*args, **kwargs):
        barrier.wait()  # every writer has passed its existence checks
        with lock:
            return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)


def _race(calls):
    outcomes = [None] * len(calls)

    def run(i):
        try:
            outcomes[i] = ("ok", calls[i]())
        except (ValueError, OSError) as err:
            outcomes[i] = ("error", err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_concurrent_exports_to_one_new_path_have_exactly_one_winner(trained, tmp_path, monkeypatch):
    hasher, _, x = trained
    _racing(monkeypatch, tfhash.export, "_write_saved_model", 2)
    target = str(tmp_path / "export")
    outcomes = _race([lambda: hasher.export(target), lambda: hasher.export(target)])
    assert sorted(kind for kind, _ in outcomes) == ["error", "ok"], outcomes
    assert "another writer" in str(next(value for kind, value in outcomes if kind == "error"))
    np.testing.assert_array_equal(tfhash.load(target).encode(x[:4]), hasher.encode(x[:4]))
    assert sorted(os.listdir(tmp_path)) == ["export"]  # the loser left no temporary directory

    _racing(monkeypatch, tfhash.export, "_tflite_flatbuffer", 2)
    model = str(tmp_path / "model.tflite")
    outcomes = _race([lambda: tfhash.export.export_tflite(hasher, model)] * 2)
    assert sorted(kind for kind, _ in outcomes) == ["error", "ok"], outcomes
    assert tfhash.export.is_tflite(model)


def test_concurrent_serving_exports_never_write_the_same_version(trained, tmp_path, monkeypatch):
    hasher, _, _ = trained
    _racing(monkeypatch, tfhash.export, "_write_saved_model", 3)
    base = str(tmp_path / "serving")
    outcomes = _race([lambda: tfhash.export.export_serving(hasher, base, "m")] * 3)
    assert [kind for kind, _ in outcomes] == ["ok"] * 3, outcomes
    assert sorted(os.path.basename(path) for _, path in outcomes) == ["1", "2", "3"]
    assert sorted(os.listdir(os.path.join(base, "m"))) == ["1", "2", "3"]


def test_a_version_taken_by_another_writer_meanwhile_is_skipped(trained, tmp_path, monkeypatch):
    hasher, _, _ = trained
    base = tmp_path / "serving"
    place = tfhash._io.place_directory

    def someone_else_first(tmp, path, replaceable=None):
        if path.endswith(os.sep + "1"):  # another process renames its export into version 1 just before us
            os.makedirs(os.path.join(path, "theirs"))
        return place(tmp, path, replaceable)

    monkeypatch.setattr(tfhash._io, "place_directory", someone_else_first)
    assert tfhash.export.export_serving(hasher, str(base), "m").endswith(os.path.join("m", "2"))
    assert os.listdir(base / "m" / "1") == ["theirs"]


@pytest.mark.e2e  # several fits or an export: the end-to-end tier
def test_a_run_in_a_relative_directory_resumes_and_loads(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = schemes.names()[0]
    x = np.random.default_rng(0).random((48,) + tuple(inputs.input_shape(name))).astype(np.float32)
    first = tfhash.fit(name, x, bits=8, epochs=1, batch_size=16, verbose=0, checkpoint_dir=os.path.join("runs", "r"))
    loaded = tfhash.Hasher.load(os.path.join("runs", "r"))  # as `--checkpoint_dir=runs/r` on the command line
    np.testing.assert_array_equal(loaded.encode(x), first.encode(x))
    resumed = tfhash.fit(name, x, bits=8, epochs=2, batch_size=16, verbose=0, checkpoint_dir=os.path.join("runs", "r"))
    assert resumed.epoch == 2 and len(resumed.history.epoch) == 1  # one more epoch, from the checkpoint
