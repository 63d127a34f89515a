"""The scheme framework: batches carry labels and item indices for schemes that ask for them, one preset
system for the library and the trainer, resume checks, input checks by input kind."""

import json
import re
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfhash
from tests import scheme_inputs as inputs
from tests.probe_scheme import LabelIndexProbe, expected_table
from tfhash import schemes
from tfhash.schemes import presets as presets_lib


def _probe_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = rng.integers(-1, 5, size=n)  # -1: unlabelled
    return x, y


def _table(hasher):
    return hasher.model.table.numpy()


def test_arrays_deliver_each_items_label_and_index_to_the_step():
    x, y = _probe_data()
    hasher = tfhash.fit(LabelIndexProbe, x, y, bits=8, epochs=1, batch_size=16, verbose=0)
    np.testing.assert_allclose(_table(hasher), expected_table(x, y), atol=1e-6)
    adapted_x, adapted_y = hasher.model.adapted
    np.testing.assert_array_equal(adapted_x, x)
    np.testing.assert_array_equal(adapted_y, y)  # adapt receives the labels


def test_a_retrieval_split_delivers_its_training_labels():
    x, y = _probe_data(n=80)
    y = np.abs(y)  # make_split needs class ids
    split = tfhash.datasets.make_split(x, y, queries_per_class=2, seed=0)
    hasher = tfhash.fit(LabelIndexProbe, split, bits=8, epochs=1, batch_size=split.train_x.shape[0],
                        num_items=split.train_x.shape[0], verbose=0)
    np.testing.assert_allclose(_table(hasher), expected_table(split.train_x, split.train_y), atol=1e-6)


@pytest.mark.parametrize("form", ["tuples", "dicts", "dicts_with_index", "tfds_style_dicts"])
def test_datasets_deliver_labels_and_indices(form):
    x, y = _probe_data()
    if form == "tuples":
        dataset = tf.data.Dataset.from_tensor_slices((x, y))
    elif form == "dicts":
        dataset = tf.data.Dataset.from_tensor_slices({"x": x, "y": y})
    elif form == "tfds_style_dicts":
        dataset = tf.data.Dataset.from_tensor_slices({"image": x, "label": y})
    else:
        # Shuffled, with each item's own index: the table row is the index the dataset gives.
        order = np.random.default_rng(1).permutation(len(x))
        dataset = tf.data.Dataset.from_tensor_slices({"x": x[order], "y": y[order], "index": order})
    hasher = tfhash.fit(LabelIndexProbe, dataset.batch(16), bits=8, epochs=1, verbose=0)
    np.testing.assert_allclose(_table(hasher), expected_table(x, y), atol=1e-6)


def test_label_convention_and_missing_labels_are_checked_before_training():
    x, y = _probe_data()
    with pytest.raises(ValueError, match="`y` is required"):
        tfhash.fit(LabelIndexProbe, x, bits=8, epochs=1, batch_size=16)
    with pytest.raises(ValueError, match="class ids >= 0, or -1 for unlabelled"):
        tfhash.fit(LabelIndexProbe, x, y - 3, bits=8, epochs=1, batch_size=16)
    with pytest.raises(ValueError, match="0/1 multi-hot rows"):
        tfhash.fit(LabelIndexProbe, x, np.full((64, 3), 2), bits=8, epochs=1, batch_size=16)
    with pytest.raises(ValueError, match="labels none of the 64 items"):
        tfhash.fit(LabelIndexProbe, x, np.full(64, -1), bits=8, epochs=1, batch_size=16)
    with pytest.raises(ValueError, match="must yield \\(x, y\\) tuples or dicts with a 'y' key"):
        tfhash.fit(LabelIndexProbe, tf.data.Dataset.from_tensor_slices(x).batch(16), bits=8, epochs=1)
    with pytest.raises(ValueError, match="`y` must be None when `x` is a tf.data.Dataset"):
        tfhash.fit(LabelIndexProbe, tf.data.Dataset.from_tensor_slices((x, y)).batch(16), y, bits=8)
    # A label column [n, 1] is class ids, not one multi-hot class.
    hasher = tfhash.fit(LabelIndexProbe, x, y[:, None], bits=8, epochs=1, batch_size=16, verbose=0)
    np.testing.assert_allclose(_table(hasher), expected_table(x, y), atol=1e-6)


