"""What every hashing scheme shares: hyperparameters, trackers, optimisers per player, encoding, config.

A scheme subclasses :class:`HashingScheme` (``docs/adding_a_scheme.md`` walks through one) and provides:

* its facts as class attributes (read by ``tfhash.fit``, the export, the benchmarks and the shared
  tests, so none of them needs to know a scheme by name): ``input_kind``, ``needs_labels``,
  ``needs_indices``, ``presets`` and ``default_preset``, ``adapt_on_resume``, ``hyperparameter_rules``,
  ``loss_names`` (one ``keras.metrics.Mean`` tracker each) and ``spec`` (a :class:`SchemeSpec`);
* ``__init__``: its hyperparameters as keyword arguments after ``bits, input_shape, seed``; it calls
  ``super().__init__`` first, which checks every hyperparameter by its rule (and ``check_combination``) and
  sets it as an attribute of the same name, then builds its networks (every variable must exist after
  ``__init__``); construction runs with Python's and numpy's random state seeded by ``seed`` and restored;
* ``players()``: ``{player name: [variables]}``, one optimizer each, and ``default_optimizer``;
* ``encode_graph(inputs)``: continuous codes (probabilities for sigmoid outputs);
* ``train_step(data)``: ``data`` is a dict with ``"x"`` (this replica's share of the batch) and, when the scheme
  asks for them, ``"y"`` (labels) and ``"index"`` (positions in the training set). It calls ``minimise`` once
  per player and returns ``update_trackers(logs)``; ``tfhash.distribution`` holds the replica arithmetic.

Constructor arguments are attributes of the same name and make up ``get_config()`` (KerasHub style),
so ``from_config(get_config())`` rebuilds the same architecture.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import random
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from tfhash import _validation, distribution, encoding
from tfhash import codes as codes_lib
from tfhash.schemes import backbones, settings


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


def _constructor(init):
    """Wraps a scheme's ``__init__``: its hyperparameters are checked before anything is built (declared rules,
    then ``check_combination``), and the whole construction runs with the random state seeded by ``seed``."""

    @functools.wraps(init)
    def construct(self, *args, **kwargs):
        if "_pending_hyperparameters" in self.__dict__:  # a parent's constructor, called by the outermost one
            return init(self, *args, **kwargs)
        call = inspect.signature(init).bind(self, *args, **kwargs)
        call.apply_defaults()
        given = {**call.arguments, **call.arguments.get("kwargs", {})}
        seed = _validation.check_seed(given.get("seed", 0))
        names = type(self)._hyperparameters()
        checked = type(self)._checked({name: given.get(name, default) for name, default in names.items()})
        object.__setattr__(self, "_pending_hyperparameters", checked)  # read by HashingScheme.__init__
        with _seeded_random_state(seed):  # weight initialisation follows the seed
            init(self, *args, **kwargs)
        self.__dict__.pop("_pending_hyperparameters", None)
        self.built = True  # every variable exists now; Keras must not build the model from a batch (a dict)

    construct.__signature__ = inspect.signature(init)  # what Keras reads of the constructor for its config
    return construct


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
        replica_local_terms: hyperparameters that switch off terms computed within each replica's share of
            the batch (by design); with them off, one device and several replicas train alike.
    """

    encoder_players: tuple = ()
    retrieval_protocol: str = "labels"
    paper_baselines: tuple = ("itq",)
    deep_baseline: bool = False
    ablations: dict = dataclasses.field(default_factory=dict)
    replica_local_terms: dict = dataclasses.field(default_factory=dict)


