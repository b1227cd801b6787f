"""Records: the one TFRecord schema (`schema`), its sharded writer (`writer`) and the data set's
`dataset_info.json` (`dataset_info`).

The schema's and the writer's names are handed on here, so `from speech2face import records`
then `records.Keys`, `records.parse_batch` or `records.ShardedWriter` is how every stage uses them.
"""

from speech2face.records.schema import (DEFAULT_SPECTROGRAM_DTYPE, FACE_SIZE, FEATURE_DIM,
                                        NUM_FREQ_BINS, NUM_LANDMARKS, SCHEMA_VERSION, SOURCES,
                                        SPECTROGRAM_DTYPES, Example, Keys, RecordError,
                                        RecordSpec, decode_example, decode_faces,
                                        encode_example, parse_batch, parse_single, read_spec)
from speech2face.records.writer import ShardedWriter, shard_name

__all__ = ["DEFAULT_SPECTROGRAM_DTYPE", "FACE_SIZE", "FEATURE_DIM", "NUM_FREQ_BINS",
           "NUM_LANDMARKS", "SCHEMA_VERSION", "SOURCES", "SPECTROGRAM_DTYPES", "Example", "Keys",
           "RecordError", "RecordSpec", "decode_example", "decode_faces", "encode_example",
           "parse_batch", "parse_single", "read_spec", "ShardedWriter", "shard_name"]