def test_unsupervised_schemes_ignore_labels():
    name = schemes.names()[0]
    scheme_cls = schemes.get(name)
    x = np.random.default_rng(0).random((48,) + inputs.input_shape(scheme_cls)).astype(np.float32)
    with_labels = tfhash.fit(name, x, np.arange(48) % 3, bits=8, epochs=1, batch_size=16, seed=1, verbose=0)
    without = tfhash.fit(name, x, bits=8, epochs=1, batch_size=16, seed=1, verbose=0)
    np.testing.assert_allclose(with_labels.predict_probabilities(x), without.predict_probabilities(x), atol=1e-6)


@pytest.mark.parametrize("name", schemes.names())
def test_paper_preset_equals_the_constructor_defaults(name):
    scheme_cls = schemes.get(name)
    assert scheme_cls.presets["paper"].hyperparameters == {} and scheme_cls.presets["paper"].per_bits == {}
    assert scheme_cls.default_preset in scheme_cls.presets
    derived = inputs.hyperparameters(scheme_cls)  # what fit derives from labels is not a preset's
    defaults = scheme_cls(bits=8, input_shape=inputs.input_shape(scheme_cls), **derived).get_config()
    for preset in scheme_cls.presets.values():
        assert preset.description and preset.selected_on and preset.name
        for bits in (8, 16, 32, 64):
            settings = preset.settings(bits)
            config = scheme_cls(bits=8, input_shape=inputs.input_shape(scheme_cls),
                                **{**settings["hyperparameters"], **derived}).get_config()
            assert settings["epochs"] > 0 and settings["batch_size"] > 0
            if preset.name == "paper":
                assert config == defaults
    assert ({k: v for k, v in scheme_cls.default_hyperparameters().items() if k not in derived}
            == {k: v for k, v in defaults.items() if k not in ("bits", "input_shape", "seed", *derived)})


@pytest.mark.e2e  # several fits or an export: the end-to-end tier
def test_presets_apply_per_code_length_and_explicit_arguments_win(tmp_path):
    name = schemes.names()[0]
    scheme_cls = schemes.get(name)
    knob = "learning_rate"
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"description": "test", "epochs": 2, "batch_size": 16,
                                "hyperparameters": {knob: 0.002}, "per_bits": {"8": {knob: 0.003, "epochs": 1}}}))
    preset = presets_lib.resolve(scheme_cls, str(path))
    assert preset.settings(8) == {"epochs": 1, "batch_size": 16, "hyperparameters": {knob: 0.003}}
    assert preset.settings(16) == {"epochs": 2, "batch_size": 16, "hyperparameters": {knob: 0.002}}
    x = np.random.default_rng(0).random((48,) + inputs.input_shape(scheme_cls)).astype(np.float32)
    hasher = tfhash.fit(name, x, bits=8, preset=str(path), verbose=0)
    assert hasher.epoch == 1 and hasher.model.learning_rate == 0.003 and hasher.preset == str(path)
    hasher = tfhash.fit(name, x, bits=8, preset=str(path), epochs=2, verbose=0, **{knob: 0.004})
    assert hasher.epoch == 2 and hasher.model.learning_rate == 0.004
    with pytest.raises(ValueError, match=re.escape(f"presets {sorted(scheme_cls.presets)}")):
        tfhash.fit(name, x, bits=8, preset="nope")
    path.write_text(json.dumps({"hyperparameters": {"nope": 1}}))
    with pytest.raises(ValueError, match="unknown hyperparameter\\(s\\) \\['nope'\\]"):
        tfhash.fit(name, x, bits=8, preset=str(path))


def test_preset_epochs_chosen_at_a_training_size_keep_their_steps_on_larger_sets():
    preset = presets_lib.Preset(description="test", epochs=10, batch_size=16, training_items=9000)
    assert [preset.epochs_for(10, n) for n in (1600, 9000, 20000, 69000, 10**7)] == [10, 10, 4, 1, 1]
    assert presets_lib.Preset(description="paper", epochs=10).epochs_for(10, 69000) == 10  # the papers' epochs hold
    with pytest.raises(ValueError, match="training_items of preset 'x'` must be a positive integer, got int 0"):
        presets_lib.Preset(description="x", training_items=0, name="x").check(schemes.get("sigah"), "preset 'x'")
    name = "sigah"  # the quickest scheme to fit
    scheme_cls = schemes.get(name)
    x = np.random.default_rng(0).random((64,) + inputs.input_shape(scheme_cls)).astype(np.float32)
    sized = presets_lib.Preset(description="sized", epochs=4, batch_size=16, training_items=32, name="sized")
    assert tfhash.fit(name, x, bits=8, preset=sized, verbose=0).epoch == 2  # twice the items: half the epochs
    assert tfhash.fit(name, x, bits=8, preset=sized, epochs=3, verbose=0).epoch == 3  # explicit epochs win


