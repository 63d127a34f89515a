"""The training steps' random draws: stateless, well spread, and alike with and without XLA."""

import numpy as np
import tensorflow as tf

from tfhash import stateless


def test_draws_depend_on_seed_and_shape_only_and_follow_their_distributions():
    seed = tf.constant([7, 11], tf.int64)
    u = stateless.uniform([200_000], seed).numpy()
    np.testing.assert_array_equal(u, stateless.uniform([200_000], seed).numpy())
    assert not np.array_equal(u, stateless.uniform([200_000], seed + [0, 1]).numpy())
    assert 0.0 <= u.min() and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    z = stateless.normal([200_000], seed).numpy()
    assert np.all(np.isfinite(z)) and abs(z.mean()) < 0.01 and abs(z.std() - 1.0) < 0.01
    assert abs(np.mean(z**3)) < 0.03 and abs(np.mean(z**4) - 3.0) < 0.06  # symmetric, normal tails
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 0.01  # neighbours independent
    k = stateless.uniform([100_000], seed, minval=3, maxval=8, dtype=tf.int32).numpy()
    assert set(np.unique(k)) == {3, 4, 5, 6, 7} and np.all(np.abs(np.bincount(k)[3:] / 20_000 - 1) < 0.05)
    r = stateless.uniform([4, 5], [1, 2], minval=-1.0, maxval=1.0).numpy()
    assert r.shape == (4, 5) and r.min() >= -1.0 and r.max() < 1.0
    shifted = stateless.normal([4], [1, 2], mean=2.0, stddev=0.5).numpy()
    np.testing.assert_allclose(shifted, 2.0 + 0.5 * stateless.normal([4], [1, 2]).numpy(), rtol=1e-6)


def test_a_step_compiled_by_xla_draws_the_same_values():
    step = tf.Variable(41, dtype=tf.int64)  # a seed computed in the graph, as in a training step

    def draws():
        seed = tf.stack([tf.constant(3, tf.int64) * 1_000_003 + 5, step])
        return (stateless.uniform([64, 8], seed), stateless.normal([64, 8, 8, 1], seed),
                stateless.uniform([64], seed, minval=0, maxval=10, dtype=tf.int32))

    plain, compiled = tf.function(draws)(), tf.function(draws, jit_compile=True)()
    np.testing.assert_array_equal(plain[0].numpy(), compiled[0].numpy())
    np.testing.assert_allclose(plain[1].numpy(), compiled[1].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(plain[2].numpy(), compiled[2].numpy())
