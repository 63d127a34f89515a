"""Command line: encode a collection on Apache Beam into (id, code) shards, and merge them into a saved index.

    python -m trainers.encode_beam --export=DIR --input='photos/*/*.jpg' --output=out/ --index=photos.index \
        --runner=DirectRunner --direct_num_workers=2 --direct_running_mode=multi_processing

Every other flag is a Beam pipeline option, so the same command runs on Dataflow, Flink or Spark with their
usual flags (``--runner=DataflowRunner --project=... --region=... --temp_location=gs://...``; the input and
output may then be ``gs://`` paths). ``--index`` merges the shards into a local saved index afterwards
(``tfhash.beam.merge_shards``). Needs the ``[beam]`` extra. Only a thin layer over ``tfhash.beam``.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", required=True, help="the encoder: a SavedModel export directory or a .tflite file")
    parser.add_argument("--input", required=True, help="image files, .npy shards or TFRecord files, by glob")
    parser.add_argument("--output", required=True, help="the directory of the (id, code) shards")
    parser.add_argument("--index", help="merge the shards into a saved index here when the pipeline is done")
    parser.add_argument("--image_feature", default="image", help="the encoded image feature of TFRecord examples")
    parser.add_argument("--overwrite", action="store_true", help="replace a previous index at --index")
    parser.add_argument("--rows_in_memory", type=int, default=None,
                        help="records sorted in memory at a time while merging the shards (the rest waits on disk; "
                        "default: tfhash.beam.ROWS_IN_MEMORY)")
    args, pipeline_args = parser.parse_known_args(argv)
    try:
        import apache_beam as beam
        from apache_beam.metrics.metric import MetricsFilter
        from apache_beam.options.pipeline_options import PipelineOptions

        from tfhash import _validation as tfhash_validation
        from tfhash import beam as tfhash_beam
        from tfhash import index as tfhash_index
    except ImportError as err:
        sys.exit(f'error: {err}; this command needs the beam extra: pip install -e ".[beam]"')
    try:
        if args.index:  # before the pipeline: a refused --index would otherwise fail only after all the encoding
            tfhash_index.check_save_target(args.index, args.overwrite)
            rows = tfhash_beam.ROWS_IN_MEMORY if args.rows_in_memory is None else args.rows_in_memory
            rows = tfhash_validation.check_positive_int(rows, "--rows_in_memory")
        with beam.Pipeline(options=PipelineOptions(pipeline_args)) as pipeline:
            _ = pipeline | tfhash_beam.EncodeToShards(args.export, args.input, args.output,
                                                      image_feature=args.image_feature)
        result = pipeline.result
        counters = result.metrics().query(MetricsFilter().with_name(tfhash_beam.SKIPPED_COUNTER))["counters"]
        skipped = sum(c.committed or 0 for c in counters)
        print(f"wrote shards to {args.output}"
              + (f"; skipped {skipped} item(s) that could not be read" if skipped else ""))
        if args.index:
            built = tfhash_beam.merge_shards(args.output, args.index, overwrite=args.overwrite, rows_in_memory=rows)
            print(f"wrote {args.index}: {len(built)} codes of {built.bits} bits")
    except (ValueError, FileExistsError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