@pytest.mark.e2e  # several fits or an export: the end-to-end tier
def test_resume_refuses_other_seed_batch_size_or_preset_and_continues_longer_runs(tmp_path):
    name = schemes.names()[0]
    scheme_cls = schemes.get(name)
    x = np.random.default_rng(0).random((48,) + inputs.input_shape(scheme_cls)).astype(np.float32)
    run = str(tmp_path / "run")
    tfhash.fit(name, x, bits=8, epochs=1, batch_size=16, seed=1, verbose=0, checkpoint_dir=run)
    with pytest.raises(ValueError, match="seed: saved 1, asked 2"):
        tfhash.fit(name, x, bits=8, epochs=1, batch_size=16, seed=2, checkpoint_dir=run)
    with pytest.raises(ValueError, match="batch_size: saved 16, asked 8"):
        tfhash.fit(name, x, bits=8, epochs=1, batch_size=8, seed=1, checkpoint_dir=run)
    other = [p for p in scheme_cls.presets.values() if p.name != scheme_cls.default_preset]
    if other:
        with pytest.raises(ValueError, match="trained with other settings"):
            tfhash.fit(name, x, bits=8, epochs=1, batch_size=16, seed=1, preset=other[0].name, checkpoint_dir=run)
    longer = tfhash.fit(name, x, bits=8, epochs=2, batch_size=16, seed=1, verbose=0, checkpoint_dir=run)
    assert longer.history.epoch == [1]
    loaded = tfhash.Hasher.load(run)
    assert loaded.epoch == 2 and loaded.preset == scheme_cls.default_preset
    assert loaded.training == {"epochs": 2, "batch_size": 16, "seed": 1}


def test_checkpoints_without_their_config_are_not_overwritten(tmp_path):
    name = schemes.names()[0]
    scheme_cls = schemes.get(name)
    x = np.random.default_rng(0).random((48,) + inputs.input_shape(scheme_cls)).astype(np.float32)
    run = tmp_path / "run"
    tfhash.fit(name, x, bits=8, epochs=1, batch_size=16, verbose=0, checkpoint_dir=str(run))
    (run / tfhash.hasher.CONFIG_FILE).unlink()
    with pytest.raises(ValueError, match="holds checkpoints but no tfhash_config.json"):
        tfhash.fit(name, x, bits=8, epochs=1, batch_size=16, checkpoint_dir=str(run))


@pytest.mark.parametrize("scheme", ["hashgan", "sigah"])
def test_datasets_that_would_train_on_the_wrong_items_or_never_end_are_refused(scheme):
    shape = inputs.input_shape(scheme)
    x = np.random.default_rng(0).random((40,) + shape).astype(np.float32)
    items = tf.data.Dataset.from_tensor_slices(x)
    refused = {
        "call .batch\\(batch_size\\)": items,  # single items, not batches
        "infinite \\(.repeat\\(\\) without a count\\)": items.batch(8).repeat(),
        "is empty: it yields no batches": items.batch(8).take(0),
        # Unknown size, found empty by reading its first batch.
        "is empty: it yields no batches ": items.batch(8).filter(lambda b: tf.reduce_sum(b) < -1.0),
    }
    for message, dataset in refused.items():
        with pytest.raises(ValueError, match=message.strip()):
            tfhash.fit(scheme, dataset, bits=8, epochs=1, verbose=0)
    if len(shape) == 3:  # colour images too, and uint8 pixels
        colour = tf.data.Dataset.from_tensor_slices(np.zeros((4, 8, 8, 3), np.uint8))
        with pytest.raises(ValueError, match=r"single images of shape \(8, 8, 3\)"):
            tfhash.fit(scheme, colour, bits=8, epochs=1, verbose=0)


