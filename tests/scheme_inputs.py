"""The small inputs the tests build and train each scheme with: an item shape it accepts and the settings that
``tfhash.fit`` would derive from labels, with a schedule that reaches every stage of training in two epochs."""

from tfhash import schemes

DEFAULT_INPUT_SHAPE = (8, 8, 1)
INPUT_SHAPES = {"sigah": (24,), "label_index_probe": (4,)}
HYPERPARAMETERS = {"dshgan": {"num_classes": 4, "generator_epochs": 1, "use_generator": True}}  # the GAN path too


def input_shape(scheme):
    """The item shape the tests give ``scheme`` (a registered key or a scheme class)."""
    return INPUT_SHAPES.get(schemes.get(scheme).key, DEFAULT_INPUT_SHAPE)


def hyperparameters(scheme):
    """The settings the tests build and train ``scheme`` with."""
    return dict(HYPERPARAMETERS.get(schemes.get(scheme).key, {}))
