"""Encoding throughput on mnist-10k: Keras predict, SavedModel signatures, TFLite (float32 / quantised).

    python -m benchmarks.encode [--scheme KEY] [--epochs 1] [--bits 32]

What it measures and how: BENCHMARKS.md, section (e). Ends with one JSON line.
"""

import os
import tempfile
import time

import tensorflow as tf

import tfhash
from benchmarks import _common, report
from tfhash import export


def batched(call, x, batch):
    def run():
        for i in range(0, x.shape[0], batch):
            call(x[i:i + batch])
    return run


def tflite_runner(path, item_shape):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    index = interpreter.get_input_details()[0]["index"]
    outputs = [d["index"] for d in interpreter.get_output_details()]
    state = {"shape": None}

    def call(batch):
        if state["shape"] != batch.shape:
            interpreter.resize_tensor_input(index, batch.shape)
            interpreter.allocate_tensors()
            state["shape"] = batch.shape
        interpreter.set_tensor(index, batch)
        interpreter.invoke()
        return [interpreter.get_tensor(o) for o in outputs]

    return call


def main():
    started = time.perf_counter()
    parser = _common.argument_parser(__doc__)
    parser.add_argument("--scheme", default=tfhash.schemes.names()[0], choices=tfhash.schemes.names())
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--bits", type=int, default=32)
    args = parser.parse_args()

    x, y = _common.load_mnist10k()
    hasher = tfhash.fit(args.scheme, x, bits=args.bits, epochs=args.epochs, batch_size=100, seed=0, verbose=0)
    work = tempfile.mkdtemp()
    saved = tfhash.load(hasher.export(os.path.join(work, "saved")))
    codes_signature = saved._loaded.signatures["serving_default"]

    class ProbabilitiesOnly(tf.Module):
        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        @tf.function(input_signature=[tf.TensorSpec([None] + list(x.shape[1:]), tf.float32, name="inputs")])
        def serve(self, inputs):
            return {"probabilities": self.encoder(inputs, training=False)}

    module = ProbabilitiesOnly(hasher.model.encoder_model())
    tf.saved_model.save(module, os.path.join(work, "probs"), signatures={"serving_default": module.serve})
    probabilities_signature = tf.saved_model.load(os.path.join(work, "probs")).signatures["serving_default"]

    encoder = hasher.model.encoder_model()
    paths = {
        "Keras predict (probabilities)": lambda b: encoder.predict(b, batch_size=b.shape[0], verbose=0),
        "SavedModel probabilities only": lambda b: probabilities_signature(inputs=tf.constant(b)),
        "SavedModel `codes` signature": lambda b: codes_signature(inputs=tf.constant(b)),
    }
    for quantization in (None, "float16", "dynamic"):
        path = export.export_tflite(hasher, os.path.join(work, f"enc-{quantization}.tflite"), quantization=quantization)
        paths[f"TFLite {quantization or 'float32'} (codes)"] = tflite_runner(path, x.shape[1:])

    rows = []
    for name, call in paths.items():
        row = {"path": name}
        for batch, items in ((256, x), (1, x[:1000])):
            call(items[:batch])  # warm up (tracing, allocation)
            seconds = _common.timed(batched(call, items, batch), repeats=7)[0]
            row[f"batch_{batch}"] = items.shape[0] / seconds
        rows.append(row)
        print(row, flush=True)
    unpacked, packed = rows[1], rows[2]  # what packing costs: the same SavedModel with and without it
    packed.update({f"packing_{b}": unpacked[f"batch_{b}"] / packed[f"batch_{b}"] - 1 for b in (256, 1)})
    report.finish({"benchmark": "encode", "scheme": args.scheme, "bits": args.bits, "rows": rows,
                   "machine": _common.machine()}, args.results, started)


if __name__ == "__main__":
    main()
