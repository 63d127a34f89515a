"""What every hashing scheme shares: trackers, optimisers per player, encoding, config, export target.

A scheme subclasses :class:`HashingScheme` and provides:

* its facts as class attributes (read by ``tfhash.fit``, the export, the benchmarks and the shared
  tests, so none of them needs to know a scheme by name): ``input_kind``, ``needs_labels``,
  ``needs_indices``, ``presets`` and ``default_preset``, ``adapt_on_resume``, ``hyperparameter_rules``, and
  ``spec`` (a :class:`SchemeSpec` of what only the benchmarks and the shared tests read);
* ``loss_names``: the keys it logs (one ``keras.metrics.Mean`` tracker each);
* ``_build_networks()``: creates its sub-networks (variables must exist after ``__init__``);
* ``players()``: ``{player name: [variables]}``, one optimizer each;
* ``default_optimizer(player, total_steps)``: the paper's optimiser for that player;
* ``call(x)``: continuous codes (probabilities for sigmoid outputs);
* ``train_step(data)``: ``data`` is a dict with ``"x"`` (the items of this replica's share of the batch) and,
  when the scheme asks for them, ``"y"`` (labels) and ``"index"`` (each item's position in the training
  set); :meth:`HashingScheme.unpack_batch` also accepts a plain tensor or an ``(x, y)`` tuple.

Constructor arguments are attributes of the same name and make up ``get_config()`` (KerasHub style),
so ``from_config(get_config())`` rebuilds the same architecture.
"""

import contextlib
import dataclasses
import functools
import inspect
import random

import keras
import numpy as np
import tensorflow as tf

from tfhash import _validation
from tfhash import codes as codes_lib
from tfhash.schemes import settings

INPUT_KINDS = ("images", "features")
IMAGE_RANGE_TOLERANCE = 1e-6
PIXEL_SCALE = 255.0


def check_image_range(low, high, name):
    """Raises ``ValueError`` unless [low, high] lies within the image range [0, 1]."""
    if low < -IMAGE_RANGE_TOLERANCE or high > 1.0 + IMAGE_RANGE_TOLERANCE:
        hint = " Pixel values 0-255: divide by 255 (or pass uint8 pixels, which are scaled)." if high > 1.5 else ""
        raise ValueError(f"`{name}` must hold images with values in [0, 1], got values in [{low:g}, {high:g}].{hint}")


def check_items(x, item_shape=None, name="x", origin="as in training", input_kind="features"):
    """Checks items ``[n, *item_shape]`` (finite numbers) and returns them as float32.

    ``input_kind="images"``: values must lie in [0, 1]; uint8 arrays are pixels 0-255 and are divided by
    255 (the rule of the export's ``serving_pixels`` signature); other integer types are refused.
    ``"features"``: any finite numbers, used as they are.
    """
    x = _validation.check_features(x, name)
    if item_shape is not None and tuple(x.shape[1:]) != tuple(item_shape):
        raise ValueError(f"`{name}` must have items of shape {tuple(item_shape)} ({origin}), got {tuple(x.shape[1:])}.")
    if input_kind == "images":
        if x.dtype == np.uint8:
            return x.astype(np.float32) / np.float32(PIXEL_SCALE)
        if x.dtype.kind in "iu":
            raise ValueError(f"`{name}` must be float images in [0, 1] or uint8 pixels, got dtype {x.dtype}; "
                             "convert with x.astype('float32') / 255.")
        if x.size:
            check_image_range(float(np.min(x)), float(np.max(x)), name)
    return x.astype(np.float32, copy=False)


def serving_outputs(encoder, inputs, threshold):
    """``{"codes": packed uint8, "probabilities": float32}`` of an encoder, as served and exported."""
    probabilities = encoder(inputs, training=False)
    return {"codes": codes_lib.pack_tf(tf.cast(probabilities >= threshold, tf.float32)),
            "probabilities": probabilities}