@pytest.mark.parametrize("name", schemes.names())
def test_bad_setting_values_are_refused_before_any_data_is_read(name, monkeypatch):
    scheme_cls = schemes.get(name)
    numeric = next(k for k, v in scheme_cls.default_hyperparameters().items()
                   if k.startswith("weight_") and isinstance(v, float))

    def no_reading(*args, **kwargs):
        raise AssertionError("data was read")

    monkeypatch.setattr(tfhash.training, "_prepare_data", no_reading)
    with pytest.raises(ValueError, match=rf"tfhash.fit: `{numeric}` must be a non-negative number, got -1"):
        tfhash.fit(name, np.zeros((4,) + inputs.input_shape(scheme_cls), np.float32), bits=8, **{numeric: -1})
    assert scheme_cls.check_values({numeric: 0.5}, 8) == {numeric: 0.5}


class _StepCounter(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.steps = []

    def on_epoch_begin(self, epoch, logs=None):
        self.steps.append(0)

    def on_train_batch_end(self, batch, logs=None):
        self.steps[-1] += 1


def test_datasets_of_unknown_size_train_one_pass_per_epoch_and_endless_ones_need_a_length():
    scheme = "sigah"  # it reads the training items before training too (feature statistics)
    x = np.random.default_rng(0).random((40, 6)).astype(np.float32)
    batches = tf.data.Dataset.from_tensor_slices(x).batch(8)
    generated = tf.data.Dataset.from_generator(lambda: iter(x.reshape(5, 8, 6)),
                                               output_signature=tf.TensorSpec((8, 6), tf.float32))
    assert int(generated.cardinality()) == tf.data.UNKNOWN_CARDINALITY
    counter = _StepCounter()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "ran out of data" for an epoch that ends as it should
        tfhash.fit(scheme, generated, bits=4, epochs=2, verbose=0, callbacks=[counter])
    assert counter.steps == [5, 5]
    endless = batches.repeat().filter(lambda b: True).map(lambda b: b * 0.5)
    assert int(endless.cardinality()) == tf.data.UNKNOWN_CARDINALITY
    with pytest.raises(ValueError, match=r"infinite.*or `steps_per_epoch`"):
        tfhash.fit(scheme, endless, bits=4, epochs=2, verbose=0)
    counter = _StepCounter()
    tfhash.fit(scheme, endless, bits=4, epochs=2, steps_per_epoch=3, verbose=0, callbacks=[counter])
    assert counter.steps == [3, 3]
    assert not tfhash.training._endless(batches.repeat().take(5).filter(lambda b: True))  # cut short: finite
    with pytest.raises(ValueError, match="`steps_per_epoch` applies to a tf.data.Dataset `x` only"):
        tfhash.fit(scheme, x, bits=4, epochs=1, steps_per_epoch=3, verbose=0)


def test_every_batch_of_a_dataset_is_range_checked():
    scheme = "greedyhash"
    x = np.random.default_rng(0).random((40,) + inputs.input_shape(scheme)).astype(np.float32)
    x[32:] *= 255.0  # the fifth batch holds 0-255 values
    with pytest.raises(ValueError, match=r"`x` must hold images with values in \[0, 1\], got values in \[0(\.\d+)?, "
                                         r"2\d\d(\.\d+)?\]\. Pixel values 0-255: divide by 255"):
        tfhash.fit(scheme, tf.data.Dataset.from_tensor_slices(x).batch(8), bits=8, epochs=1, verbose=0)


def test_encode_refuses_a_batch_size_that_is_not_a_positive_count():
    x = np.random.default_rng(0).random((16, 6)).astype(np.float32)
    hasher = tfhash.fit("sigah", x, bits=4, epochs=1, batch_size=8, verbose=0)
    for bad in (-1, 0, 2.5, True):
        for method in (hasher.encode, hasher.predict_probabilities):
            with pytest.raises(ValueError, match="`batch_size` must be a positive integer"):
                method(x[:8], batch_size=bad)
    assert hasher.encode(x[:8], batch_size=3).shape == (8, 1)


def test_bad_arguments_are_named_with_what_was_expected_and_what_arrived(tmp_path):
    x = np.random.default_rng(0).random((12,) + inputs.input_shape("dshgan")).astype(np.float32)
    with pytest.raises(ValueError, match=r"`y` must be integer class ids.*<U2.*np.unique\(y, return_inverse=True\)"):
        tfhash.fit("dshgan", x, ["c1", "c2"] * 6, bits=8, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="`seed` must be a non-negative integer.*NoneType None"):
        tfhash.fit("hashgan", x, bits=8, epochs=1, seed=None, verbose=0)
    preset = tmp_path / "mine.json"
    preset.write_text(json.dumps({"hyperparameters": [["weight_entropy", 0.1]]}))
    with pytest.raises(ValueError, match=r"'hyperparameters' must be a JSON object.*got list"):
        tfhash.fit("hashgan", x, bits=8, preset=str(preset), verbose=0)



def test_steps_per_execution_trains_as_one_step_per_call():
    name = "sigah"  # the quickest scheme to fit
    scheme_cls = schemes.get(name)
    x = np.random.default_rng(0).random((64,) + inputs.input_shape(scheme_cls)).astype(np.float32)
    runs = [tfhash.fit(name, x, bits=8, epochs=2, batch_size=16, verbose=0, steps_per_execution=n) for n in (1, 4)]
    assert runs[1].model.steps_per_execution == 4
    for key, value in runs[0].history.history.items():
        np.testing.assert_allclose(runs[1].history.history[key], value, rtol=1e-4, atol=1e-6, err_msg=key)
    np.testing.assert_array_equal(runs[1].encode(x), runs[0].encode(x))
    with pytest.raises(ValueError, match="`steps_per_execution` must be a positive integer, got int 0"):
        tfhash.fit(name, x, bits=8, steps_per_execution=0)


def test_constant_bits_are_counted_on_packed_codes():
    codes = tfhash.codes.pack(np.array([[1, 0, 1, 1, 0, 0, 1, 0, 1, 1],
                                        [1, 1, 0, 1, 0, 0, 1, 0, 1, 0],
                                        [1, 0, 1, 1, 0, 1, 1, 0, 1, 1]], np.uint8))  # the library's bit order
    # bits 0, 3, 4, 6, 7, 8 never change; the padding bits past the 10th are not counted
    assert tfhash.training.constant_bits(codes, 10) == 6
    assert tfhash.training.constant_bits(codes[:1], 10) == 10


class _ZeroWeightsAtTheEnd(keras.callbacks.Callback):
    def on_train_end(self, logs=None):
        self.model.set_weights([np.zeros_like(w) for w in self.model.get_weights()])


@pytest.mark.parametrize("form", ["arrays", "dataset"])
def test_fit_warns_when_bits_are_the_same_for_every_training_item(form):
    x = np.random.default_rng(0).random((3000, 16), dtype=np.float32)
    if form == "arrays":  # sorted into a dark and a light half: the check looks over the whole array
        x[:1500] *= 0.3
        x[1500:] = 0.7 + 0.3 * x[1500:]
    data = x if form == "arrays" else tf.data.Dataset.from_tensor_slices(x[:600]).batch(100)
    if form == "arrays":
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # a run whose bits all vary warns nothing
            tfhash.fit("greedyhash", data, bits=8, epochs=1, batch_size=100, verbose=0)
    with pytest.warns(RuntimeWarning, match=r"8 of 8 bits are the same for all (1024|600) training items checked "
                                            r"\(every item has the same code: training collapsed\)"):
        tfhash.fit("greedyhash", data, bits=8, epochs=1, batch_size=100, verbose=0,
                   callbacks=[_ZeroWeightsAtTheEnd()])


def test_fit_leaves_the_callers_random_state_alone_and_its_seed_decides_the_run():
    import random

    import tensorflow as tf

    x = np.random.default_rng(0).normal(size=(64, 16)).astype(np.float32)
    random.seed(7)
    np.random.seed(7)
    tf.random.set_seed(7)
    expected = (random.random(), np.random.random(), float(tf.random.uniform([])))
    random.seed(7)
    np.random.seed(7)
    tf.random.set_seed(7)
    first = tfhash.fit("sigah", x, bits=8, epochs=1, batch_size=16, seed=3, verbose=0)
    # The caller's streams go on as if fit had drawn nothing from them (Keras's convention: the seed argument
    # seeds the run's own generators only).
    assert (random.random(), np.random.random(), float(tf.random.uniform([]))) == expected
    random.seed(99)
    np.random.seed(99)
    second = tfhash.fit("sigah", x, bits=8, epochs=1, batch_size=16, seed=3, verbose=0)
    np.testing.assert_array_equal(first.encode(x), second.encode(x))
    for a, b in zip(first.model.get_weights(), second.model.get_weights()):
        np.testing.assert_array_equal(a, b)
