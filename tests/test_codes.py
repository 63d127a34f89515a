import numpy as np
import pytest
import tensorflow as tf

from tfhash import codes


def test_bit_layout_is_lsb_first_faiss_layout():
    # 10 bits -> 2 bytes. Bits 0, 3 and 9 set: byte 0 = 2^0 + 2^3 = 9, byte 1 = 2^(9-8) = 2.
    bits = np.zeros((1, 10), np.uint8)
    bits[0, [0, 3, 9]] = 1
    assert codes.pack(bits).tolist() == [[9, 2]]
    assert codes.pack(bits).dtype == np.uint8


def test_padding_bits_are_zero():
    packed = codes.pack(np.ones((2, 3), np.uint8))  # 3 bits -> 0b00000111 = 7
    assert packed.tolist() == [[7], [7]]


@pytest.mark.parametrize("bits", [1, 7, 8, 12, 16, 24, 32, 48, 64, 100, 256])
def test_pack_unpack_round_trip(rng, bits):
    b = rng.integers(0, 2, (33, bits), dtype=np.uint8)
    packed = codes.pack(b)
    assert packed.shape == (33, (bits + 7) // 8)
    np.testing.assert_array_equal(codes.unpack(packed, bits), b)


def test_binarize_is_at_or_above_threshold():
    out = codes.binarize(np.array([[0.49, 0.5, 0.51], [0.0, -0.1, 1.0]]))
    assert out.tolist() == [[0, 1, 1], [0, 0, 1]]
    assert codes.binarize(np.array([[0.0, -1e-9]]), threshold=0.0).tolist() == [[1, 0]]


@pytest.mark.parametrize("bits", [5, 8, 13, 32, 64])
def test_tensorflow_pack_and_unpack_match_numpy(rng, bits):
    b = rng.integers(0, 2, (17, bits)).astype(np.float32)
    packed_tf = codes.pack_tf(b).numpy()
    np.testing.assert_array_equal(packed_tf, codes.pack(b.astype(np.uint8)))
    assert packed_tf.dtype == np.uint8
    np.testing.assert_array_equal(codes.unpack_tf(packed_tf, bits).numpy(), b.astype(np.uint8))


def test_tensorflow_pack_converts_to_builtin_tflite_ops():
    @tf.function(input_signature=[tf.TensorSpec([None, 12], tf.float32)])
    def encode(probabilities):
        return codes.pack_tf(tf.cast(probabilities >= 0.5, tf.float32))

    converter = tf.lite.TFLiteConverter.from_concrete_functions([encode.get_concrete_function()], encode)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # fails on any non-builtin op
    assert len(converter.convert()) > 0


@pytest.mark.parametrize("bits", [8, 16, 24, 32, 64, 96, 128, 512])
def test_hamming_distance_matches_bit_count(rng, bits):
    a = rng.integers(0, 2, (9, bits), dtype=np.uint8)
    b = rng.integers(0, 2, (31, bits), dtype=np.uint8)
    expected = (a[:, None, :] != b[None, :, :]).sum(-1)
    got = codes.hamming_distance(codes.pack(a), codes.pack(b), chunk_size=50)  # forces many blocks
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == (np.uint8 if bits <= 255 else np.uint16)


def test_hamming_computer_matches_matrix(rng):
    db = codes.pack(rng.integers(0, 2, (1000, 40), dtype=np.uint8))
    q = codes.pack(rng.integers(0, 2, (3, 40), dtype=np.uint8))
    computer = codes.HammingComputer(db)
    words = codes.as_words(q)
    full = codes.hamming_distance(q, db)
    for i in range(3):
        np.testing.assert_array_equal(computer(words[i]), full[i])


def test_bad_codes_are_refused_with_clear_errors():
    with pytest.raises(ValueError, match="`packed` must be packed codes of dtype uint8.*int64"):
        codes.unpack(np.zeros((2, 4), np.int64), 32)
    with pytest.raises(ValueError, match="`packed` must be 4 bytes wide for bits=32.*got 3 bytes"):
        codes.unpack(np.zeros((2, 3), np.uint8), 32)
    with pytest.raises(ValueError, match="`bits` must be a positive integer.*0"):
        codes.unpack(np.zeros((2, 3), np.uint8), 0)
    with pytest.raises(ValueError, match="`bits01` must hold only 0 and 1"):
        codes.pack(np.array([[0, 2]]))
    with pytest.raises(ValueError, match="same code width.*4 and 8"):
        codes.hamming_distance(np.zeros((1, 4), np.uint8), np.zeros((1, 8), np.uint8))