def encode_in_batches(serve, x, batch_size, bits):
    """Runs ``serve`` (a numpy batch -> {"codes", "probabilities"}, tensors or arrays) over ``x`` in
    batches; numpy results."""
    batch_size = _validation.check_positive_int(batch_size, "batch_size")
    parts = []
    for start in range(0, x.shape[0], batch_size):
        part = serve(x[start:start + batch_size])
        if not np.all(np.isfinite(np.asarray(part["probabilities"]))):
            # all-zero codes from NaN probabilities look like codes: stop before they reach an index
            raise ValueError(f"the encoder gave non-finite probabilities for items {start} to "
                             f"{min(start + batch_size, x.shape[0]) - 1} of `x`, so their codes mean nothing: a broken "
                             "or hand-converted model, or items outside the range it was trained on.")
        parts.append(part)
    if not parts:
        return {"codes": np.empty((0, codes_lib.num_bytes(bits)), np.uint8),
                "probabilities": np.empty((0, bits), np.float32)}
    return {key: np.concatenate([np.asarray(p[key]) for p in parts]) for key in ("codes", "probabilities")}


def item_chunks(x, chunk_size=65536):
    """Numpy chunks of training items ``x`` (an array, memory-mapped or not, or a batched ``tf.data.Dataset``
    whose elements are items or ``(x, ...)`` tuples), so ``adapt`` can stream large inputs once."""
    if isinstance(x, tf.data.Dataset):
        for batch in x:
            yield np.asarray(batch[0] if isinstance(batch, (tuple, list)) else batch)
    else:
        for start in range(0, x.shape[0], chunk_size):
            yield np.asarray(x[start:start + chunk_size])


def _multi_worker(strategy):
    """True under a MultiWorkerMirroredStrategy whose cluster has more than one task."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    tasks = strategy.cluster_resolver.cluster_spec().as_dict()
    return sum(len(addresses) for addresses in tasks.values()) > 1


@contextlib.contextmanager
def _seeded_random_state(seed):
    """Python's and numpy's global generators seeded with ``seed`` inside, restored to the caller's state after.

    Keras draws its initializers' seeds from Python's generator, so the networks built inside follow
    ``seed`` while the caller's random streams go on as if nothing had been drawn.
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


@dataclasses.dataclass(frozen=True)
class SchemeSpec:
    """Facts of a scheme that only its evaluation and the shared test suite read (training and export do not).

    Attributes:
        encoder_players: players whose variables the exported encoder may hold (the others never are).
        retrieval_protocol: how the paper measures retrieval: "labels" (same class is relevant) or
            "euclidean" (the true Euclidean neighbours are relevant).
        paper_baselines: the shallow baselines the paper compares with (benchmarks run them in the same run).
        deep_baseline: a deep non-adversarial method that the benchmarks' ``--deep-baselines`` trains beside
            any scheme.
        ablations: ``{run label: hyperparameters}`` removing loss terms, as the paper's ablation does.
        test_input_shape: a small item shape the scheme accepts, for the shared test suite.
        test_hyperparameters: settings the shared test suite builds and trains with: what ``tfhash.fit``
            would derive from labels, and a schedule that reaches every stage of training within two epochs.
        replica_local_terms: hyperparameters that switch off terms computed within each replica's share of
            the batch (by design); with them off, one device and several replicas train alike.
    """

    encoder_players: tuple = ()
    retrieval_protocol: str = "labels"
    paper_baselines: tuple = ("itq",)
    deep_baseline: bool = False
    ablations: dict = dataclasses.field(default_factory=dict)
    test_input_shape: tuple = (8, 8, 1)
    test_hyperparameters: dict = dataclasses.field(default_factory=dict)
    replica_local_terms: dict = dataclasses.field(default_factory=dict)


class StepContext:
    """What a training step needs to know of the distribution, for this replica's share of the batch.

    Attributes:
        replicas: replicas in sync (1 without a strategy).
        local_batch: items on this replica.
        global_batch: items over all replicas (equal shares: ``tfhash.fit`` drops the incomplete batch).
    """

    def __init__(self, local_batch):
        self.replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        self.local_batch = local_batch
        self.global_batch = local_batch * self.replicas

    def average(self, per_example):
        """Mean over the global batch of per-example values; the optimizer sums the replicas' gradients."""
        return tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch)


