"""Records: the one TFRecord schema (`schema`), its encoder and sharded writer (`writer`) and the
data set's `dataset_info.json` (`dataset_info`).

The schema's and the writer's names are handed on here, so `from speech2face import records`
then `records.Keys`, `records.parse_batch` or `records.ShardedWriter` is how every stage uses them.
"""

from speech2face.records.schema import (DEFAULT_LAYOUT, DEFAULT_SPECTROGRAM_DTYPE, FACE_SIZE,
                                        FEATURE_DIM, LAYOUTS, NUM_FREQ_BINS, NUM_LANDMARKS,
                                        READABLE_SCHEMA_VERSIONS, SCHEMA_VERSION, SEGMENT_FRAMES,
                                        SEGMENT_SAMPLES, SOURCES, SPECTROGRAM_DTYPES,
                                        WAVEFORM_KEY, WAVEFORM_LAYOUT, Example, Keys, RecordError,
                                        RecordSpec, check_layout, decode_example, decode_faces,
                                        parse_batch, parse_single, read_spec,
                                        spectrogram_dtype_of)
from speech2face.records.writer import ShardedWriter, encode_example, shard_name

__all__ = ["DEFAULT_LAYOUT", "DEFAULT_SPECTROGRAM_DTYPE", "FACE_SIZE", "FEATURE_DIM", "LAYOUTS",
           "NUM_FREQ_BINS", "NUM_LANDMARKS", "READABLE_SCHEMA_VERSIONS", "SCHEMA_VERSION",
           "SEGMENT_FRAMES", "SEGMENT_SAMPLES", "SOURCES", "SPECTROGRAM_DTYPES", "WAVEFORM_KEY",
           "WAVEFORM_LAYOUT", "Example", "Keys", "RecordError", "RecordSpec", "check_layout",
           "decode_example", "decode_faces", "encode_example", "parse_batch", "parse_single",
           "read_spec", "spectrogram_dtype_of", "ShardedWriter", "shard_name"]