LOW_RESOLUTION = 32  # the side of the copy of a photo that networks sized for small images see


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
    #: The attribute name of a frozen feature network whose outputs ``train_step`` also takes precomputed, as the
    #: batch's ``"features"``: ``tfhash.fit`` then runs it once over the training items instead of every epoch.
    #: Set per model (it depends on the hyperparameters), with whether the step still needs the items themselves.
    features_once = None
    features_once_needs_items = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" in vars(cls):
            cls.__init__ = _constructor(cls.__init__)

    def __init__(self, bits=32, input_shape=None, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.bits = _validation.check_bits(bits)
        if input_shape is None or len(tuple(input_shape)) == 0:
            raise ValueError(f"`input_shape` must be the shape of one item, e.g. (28, 28, 1), got {input_shape!r}.")
        self.item_shape = tuple(int(d) for d in input_shape)
        self.network_shape = self.item_shape  # what the scheme's own networks take (see _on_backbone_features)
        self.backbone_network = self.low_resolution = None
        self.seed = int(seed)
        for name, value in self.__dict__.get("_pending_hyperparameters", {}).items():
            setattr(self, name, value)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in self.loss_names}
        self.scheme_optimizers = {}
        self.total_steps = None

    # --- hyperparameters -----------------------------------------------------------------------

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
    def _checked(cls, values):
        """``{name: value as stored}`` of every hyperparameter in ``values``: each checked by its declared rule
        (others stored as given), then the rules between them (``check_combination``)."""
        checked = {name: cls.hyperparameter_rules[name](value, name) if name in cls.hyperparameter_rules else value
                   for name, value in values.items()}
        if "backbone_weights" in checked:  # a scheme with a backbone: weights belong to a named one
            backbones.check_backbone_combination(checked)
        cls.check_combination(checked)
        return checked

    @classmethod
    def default_hyperparameters(cls) -> dict:
        """``{name: default}`` of the hyperparameters (what ``tfhash.fit(**hyperparameters)`` accepts), as
        ``get_config`` records them."""
        return {name: settings.recorded(cls, name, value) for name, value in cls._hyperparameters().items()}

    @classmethod
    def check_values(cls, hyperparameters: dict, bits: int = 32, origin: str = "hyperparameters",
                     names_only: bool = False, extra: Sequence[str] = ()) -> dict:
        """Checks names and (unless ``names_only``) values against the declared rules without building anything,
        so a bad setting is refused before data is loaded. ``extra``: other names accepted. Returns
        ``hyperparameters``."""
        known = list(cls._hyperparameters())
        unknown = sorted(set(hyperparameters) - set(known) - set(extra))
        if unknown:
            raise ValueError(f"{origin}: unknown hyperparameter(s) {unknown} for scheme {cls.key!r}; known: {known}.")
        if not names_only:
            try:
                _validation.check_bits(bits)
                cls._checked({**cls._hyperparameters(), **hyperparameters})
            except ValueError as err:
                raise ValueError(f"{origin}: {err}") from None
        return hyperparameters

    @classmethod
    def check_combination(cls, hyperparameters: dict) -> None:
        """Rules between hyperparameters (one setting needs another); each value has passed its own rule."""

    def get_config(self) -> dict:
        config = {"bits": self.bits, "input_shape": list(self.item_shape), "seed": self.seed}
        for name in self._hyperparameters():
            config[name] = settings.recorded(type(self), name, getattr(self, name))
        return config

    @classmethod
    def from_config(cls, config: dict) -> HashingScheme:
        return cls(**config)

    # --- optimisation ----------------------------------------------------------------------------

    def players(self) -> dict:
        """``{player name: [variables]}``: one optimizer each."""
        raise NotImplementedError

    def default_optimizer(self, player: str, total_steps: int | None) -> keras.optimizers.Optimizer:
        """The paper's optimizer for ``player``; ``total_steps`` (or None) for schedules that depend on it."""
        raise NotImplementedError

    def compile(self, optimizers: dict | None = None, *, total_steps: int | None = None, **kwargs: Any) -> None:
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

    def minimise(self, tape: tf.GradientTape, loss: tf.Tensor, player: str, variables: list | None = None,
                 scale: tf.Tensor | None = None) -> None:
        """One optimizer step of ``player`` on ``loss``: the gradients for its variables (or ``variables``),
        each multiplied by ``scale`` when given, applied by its optimizer.

        Back-propagation starts from the optimizer's loss scale (mixed precision's ``LossScaleOptimizer``,
        whose ``apply`` divides it out again; 1 otherwise), so float16 gradients do not underflow."""
        optimizer = self.scheme_optimizers[player]
        variables = self.players()[player] if variables is None else variables
        gradients = tape.gradient(loss, variables, output_gradients=optimizer.scale_loss(tf.ones_like(loss)))
        if scale is not None:
            gradients = [g * tf.cast(scale, g.dtype) for g in gradients]
        optimizer.apply(gradients, variables)

    @property
    def metrics(self) -> list:
        return list(self.trackers.values())

    def update_trackers(self, values: dict) -> dict:
        """Adds this step's ``{loss name: value}`` to the trackers and returns the logs of ``train_step``."""
        for name, value in values.items():
            self.trackers[name].update_state(value)
        logs = {name: tracker.result() for name, tracker in self.trackers.items()}
        if distribution.multi_worker(self.distribute_strategy):
            # Keras 3 reduces logs across workers with reduce(MEAN, axis=0), which fails on scalars
            # (tensorflow/tensorflow#72388); a length-1 vector reduces to the scalar it should be.
            logs = {name: tf.reshape(value, [1]) for name, value in logs.items()}
        return logs

    def _stateless_seed(self, step, salt):
        """A per-step, per-use seed for stateless random ops: the same seed and step give the same draws."""
        return tf.stack([tf.cast(self.seed, tf.int64) * 1_000_003 + salt, tf.cast(step, tf.int64)])

    # --- encoding ------------------------------------------------------------------------------

    @functools.cached_property
    def _serving_function(self):
        """The traced function ``inputs -> {"codes", "probabilities"}`` that encoding runs.

        The export saves the same computation (``tfhash.encoding.serving_outputs``), so in-memory and exported
        codes are bit-identical; eager Keras calls differ from the saved graph by float rounding.
        cached_property writes the instance __dict__ directly: Keras does not track it, like the encoder.
        """
        encoder = self.encoder_model()
        spec = tf.TensorSpec([None] + list(self.item_shape), tf.float32, name="inputs")
        return tf.function(lambda inputs: encoding.serving_outputs(encoder, inputs, self.threshold),
                           input_signature=[spec])

    def _encode(self, x, batch_size):
        x = encoding.check_items(x, self.item_shape, "x", "as in training", self.input_kind)
        return encoding.encode_in_batches(self._serving_function, x, batch_size, self.bits)

    def predict_probabilities(self, x: ArrayLike, batch_size: int = 256) -> np.ndarray:
        """Continuous codes ``[n, bits]`` (numpy) for items ``x``."""
        return self._encode(x, batch_size)["probabilities"]

    def encode(self, x: ArrayLike, batch_size: int = 256) -> np.ndarray:
        """Packed uint8 codes ``[n, ceil(bits / 8)]`` in the ``tfhash.codes`` convention."""
        return self._encode(x, batch_size)["codes"]

    def encoder_model(self) -> keras.Model:
        """A plain functional Keras model: input item -> continuous code (the export target).

        It shares the scheme's layers, never includes the adversarial players.
        """
        return self._encoder_model

    @functools.cached_property
    def _encoder_model(self):
        # Not tracked by Keras (cached_property bypasses its __setattr__): it holds no variables of its own,
        # only the scheme's layers.
        inputs = keras.Input(shape=self.item_shape, name="inputs")
        return keras.Model(inputs, self.encode_graph(self._network_inputs(inputs)), name=f"{self.key}_encoder")

    def encode_graph(self, inputs: tf.Tensor) -> tf.Tensor:
        """Continuous code of ``inputs`` at inference (no noise); used by ``call`` and the export."""
        raise NotImplementedError

    def call(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.encode_graph(self._network_inputs(inputs))

    # --- a backbone in front of networks that take vectors ------------------------------------------

    def _on_backbone_features(self) -> None:
        """For schemes whose own networks take vectors in [0, 1] (call before building them): with a
        ``backbone``, they work on its features, each dimension scaled to [0, 1] by the training items' range
        (``backbones.adapt_feature_range``); images pass the frozen backbone first in ``call``, the export and
        the steps, and ``tfhash.fit`` runs it once per item (``features_once``). Without one, photos (colour
        images above 32x32 pixels, grey ones above 64x64) are seen as a 32x32 copy, averaged over blocks of
        pixels, so the networks' size does not grow with the image's."""
        if self.backbone is None:
            if backbones.needs_low_resolution(self.item_shape):
                factor = max(1, round(max(self.item_shape[:2]) / LOW_RESOLUTION))
                self.low_resolution = keras.Sequential([
                    keras.layers.Resizing(LOW_RESOLUTION * factor, LOW_RESOLUTION * factor),
                    keras.layers.AveragePooling2D(factor)], name="low_resolution")
                self.network_shape = (LOW_RESOLUTION, LOW_RESOLUTION, self.item_shape[-1])
            return
        self.backbone_network = self._build_backbone("backbone")
        self.backbone_network.trainable = False
        width = int(self.backbone_network.output_shape[-1])
        self.feature_range = backbones.FeatureRange(name="feature_range")
        self.feature_range.build((None, width))
        self.network_shape = (width,)
        self.features_once, self.features_once_needs_items = "backbone_network", False

    def _build_backbone(self, name: str) -> keras.Model:
        """The feature network the ``backbone``, ``backbone_weights`` and ``train_backbone`` hyperparameters mean;
        sets ``backbone_learns``."""
        self.backbone_learns = backbones.trains_backbone(self.train_backbone, self.backbone_weights)
        return backbones.build_backbone(self.backbone, self.item_shape, name, weights=self.backbone_weights)

    def _network_inputs(self, inputs):
        if self.low_resolution is not None:
            return self.low_resolution(inputs)
        if self.backbone_network is None:
            return inputs
        return self.feature_range(self.backbone_network(inputs, training=False))

    def _step_inputs(self, data: Any) -> tuple:
        """``(x, y, index)`` of a training batch, ``x`` as the scheme's networks take it: the items, or a backbone's
        scaled features (computed once by ``tfhash.fit``, or here)."""
        if isinstance(data, dict) and "features" in data:
            return self.feature_range(data["features"]), data.get("y"), data.get("index")
        x, y, index = distribution.unpack_batch(data)
        return self._network_inputs(x), y, index

    # --- hooks of training -----------------------------------------------------------------------

    def adapt(self, x: Any, y: Any = None) -> None:
        """Fits what the model keeps from the training set (e.g. feature standardisation, a neighbourhood
        graph), before training starts. Default: nothing.

        Args:
            x: the training items: an array ``[n, ...]`` (images scaled to [0, 1]) or a batched
                ``tf.data.Dataset`` of items.
            y: their labels (an array, or a batched dataset aligned with ``x``), or ``None``.
        """

    @classmethod
    def settings_from_labels(cls, labels: np.ndarray, hyperparameters: dict) -> dict:
        """Hyperparameters the training labels decide (e.g. the number of classes), after checking that the labels
        suit the scheme, before any network is built. ``labels``: checked class ids (-1 unlabelled) or multi-hot
        rows; ``hyperparameters``: the call's. ``tfhash.fit`` calls it for schemes that ``needs_labels``."""
        return {}

    def training_callbacks(self) -> list:
        """Keras callbacks the scheme's training needs (e.g. switching stages by epoch); ``tfhash.fit`` adds them."""
        return []

    #: Images per row of the TensorBoard grid of ``sample_images``.
    sample_columns = 8

    def sample_images(self, count: int, seed: int = 0) -> np.ndarray | None:
        """``count`` generated images ``[count, h, w, c]`` in [0, 1] from noise fixed by ``seed``, or
        ``None`` for schemes (or inputs) without an image generator. Used for TensorBoard grids.
        """
        return None