class HashingScheme(keras.Model):
    """Base class of the hashing schemes (a ``keras.Model``): the adversarial ones and the deep baselines.

    Args:
        bits: code length K.
        input_shape: shape of one input item, without the batch dimension.
        seed: seeds weight initialisation and every random draw of training.
    """

    key = None  # set by tfhash.schemes.register
    loss_names = ()
    threshold = codes_lib.SIGMOID_THRESHOLD

    # --- scheme facts --------------------------------------------------------------------------
    #: "images" (values in [0, 1]; uint8 pixels are divided by 255) or "features" (raw values).
    input_kind = "images"
    #: Whether ``train_step`` receives labels (``data["y"]``) and item indices (``data["index"]``).
    needs_labels = False
    needs_indices = False
    #: ``{name: tfhash.schemes.presets.Preset}``; "paper" reproduces the paper's settings.
    presets = {}
    #: The preset ``tfhash.fit`` uses when none is named.
    default_preset = "paper"
    #: What only the benchmarks and the shared tests read (:class:`SchemeSpec`).
    spec = SchemeSpec()
    #: Whether ``adapt`` must run again when training resumes from a checkpoint (state it builds from the
    #: training items that checkpoints do not hold, such as a neighbourhood graph).
    adapt_on_resume = False
    #: ``{hyperparameter: rule}`` (``tfhash.schemes.settings``) for every constructor argument of the scheme.
    hyperparameter_rules = {}

    def __init__(self, bits=32, input_shape=None, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.bits = _validation.check_bits(bits)
        if input_shape is None or len(tuple(input_shape)) == 0:
            raise ValueError(f"`input_shape` must be the shape of one item, e.g. (28, 28, 1), got {input_shape!r}.")
        self.item_shape = tuple(int(d) for d in input_shape)
        self.seed = int(seed)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in self.loss_names}
        self.scheme_optimizers = {}
        with _seeded_random_state(self.seed):  # weight initialisation follows the seed
            self._build_networks()
        self.built = True  # every variable exists now; Keras must not build the model from a batch (a dict)

    # --- configuration -------------------------------------------------------------------------

    @classmethod
    def _hyperparameters(cls):
        """``{name: constructor default}`` of the scheme's own constructor arguments, subclasses first."""
        found = {}
        for klass in cls.__mro__:
            if klass is HashingScheme:
                break
            if "__init__" in vars(klass):
                for name, parameter in inspect.signature(klass.__init__).parameters.items():
                    if name not in ("self", "kwargs", "args", "bits", "input_shape", "seed") and name not in found:
                        found[name] = None if parameter.default is inspect.Parameter.empty else parameter.default
        return found

    @classmethod
    def hyperparameter_names(cls):
        """Constructor arguments of the scheme (what ``tfhash.fit(**hyperparameters)`` accepts)."""
        return list(cls._hyperparameters())

    @classmethod
    def default_hyperparameters(cls):
        """The constructor defaults of the hyperparameters (the paper's values), as ``get_config`` records them."""
        return {name: cls.config_value(name, value) for name, value in cls._hyperparameters().items()}

    @classmethod
    def check_hyperparameters(cls, values, origin="hyperparameters", extra=()):
        """Raises ``ValueError`` naming the keys of ``values`` that are not hyperparameters (or ``extra``)."""
        known = cls.hyperparameter_names()
        unknown = sorted(set(values) - set(known) - set(extra))
        if unknown:
            raise ValueError(f"{origin}: unknown hyperparameter(s) {unknown} for scheme {cls.key!r}; known: {known}.")
        return values

    @classmethod
    def check_values(cls, hyperparameters, bits=32, origin="hyperparameters"):
        """Checks names and values against the declared rules without building anything, so a bad setting is
        refused before data is loaded. Returns ``hyperparameters``."""
        cls.check_hyperparameters(hyperparameters, origin)
        try:
            _validation.check_bits(bits)
            cls.checked_hyperparameters({**cls._hyperparameters(), **hyperparameters})
        except ValueError as err:
            raise ValueError(f"{origin}: {err}") from None
        return hyperparameters

    @classmethod
    def checked_hyperparameters(cls, values):
        """``{name: value as stored}`` of every hyperparameter in ``values``, each checked by its declared rule
        (``hyperparameter_rules``), then the rules between them (``check_combination``)."""
        checked = settings.apply(cls.hyperparameter_rules, values)
        cls.check_combination(checked)
        return checked

    @classmethod
    def check_combination(cls, hyperparameters):
        """Rules between hyperparameters (one setting needs another); each value has passed its own rule."""

    def set_hyperparameters(self, arguments):
        """Stores the constructor's ``arguments`` (its ``locals()``) as attributes of the same names, each checked
        by its declared rule; a constructor then holds only what its scheme derives from them."""
        for name, value in self.checked_hyperparameters(arguments).items():
            setattr(self, name, value)

    @classmethod
    def config_value(cls, name, value):
        """How ``get_config`` records the value of hyperparameter ``name`` (to compare a resumed run's settings).
        A ``keras.Model`` argument (e.g. a user's backbone) is recorded by name, ``"model NAME"``."""
        if isinstance(value, keras.Model):
            return f"model {value.name}"
        return list(value) if isinstance(value, tuple) else value

    def get_config(self):
        config = {"bits": self.bits, "input_shape": list(self.item_shape), "seed": self.seed}
        for name in self.hyperparameter_names():
            config[name] = self.config_value(name, getattr(self, name))
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # --- optimisation ----------------------------------------------------------------------------

    def players(self):
        raise NotImplementedError

    def default_optimizer(self, player, total_steps):
        raise NotImplementedError

    def compile(self, optimizers=None, *, total_steps=None, **kwargs):
        """One optimizer per player; defaults follow the paper (``default_optimizer``).

        Args:
            optimizers: ``{player: keras.optimizers.Optimizer}`` overriding any of the defaults.
            total_steps: planned training steps, for schedules that depend on them (warm-up,
                learning-rate decay); ``tfhash.fit`` passes it. ``None``: schedules act as if
                training were long (no decay, warm-up of 0 steps).
        """
        super().compile(optimizer=None, **kwargs)
        players = self.players()
        optimizers = dict(optimizers or {})
        unknown = set(optimizers) - set(players)
        if unknown:
            raise ValueError(f"`optimizers` keys must be players of {type(self).__name__} "
                             f"{sorted(players)}, got {sorted(unknown)}.")
        self.total_steps = None if total_steps is None else _validation.check_positive_int(total_steps, "total_steps")
        self.scheme_optimizers = {}
        loss_scaled = self.dtype_policy.compute_dtype == "float16"  # what Model.compile does for mixed_float16
        for player, variables in players.items():
            optimizer = optimizers.get(player) or self.default_optimizer(player, self.total_steps)
            if loss_scaled and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer, name=f"{player}_loss_scale")
            # Build now: slot variables must exist before fit (distribution, checkpoints).
            optimizer.build(variables)
            self.scheme_optimizers[player] = optimizer

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # The one private Keras method overridden here (pinned by tests/test_package.py, which fails when
        # Keras renames it). Under a strategy, Keras's TensorFlow trainer takes the first batch off the
        # iterator and reduces it across replicas to build the model symbolically, even when every layer is
        # built; that fails for dict batches under MultiWorkerMirroredStrategy. Every variable of a scheme
        # exists after __init__ and compile, so there is nothing to build. Keras has no public switch for
        # it; related upstream reports: keras-team/keras#20394 (the batch taken by the symbolic build) and
        # keras-team/keras#21800 (distributed build of models whose steps reshape their inputs).
        return None

    @property
    def metrics(self):
        return list(self.trackers.values())

    def _update_trackers(self, values):
        for name, value in values.items():
            self.trackers[name].update_state(value)
        logs = {name: tracker.result() for name, tracker in self.trackers.items()}
        if _multi_worker(self.distribute_strategy):
            # Keras 3 reduces logs across workers with reduce(MEAN, axis=0), which fails on scalars
            # (tensorflow/tensorflow#72388); a length-1 vector reduces to the scalar it should be.
            logs = {name: tf.reshape(value, [1]) for name, value in logs.items()}
        return logs

    @staticmethod
    def step_context(x):
        """The distribution facts of a training step on this replica's items ``x`` (:class:`StepContext`)."""
        return StepContext(tf.shape(x)[0])

    def code_statistics(self, outputs):
        """The bit-frequency logs every scheme reports: the least and most frequent bit over the global batch."""
        frequencies = self.global_batch_mean(tf.cast(outputs >= self.threshold, tf.float32))
        return {"bit_freq_min": tf.reduce_min(frequencies), "bit_freq_max": tf.reduce_max(frequencies)}

    @staticmethod
    def global_batch_mean(local_values):
        """Mean over the global batch (every replica's examples) of per-example values ``[local batch, ...]``.

        Batch statistics (bit frequencies, feature means) must see the whole batch under a strategy;
        the gradient reaches this replica's own examples only, as each replica differentiates its share.
        Replicas hold equal shares (``tfhash.fit`` drops the incomplete last batch).
        """
        context = tf.distribute.get_replica_context()
        global_batch = tf.cast(tf.shape(local_values)[0] * context.num_replicas_in_sync, local_values.dtype)
        return HashingScheme.replica_total(tf.reduce_sum(local_values, axis=0) / global_batch)

    @staticmethod
    def replica_total(local_part):
        """The sum of ``local_part`` over replicas as its value, with the gradient of this replica's part only
        (the optimizer sums the replicas' gradients)."""
        context = tf.distribute.get_replica_context()
        total = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.stop_gradient(local_part))
        return local_part + tf.stop_gradient(total - local_part)

    @staticmethod
    def global_rows(local_rows):
        """``[global batch, ...]`` rows of every replica in replica order, with this replica's rows live
        (differentiable) and the others' fixed. A loss over all of them computed on every replica then
        gives, summed by the optimizer across replicas, one device's gradient."""
        context = tf.distribute.get_replica_context()
        if context.num_replicas_in_sync == 1:
            return local_rows
        gathered = context.all_gather(tf.stop_gradient(local_rows), axis=0)
        local = tf.shape(local_rows)[0]
        start = tf.cast(context.replica_id_in_sync_group, tf.int32) * local
        return tf.concat([gathered[:start], local_rows, gathered[start + local:]], axis=0)

    def gradients(self, tape, loss, player, variables=None):
        """Gradients of ``loss`` for ``player``'s variables (or ``variables``), for its optimizer's ``apply``.

        Back-propagation starts from the optimizer's loss scale (mixed precision's ``LossScaleOptimizer``,
        whose ``apply`` divides it out again; 1 otherwise), so float16 gradients do not underflow."""
        optimizer = self.scheme_optimizers[player]
        variables = self.players()[player] if variables is None else variables
        return tape.gradient(loss, variables, output_gradients=optimizer.scale_loss(tf.ones_like(loss)))

    # --- randomness ----------------------------------------------------------------------------

    def _stateless_seed(self, step, salt):
        """A per-step, per-use seed for stateless random ops: the same seed and step give the same draws."""
        return tf.stack([tf.cast(self.seed, tf.int64) * 1_000_003 + salt, tf.cast(step, tf.int64)])

    @staticmethod
    def batch_random(draw, local_shape, seed, **kwargs):
        """Per-example random values ``[local batch, ...]`` for this replica's share of the global batch.

        Every replica draws the whole global batch's values from the same seed and keeps its own rows,
        so each example gets the same noise however the batch is split across replicas (one device and
        two replicas train alike), while different replicas hold different values.

        Args:
            draw: a stateless random op, e.g. ``tfhash.stateless.normal`` (alike with and without XLA).
            local_shape: shape of this replica's values (first dimension: its batch share).
        """
        context = tf.distribute.get_replica_context()
        replicas = 1 if context is None else context.num_replicas_in_sync
        replica_id = 0 if context is None else context.replica_id_in_sync_group
        local_shape = tf.convert_to_tensor(local_shape, tf.int32)
        local = local_shape[0]
        values = draw(tf.concat([[local * replicas], local_shape[1:]], 0), seed, **kwargs)
        start = tf.cast(replica_id, tf.int32) * local
        return values[start:start + local]

    @staticmethod
    def unpack_batch(data):
        """``(x, y, index)`` of a training batch (a dict, an ``(x, y)`` tuple or a tensor); missing parts are None."""
        if isinstance(data, dict):
            return data["x"], data.get("y"), data.get("index")
        if isinstance(data, (tuple, list)):
            return data[0], (data[1] if len(data) > 1 else None), None
        return data, None, None

    # --- encoding ------------------------------------------------------------------------------

    def check_inputs(self, x, name="x"):
        return check_items(x, self.item_shape, name, "as in training", self.input_kind)

    def serving_function(self):
        """The traced function ``inputs -> {"codes", "probabilities"}`` that encoding runs.

        The export saves the same computation (:func:`serving_outputs`), so in-memory and exported
        codes are bit-identical; eager Keras calls differ from the saved graph by float rounding.
        """
        return self._serving_function

    @functools.cached_property
    def _serving_function(self):
        # cached_property writes the instance __dict__ directly: Keras does not track it, like the encoder.
        encoder = self.encoder_model()
        spec = tf.TensorSpec([None] + list(self.item_shape), tf.float32, name="inputs")
        return tf.function(lambda inputs: serving_outputs(encoder, inputs, self.threshold), input_signature=[spec])

    def predict_probabilities(self, x, batch_size=256):
        """Continuous codes ``[n, bits]`` (numpy) for items ``x``."""
        batch_size = _validation.check_positive_int(batch_size, "batch_size")
        return encode_in_batches(self.serving_function(), self.check_inputs(x), batch_size, self.bits)["probabilities"]

    def encode(self, x, batch_size=256):
        """Packed uint8 codes ``[n, ceil(bits / 8)]`` in the ``tfhash.codes`` convention."""
        batch_size = _validation.check_positive_int(batch_size, "batch_size")
        return encode_in_batches(self.serving_function(), self.check_inputs(x), batch_size, self.bits)["codes"]

    def encoder_model(self):
        """A plain functional Keras model: input item -> continuous code (the export target).

        It shares the scheme's layers, never includes the adversarial players.
        """
        return self._encoder_model

    @functools.cached_property
    def _encoder_model(self):
        # Not tracked by Keras (cached_property bypasses its __setattr__): it holds no variables of its own,
        # only the scheme's layers.
        inputs = keras.Input(shape=self.item_shape, name="inputs")
        return keras.Model(inputs, self.encode_graph(inputs), name=f"{self.key}_encoder")

    def encode_graph(self, inputs):
        """Continuous code of ``inputs`` at inference (no noise); used by ``call`` and the export."""
        raise NotImplementedError

    def call(self, inputs, training=False):
        return self.encode_graph(inputs)

    @classmethod
    def check_training_dtype(cls, dtype):
        """Raises ``ValueError`` for training items of a dtype the scheme cannot use. Default: any number."""

    @classmethod
    def serving_signatures(cls):
        """Names of the export's signatures: ``serving_default`` (float inputs as in training) and, for
        image schemes, ``serving_pixels`` (uint8 pixels divided by 255)."""
        return ("serving_default", "serving_pixels") if cls.input_kind == "images" else ("serving_default",)

    def adapt(self, x, y=None):
        """Fits what the model keeps from the training set (e.g. feature standardisation, a neighbourhood
        graph), before training starts. Default: nothing.

        Args:
            x: the training items: an array ``[n, ...]`` (images scaled to [0, 1]) or a batched
                ``tf.data.Dataset`` of items.
            y: their labels (an array, or a batched dataset aligned with ``x``), or ``None``.
        """

    @classmethod
    def settings_from_labels(cls, labels, hyperparameters):
        """Hyperparameters the training labels decide (e.g. the number of classes), after checking that the labels
        suit the scheme, before any network is built. ``labels``: checked class ids (-1 unlabelled) or multi-hot
        rows; ``hyperparameters``: the call's. ``tfhash.fit`` calls it for schemes that ``needs_labels``."""
        return {}

    def training_callbacks(self):
        """Keras callbacks the scheme's training needs (e.g. switching stages by epoch); ``tfhash.fit`` adds them."""
        return []

    #: Images per row of the TensorBoard grid of ``sample_images``.
    sample_columns = 8

    def sample_images(self, count, seed=0):
        """``count`` generated images ``[count, h, w, c]`` in [0, 1] from noise fixed by ``seed``, or
        ``None`` for schemes (or inputs) without an image generator. Used for TensorBoard grids.
        """
        return None
