"""Export: the encoder alone, as a SavedModel (TF Serving layout) or a TFLite model.

A SavedModel export holds the signatures the scheme names (``tfhash.encoding.serving_signatures``):

* ``serving_default``: input ``inputs`` float32 ``[batch, *item_shape]`` as in training (images in
  [0, 1]; feature schemes: raw feature values, standardised inside the graph where the scheme does so);
* ``serving_pixels`` (image schemes only): input ``pixels`` uint8 ``[batch, *item_shape]`` (0..255),
  divided by 255 in the graph -- the same rule as ``Hasher.encode`` on uint8 arrays;

both with outputs ``codes`` (uint8 ``[batch, ceil(bits / 8)]``, packed in the ``tfhash.codes``
convention) and ``probabilities`` (float32 ``[batch, bits]``). ``assets/tfhash.json`` describes the
export (scheme, preset, bits, bit order, threshold, input kind and range, tfhash version) and is plain
JSON. Reading exports back: ``tfhash.serving`` (``tfhash.load``).

Every write goes to a temporary directory beside the target, which is renamed into place only when
complete: an interrupted export leaves nothing at the target path. A target is never the working
directory, one of its ancestors or the home directory, and the only directory an export replaces
(``overwrite=True``) is a previous export that holds nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfhash import _io, _validation
from tfhash import codes as codes_lib
from tfhash._version import __version__
from tfhash.encoding import PIXEL_SCALE, serving_outputs, serving_signatures

METADATA_FILE = "tfhash.json"
SERVING_SIGNATURE = "serving_default"
PIXELS_SIGNATURE = "serving_pixels"
QUANTIZATIONS = (None, "float16", "dynamic")
TFLITE_MAGIC = b"TFL3"  # the FlatBuffer file identifier of TFLite models, at bytes 4-8
TFLITE_METADATA_NAME = "tfhash"  # the TFLite metadata entry holding the export's description


SIGNATURE_INPUTS = {SERVING_SIGNATURE: "inputs", PIXELS_SIGNATURE: "pixels"}
# What tf.saved_model.save writes, plus the metadata in assets/: an export holding anything else is not replaced.
EXPORT_ENTRIES = frozenset({"saved_model.pb", "variables", "assets", "fingerprint.pb"})
VERSION_ATTEMPTS = 1000  # export_serving: next free versions tried when other writers take them meanwhile


def encoder_fingerprint(model: keras.Model, quantization: str | None = None) -> str:
    """A digest of what decides an encoder's codes: its weights (in order), threshold, bits and any TFLite
    quantization. Exports of one trained model share it, so an index built with one is searched with another."""
    digest = hashlib.sha256(f"tfhash-encoder bits={model.bits} threshold={float(model.threshold)!r}".encode())
    if quantization is not None:
        digest.update(f" quantization={quantization}".encode())
    for weight in model.encoder_model().get_weights():
        weight = np.ascontiguousarray(weight)
        digest.update(f"{weight.dtype.str}{weight.shape}".encode())
        digest.update(weight.tobytes())
    return digest.hexdigest()


def metadata(hasher: Any, quantization: str | None = None) -> dict:
    model = hasher.model
    signatures = serving_signatures(model.input_kind)
    images = model.input_kind == "images"
    description = {
        "format": "tfhash-export", "tfhash_version": __version__, "scheme": model.key,
        "preset": getattr(hasher, "preset", None),
        "bits": model.bits, "code_bytes": codes_lib.num_bytes(model.bits), "bit_order": "lsb-first",
        "packing": "bit k in byte k // 8 at position k % 8 from the least-significant bit (Faiss layout)",
        "threshold": model.threshold, "threshold_rule": "bit = 1 where probability >= threshold",
        "input_shape": list(model.item_shape), "input_kind": model.input_kind,
        "input_range": [0.0, 1.0] if images else None,
        "input": ("images with values in [0, 1]" if images else
                  "raw feature values, as given to training (any standardisation is inside the graph)"),
        "signatures": {name: {"inputs": SIGNATURE_INPUTS[name], "outputs": ["codes", "probabilities"]}
                       for name in signatures},
        "config": model.get_config(),
        "encoder_fingerprint": encoder_fingerprint(model, quantization),
    }
    if quantization is not None:
        description["quantization"] = quantization
    if PIXELS_SIGNATURE in signatures:
        description["pixel_scale"] = PIXEL_SCALE
    return description


class _EncoderModule(tf.Module):
    """The encoder and its serving functions; no adversarial player is reachable from it."""

    def __init__(self, encoder, item_shape, threshold):
        super().__init__()
        self.encoder = encoder
        self.item_shape = tuple(int(d) for d in item_shape)
        self.threshold = float(threshold)
        spec = [None] + list(item_shape)
        self.serve = tf.function(self._serve, input_signature=[tf.TensorSpec(spec, tf.float32, name="inputs")])
        self.serve_pixels = tf.function(self._serve_pixels,
                                        input_signature=[tf.TensorSpec(spec, tf.uint8, name="pixels")])

    def _checked(self, inputs, name):
        """``inputs`` once its item shape and finiteness are verified in the graph.

        A serving client may feed any shape (the signature's shape is not enforced at run time), and a
        network that flattens or pools would return codes for it. Rank is tested through a padded copy of
        the runtime shape, since a rank op on an input of declared rank is folded to a constant.
        """
        expected = list(self.item_shape)
        shape = tf.raw_ops.Shape(input=inputs)
        padded = tf.concat([shape, tf.zeros([len(expected) + 2], tf.int32)], 0)
        matches = tf.logical_and(tf.reduce_all(tf.equal(padded[1:len(expected) + 1], expected)),
                                 tf.equal(padded[len(expected) + 1], 0))
        check_shape = tf.debugging.Assert(
            matches, [f"`{name}` must be [batch, {', '.join(map(str, expected))}] items; got shape", shape])
        with tf.control_dependencies([check_shape]):
            inputs = tf.identity(inputs)
        if inputs.dtype.is_floating:
            inputs = tf.debugging.assert_all_finite(inputs, f"`{name}` must be finite (no NaN or inf values)")
        return inputs

    def _serve(self, inputs):
        return serving_outputs(self.encoder, self._checked(inputs, "inputs"), self.threshold)

    def _serve_pixels(self, pixels):
        pixels = self._checked(pixels, "pixels")
        return serving_outputs(self.encoder, tf.cast(pixels, tf.float32) / PIXEL_SCALE,  # Hasher.encode's uint8 rule
                               self.threshold)

    def signatures(self, names):
        functions = {SERVING_SIGNATURE: self.serve, PIXELS_SIGNATURE: self.serve_pixels}
        return {name: functions[name] for name in names}


class _PackCodes(keras.layers.Layer):
    """Probabilities -> packed uint8 codes (threshold, then multiply-and-sum packing)."""

    def __init__(self, threshold, **kwargs):
        super().__init__(**kwargs)
        self.threshold = float(threshold)

    def call(self, probabilities):
        return codes_lib.pack_tf(tf.cast(probabilities >= self.threshold, tf.float32))


def _keras_serving_model(model):
    inputs = keras.Input(shape=model.item_shape, name="inputs")
    probabilities = model.encoder_model()(inputs)
    return keras.Model(inputs, {"codes": _PackCodes(model.threshold, name="codes")(probabilities),
                                "probabilities": probabilities})


def _check_trained(hasher):
    if not hasattr(hasher, "model") or not hasattr(hasher.model, "encoder_model"):
        raise ValueError(f"`hasher` must be a trained tfhash.Hasher (from tfhash.fit or Hasher.load), "
                         f"got {type(hasher).__name__}.")
    if not hasher.trained:
        raise ValueError("`hasher` is untrained (no optimizer step taken): train it with tfhash.fit before exporting.")


def _check_exportable(hasher, path, overwrite):
    _check_trained(hasher)
    return _io.check_directory_target(path, overwrite, PREVIOUS_EXPORT)


def _why_not_replaceable(path):
    """Why ``path`` is not an export that overwrite=True may replace, or None when it is."""
    if not is_export(path):
        return f"is not empty and is not a tfhash export (no assets/{METADATA_FILE})"
    foreign = _foreign_entries(path)
    if foreign:
        return (f"is a tfhash export that also holds other files ({', '.join(foreign)}), such as a training run's "
                "checkpoints")
    return None


def _foreign_entries(path):
    """What a directory holds besides the files of a SavedModel export (sorted relative paths)."""
    foreign = sorted(set(os.listdir(path)) - EXPORT_ENTRIES)
    assets = os.path.join(path, "assets")
    if os.path.isdir(assets):
        foreign += sorted(os.path.join("assets", name) for name in set(os.listdir(assets)) - {METADATA_FILE})
    return foreign


# overwrite=True replaces a previous export only, never a training run or any other directory.
PREVIOUS_EXPORT = _io.Replaceable("a previous export", _why_not_replaceable)


def read_metadata(path: str | os.PathLike) -> dict:
    """The export's ``assets/tfhash.json`` as a dict (plain JSON: no TensorFlow needed)."""
    meta_path = os.path.join(os.fspath(path), "assets", METADATA_FILE)
    if not os.path.isfile(meta_path):
        raise ValueError(f"`path` must be a tfhash export (a SavedModel with assets/{METADATA_FILE}), "
                         f"got {path!r}.")
    try:
        with open(meta_path, encoding="utf-8") as f:
            description = json.load(f)
    except ValueError as err:
        raise ValueError(f"`path` {path!r} has an assets/{METADATA_FILE} that is not valid JSON: {err}") from err
    if not isinstance(description, dict) or description.get("format") != "tfhash-export":
        raise ValueError(f"`path` {path!r} has an assets/{METADATA_FILE} that is not a tfhash export description.")
    return description


def is_tflite(path: str | os.PathLike) -> bool:
    """True if ``path`` is a file carrying the TFLite FlatBuffer identifier (whatever its name)."""
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        return f.read(8)[4:8] == TFLITE_MAGIC


def is_export(path: str | os.PathLike) -> bool:
    """True if ``path`` is a directory holding a tfhash SavedModel export."""
    try:
        read_metadata(path)
    except (OSError, ValueError):
        return False
    return True


def _write_saved_model(hasher, parent, name):
    """The export written to a new temporary directory in ``parent``; returns its path."""
    os.makedirs(parent, exist_ok=True)
    model = hasher.model
    module = _EncoderModule(model.encoder_model(), model.item_shape, model.threshold)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{name}.tmp-")
    try:
        tf.saved_model.save(module, tmp, signatures=module.signatures(serving_signatures(model.input_kind)))
        os.makedirs(os.path.join(tmp, "assets"), exist_ok=True)
        _io.write_json_atomically(os.path.join(tmp, "assets", METADATA_FILE), metadata(hasher))
        _io.honour_umask(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def export_saved_model(hasher: Any, path: str | os.PathLike, *, overwrite: bool = False) -> str:
    """Writes the encoder of ``hasher`` as a SavedModel at ``path`` (atomically); returns ``path``.

    ``path`` must be new or an empty directory; with ``overwrite=True`` it may also be a previous export
    that holds nothing else. Of concurrent exports to one new path exactly one succeeds; the others raise
    ``FileExistsError``.
    """
    path = _check_exportable(hasher, path, overwrite)
    target = os.path.abspath(path)
    tmp = _write_saved_model(hasher, os.path.dirname(target), os.path.basename(target))
    try:
        _io.place_directory(tmp, target, PREVIOUS_EXPORT if overwrite else None)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def export_serving(hasher: Any, base_dir: str | os.PathLike, model_name: str = "tfhash", *, version: int | None = None,
                   overwrite: bool = False) -> str:
    """TF Serving layout: ``<base_dir>/<model_name>/<version>/`` plus ``<base_dir>/models.config``.

    ``version`` defaults to one more than the highest existing version; concurrent exports never write the
    same version (a writer that finds its version taken moves on to the next). Returns the version directory.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(model_name)) or str(model_name) in (".", ".."):
        raise ValueError(f"`model_name` must be letters, digits, '_', '.' or '-', got {model_name!r}.")
    base_dir = os.fsdecode(os.fspath(base_dir))
    if not base_dir.strip():  # the layout goes *inside* base_dir, so "." is fine, but "" is an unset variable
        raise ValueError(f"`base_dir` must name the directory that holds the layout, got an empty path {base_dir!r}.")
    model_dir = os.path.join(base_dir, model_name)
    if version is not None:
        target = export_saved_model(hasher, os.path.join(model_dir, str(_validation.check_positive_int(
            version, "version"))), overwrite=overwrite)
    else:
        _check_trained(hasher)
        tmp = _write_saved_model(hasher, model_dir, model_name)
        try:
            target = _place_next_version(tmp, model_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    config = ("model_config_list {\n  config {\n"
              f"    name: \"{model_name}\"\n    base_path: \"/models/{model_name}\"\n"
              "    model_platform: \"tensorflow\"\n  }\n}\n")
    _io.write_bytes_atomically(os.path.join(base_dir, "models.config"), config, mode="w")
    return target


def _place_next_version(tmp, model_dir):
    """Renames ``tmp`` to the next free version directory of ``model_dir``; returns its path."""
    version = max((int(v) for v in os.listdir(model_dir) if v.isdigit()), default=0) + 1
    for _ in range(VERSION_ATTEMPTS):
        target = os.path.join(model_dir, str(version))
        try:
            _io.place_directory(tmp, target)
            return target
        except FileExistsError:
            version += 1  # another writer took this version meanwhile
    raise FileExistsError(f"no free version in {model_dir!r} after {VERSION_ATTEMPTS} attempts.")


def export_tflite(hasher: Any, path: str | os.PathLike, *, quantization: str | None = None,
                  overwrite: bool = False) -> str:
    """Writes a TFLite encoder (float input in [0, 1] -> ``codes``, ``probabilities``), builtin ops only.

    Args:
        quantization: ``None`` (float32), ``"float16"`` (float16 weights) or ``"dynamic"``
            (dynamic-range int8 weights).
    """
    _validation.check_choice(quantization, "quantization", QUANTIZATIONS)
    _check_trained(hasher)
    path = _io.check_target_path(path, "path")
    if os.path.isdir(path):
        raise ValueError(f"`path` must be a file path, got an existing directory {path!r}.")
    if os.path.exists(path):
        if not overwrite:
            raise ValueError(f"`path` {path!r} exists; pass overwrite=True to replace it.")
        if not is_tflite(path):  # overwrite=True replaces a TFLite model only
            raise ValueError(f"`path` {path!r} exists and is not a TFLite model; overwrite=True only replaces "
                                 "a previous TFLite export. Choose another path.")
    flatbuffer = _with_tflite_metadata(_tflite_flatbuffer(hasher, quantization), metadata(hasher, quantization))
    _io.write_bytes_atomically(path, flatbuffer, replace=overwrite)
    return path


def _tflite_schema():
    """The TFLite FlatBuffer schema, as LiteRT (the interpreter package) publishes it."""
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError as err:
        raise ImportError("TFLite exports need the LiteRT package: pip install 'tfhash[tflite]' "
                          "(ai-edge-litert).") from err
    return schema_py_generated


def _with_tflite_metadata(flatbuffer, description):
    """The model with ``description`` as JSON in a metadata buffer named ``TFLITE_METADATA_NAME``.

    The TFLite schema's metadata entries travel with the file and are ignored by interpreters, so a
    ``.tflite`` file says what a SavedModel's ``assets/tfhash.json`` says (input kind and range first).
    """
    schema = _tflite_schema()
    import flatbuffers  # a dependency of tensorflow and of LiteRT

    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(description, sort_keys=True, default=float).encode("utf-8"), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = TFLITE_METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = list(model.metadata or []) + [entry]
    builder = flatbuffers.Builder(len(flatbuffer) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_MAGIC)
    return bytes(builder.Output())


def read_tflite_metadata(path: str | os.PathLike) -> dict | None:
    """The tfhash description a TFLite export carries (see :func:`export_tflite`), or ``None`` for a TFLite
    model without one."""
    schema = _tflite_schema()
    with open(path, "rb") as f:
        model = schema.Model.GetRootAs(bytearray(f.read()), 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == TFLITE_METADATA_NAME.encode():
            data = model.Buffers(entry.Buffer()).DataAsNumpy()
            try:
                description = json.loads(bytes(data).decode("utf-8"))
            except (ValueError, TypeError) as err:
                raise ValueError(f"`path` {path!r} carries tfhash metadata that is not valid JSON: {err}") from err
            if not isinstance(description, dict) or description.get("format") != "tfhash-export":
                raise ValueError(f"`path` {path!r} carries tfhash metadata that is not a tfhash export description.")
            return description
    return None


def _tflite_flatbuffer(hasher, quantization):
    """The converted TFLite model, as bytes."""
    # Converted from a functional Keras model: converting the tf.Module wrapper (directly or through a
    # SavedModel) produced NaN outputs with TF 2.21 / Keras 3, while from_keras_model is exact.
    converter = tf.lite.TFLiteConverter.from_keras_model(_keras_serving_model(hasher.model))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # bitwise ops need select ops
    if quantization is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
    return converter.convert()
