"""Exports read back: :func:`load` gives a hasher that encodes, evaluates and indexes with the exported encoder
alone (a SavedModel, no training code, no pickle) or a TFLite model run by the LiteRT interpreter.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from tfhash import _validation
from tfhash.codes import num_bytes
from tfhash.encoding import check_items, encode_in_batches
from tfhash.export import METADATA_FILE, SERVING_SIGNATURE, TFLITE_MAGIC, is_tflite, read_metadata, read_tflite_metadata
from tfhash.hasher import BaseHasher


class _ServedHasher(BaseHasher):
    """Encoding through an exported serving function; subclasses set ``bits``, ``item_shape`` and
    ``_serve(batch) -> {"codes", "probabilities"}``."""

    def _encode_all(self, x, batch_size):
        batch_size = _validation.check_positive_int(batch_size, "batch_size")
        if self.input_kind is None and np.asarray(x).dtype == np.uint8:
            raise ValueError("`x` is uint8, and this export does not record whether its inputs are images in [0, 1] "
                             "or raw features: pass float32 values as in training (images: pixels / 255).")
        x = check_items(x, self.item_shape, "x", "as exported", self.input_kind or "features")
        return encode_in_batches(self._serve_batch, x, batch_size, self.bits)

    def encode(self, x, batch_size=256):
        return self._encode_all(x, batch_size)["codes"]

    def predict_probabilities(self, x, batch_size=256):
        return self._encode_all(x, batch_size)["probabilities"]


class ExportedHasher(_ServedHasher):
    """A hasher rebuilt from a SavedModel export alone: ``encode``, ``predict_probabilities``,
    ``evaluate``, ``index``. Needs no training code and runs no pickle."""

    def __init__(self, path, loaded, description):
        self.path = path
        self._loaded = loaded
        self._serve = loaded.signatures[SERVING_SIGNATURE]
        self.metadata = description
        try:
            self.bits = int(description["bits"])
            self.scheme = str(description["scheme"])
            self.item_shape = tuple(int(d) for d in description["input_shape"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"`path` {path!r}: assets/{METADATA_FILE} lacks a valid bits / scheme / input_shape "
                             f"({type(err).__name__}: {err}).") from err
        self.input_kind = description.get("input_kind", "images")
        self.fingerprint = description.get("encoder_fingerprint")

    def __repr__(self):
        return f"ExportedHasher(scheme={self.scheme!r}, bits={self.bits}, path={self.path!r})"

    def _serve_batch(self, batch):
        return self._serve(inputs=tf.constant(batch))


class TFLiteHasher(_ServedHasher):
    """A hasher running a TFLite export with the LiteRT interpreter (``pip install "tfhash[tflite]"``).

    Bits and item shape are read from the model's signature (outputs ``codes`` and ``probabilities``); the
    description ``export_tflite`` embeds (``metadata``) gives the scheme and input kind, so inputs are
    checked and uint8 pixels scaled exactly as by a SavedModel export. A TFLite model without it refuses
    uint8 inputs rather than guess their scale.
    """

    def __init__(self, path):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as err:
            raise ImportError('running a TFLite export needs the LiteRT interpreter: pip install "tfhash[tflite]" '
                              "(or ai-edge-litert).") from err
        self.path = os.fspath(path)
        if not is_tflite(self.path):
            raise ValueError(f"`path` {path!r} is not a TFLite model (no {TFLITE_MAGIC.decode()} identifier at bytes "
                             "4-8): a damaged or foreign file.")
        try:
            self._runner = Interpreter(model_path=self.path).get_signature_runner()
        except Exception as err:  # the interpreter raises ValueError / RuntimeError on bad files
            raise ValueError(f"`path` {path!r} is a damaged TFLite model: {_validation.error_summary(err)}") from err
        inputs, outputs = self._runner.get_input_details(), self._runner.get_output_details()
        if set(outputs) != {"codes", "probabilities"} or len(inputs) != 1:
            raise ValueError(f"`path` {path!r} is not a tfhash TFLite export (outputs {sorted(outputs)}).")
        self._input_name = next(iter(inputs))
        self.item_shape = tuple(int(d) for d in inputs[self._input_name]["shape"][1:])
        self.bits = int(outputs["probabilities"]["shape"][-1])
        try:
            self.metadata = read_tflite_metadata(self.path)
        except (IndexError, TypeError, AttributeError) as err:  # FlatBuffer readers fail so on damaged files
            raise ValueError(f"`path` {path!r} is a damaged TFLite model: its metadata cannot be read "
                             f"({_validation.error_summary(err)}).") from err
        self.scheme = str(self.metadata["scheme"]) if self.metadata else "tflite"
        self.input_kind = self.metadata.get("input_kind", "images") if self.metadata else None
        self.fingerprint = self.metadata.get("encoder_fingerprint") if self.metadata else None

    def __repr__(self):
        return f"TFLiteHasher(scheme={self.scheme!r}, bits={self.bits}, path={self.path!r})"

    def _serve_batch(self, batch):
        return self._runner(**{self._input_name: batch})


def _check_serves(hasher):
    """One zero item through the export: a damaged or foreign model fails here, at load, not at the first
    encode; the outputs must be the codes and probabilities its description promises."""
    probe = np.zeros((1,) + hasher.item_shape, np.float32)
    try:
        outputs = hasher._serve_batch(probe)
        codes, probabilities = np.asarray(outputs["codes"]), np.asarray(outputs["probabilities"])
    except Exception as err:  # whatever the runtime raises, name the file
        raise ValueError(f"`path` {hasher.path!r} cannot encode an item of shape {hasher.item_shape}: "
                         f"{_validation.error_summary(err)}") from err
    expected = {"codes": (1, num_bytes(hasher.bits)), "probabilities": (1, hasher.bits)}
    got = {"codes": codes.shape, "probabilities": probabilities.shape}
    if got != expected or codes.dtype != np.uint8:
        raise ValueError(f"`path` {hasher.path!r} is not the tfhash export its description says (bits={hasher.bits}): "
                         f"outputs {got} (codes {codes.dtype}), expected {expected} (codes uint8).")
    if not np.all(np.isfinite(probabilities)):
        raise ValueError(f"`path` {hasher.path!r} gives non-finite probabilities ({probabilities[0, :4]}...) for a "
                         "probe item, so its codes would mean nothing: a model converted by hand rather than by "
                         "tfhash's export? Export it with Hasher.export / tfhash.export.")
    return hasher


def load(path: str | os.PathLike) -> ExportedHasher | TFLiteHasher:
    """An :class:`ExportedHasher` from a SavedModel export (``Hasher.export`` / ``export_saved_model``), or
    a :class:`TFLiteHasher` for a ``.tflite`` file (``export_tflite``).

    The export is checked by encoding one item: a truncated, damaged or foreign model is refused here.
    """
    if is_tflite(path) or (os.fspath(path).endswith(".tflite") and os.path.isfile(path)):  # by its identifier
        return _check_serves(TFLiteHasher(path))
    description = read_metadata(path)
    try:
        loaded = tf.saved_model.load(os.fspath(path))
    except Exception as err:  # truncated .pb / variables raise several error types
        raise ValueError(f"`path` {path!r} holds a damaged SavedModel (saved_model.pb or variables/ cannot be "
                         f"read): {_validation.error_summary(err)}") from err
    if SERVING_SIGNATURE not in loaded.signatures:
        raise ValueError(f"`path` {path!r} lacks the {SERVING_SIGNATURE!r} signature of a tfhash export.")
    return _check_serves(ExportedHasher(os.fspath(path), loaded, description))
