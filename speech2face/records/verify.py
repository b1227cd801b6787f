"""Checks of TFRecord shards: cheap ones before a run, a full one on demand (docs/failures.md).

A TFRecord file is a sequence of records, each `uint64 length | uint32 masked CRC-32C of the
length | length bytes | uint32 masked CRC-32C of the bytes` (little-endian). Three levels:

- `check_files`: every file non-empty and its first record's header sound (the length's CRC
  matches and the record fits in the file). One 12-byte read per file, so it runs before every
  training run and evaluation, on any number of shards.
- `walk`: every record's header, seeking over the payloads: finds a truncated file or a broken
  header and the offset, without reading the data. `locate` uses it (and a full read of the few
  candidate files) to name the file of a `tf.errors.DataLossError`, whose message has only an
  offset; `skip_corrupt_records` runs it over every file before training.
- `verify_file`: reads every record (both CRCs, through TensorFlow's reader) and decodes each
  against the schema. `python -m speech2face.records.verify --records=GLOB` runs it over a data
  set and exits non-zero if anything is bad.
"""

import dataclasses
import re
import struct
from typing import List, Optional, Sequence, Tuple

import tensorflow as tf

from speech2face import errors
from speech2face.records import schema

_HEADER = 12  # uint64 length + uint32 masked CRC of it
_FOOTER = 4  # uint32 masked CRC of the data
_SHOWN = 5  # bad files named in one error message


class CorruptRecordsError(errors.UserError):
    """A TFRecord file that is empty, truncated or corrupt; the message names it."""


def _crc32c_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def masked_crc32c(data: bytes) -> int:
    """The masked CRC-32C (Castagnoli) a TFRecord header stores for `data` (a few bytes: pure
    Python is fast enough for the 8-byte lengths it is used on)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _header_problem(header: bytes, offset: int, size: int) -> Tuple[Optional[str], int]:
    """(reason or None, the record's payload length) of the 12 header bytes at `offset`."""
    if len(header) < _HEADER:
        return f"truncated record header at byte {offset} (file ends at {size})", 0
    length, crc = struct.unpack("<QI", header)
    if masked_crc32c(header[:8]) != crc:
        return f"corrupt record header at byte {offset} (length CRC mismatch)", 0
    end = offset + _HEADER + length + _FOOTER
    if end > size:
        return (f"truncated record at byte {offset}: it needs {length} bytes, the file ends at "
                f"{size}"), length
    return None, length


def first_record_problem(path: str) -> Optional[str]:
    """Why `path` is not a readable TFRecord file, judged from its size and first header; None
    when the first header is sound."""
    try:
        size = tf.io.gfile.stat(path).length
        if size == 0:
            return "empty file (0 bytes)"
        with tf.io.gfile.GFile(path, "rb") as f:
            header = f.read(_HEADER)
    except tf.errors.OpError as e:
        return f"cannot read it ({e.message})"
    problem, _ = _header_problem(header, 0, size)
    if problem and "length CRC" in problem:
        return "not a TFRecord file (its first record header does not check out)"
    return problem


def check_files(files: Sequence[str], what: str = "records") -> None:
    """Raises `CorruptRecordsError` naming every file of `files` whose `first_record_problem` is
    not None (the cheap check before a run)."""
    bad = [(path, problem) for path in files
           for problem in [first_record_problem(path)] if problem]
    if bad:
        shown = "; ".join(f"{path}: {problem}" for path, problem in bad[:_SHOWN])
        more = f" (and {len(bad) - _SHOWN} more)" if len(bad) > _SHOWN else ""
        raise CorruptRecordsError(
            f"{len(bad)} of {len(files)} {what} files are unreadable: {shown}{more}. Rebuild or "
            "remove them (python -m speech2face.records.verify lists every bad file)")


@dataclasses.dataclass
class FileReport:
    """What a check found in one file.

    Attributes:
      path: the file.
      records: records read (or, from `walk`, whose headers are sound) before any problem.
      offsets: byte offset of each of those records (from `walk`).
      problem: None, or why the file is bad at record `records` (offset and reason).
    """

    path: str
    records: int = 0
    offsets: List[int] = dataclasses.field(default_factory=list)
    problem: Optional[str] = None

    def summary(self) -> dict:
        """{"path", "records", "problem"}: what a log or config.json keeps of it."""
        return {"path": self.path, "records": self.records, "problem": self.problem}


def walk(path: str) -> FileReport:
    """Every record header of `path` in turn (the payloads are skipped, not read)."""
    report = FileReport(path)
    try:
        size = tf.io.gfile.stat(path).length
        if size == 0:
            report.problem = "empty file (0 bytes)"
            return report
        with tf.io.gfile.GFile(path, "rb") as f:
            offset = 0
            while offset < size:
                f.seek(offset)
                problem, length = _header_problem(f.read(_HEADER), offset, size)
                if problem:
                    report.problem = problem
                    return report
                report.offsets.append(offset)
                report.records += 1
                offset += _HEADER + length + _FOOTER
    except tf.errors.OpError as e:
        report.problem = f"cannot read it ({e.message})"
    return report


def _read_all(path: str, decode: bool) -> FileReport:
    """Reads every record with TensorFlow's reader (both CRCs), optionally decoding each."""
    report = FileReport(path)
    iterator = iter(tf.data.TFRecordDataset(path))
    while True:
        try:
            serialized = next(iterator)
        except StopIteration:
            return report
        except tf.errors.OpError as e:
            report.problem = tf_message(e)
            return report
        if decode:
            try:
                schema.decode_example(serialized.numpy())
            except Exception as e:  # pylint: disable=broad-except  # protobuf or reshape errors
                report.problem = f"record {report.records} does not follow the schema ({e})"
                return report
        report.records += 1


_NOISE = re.compile(r"\{\{function_node [^}]*\}\}\s*|\s*\[\[.*$|\s*\[Op:.*$|' failed with.*$",
                    re.DOTALL)


def tf_message(error: BaseException) -> str:
    """The reason in a TensorFlow error's message, without the graph node and op names."""
    return _NOISE.sub("", str(getattr(error, "message", error))).strip()


def verify_file(path: str, check_schema: bool = True) -> FileReport:
    """Reads and checks every record of `path`; `problem` names the first bad one (its index,
    byte offset and reason)."""
    structure = walk(path)
    report = _read_all(path, check_schema)
    report.offsets = structure.offsets
    if structure.problem and report.records >= structure.records:
        report.problem = f"record {structure.records}: {structure.problem}"
    elif report.problem and report.records < len(structure.offsets):
        reason = ("corrupt data (its CRC does not match)" if "corrupted record" in report.problem
                  else report.problem)
        report.problem = f"record {report.records} at byte {structure.offsets[report.records]}: {reason}"
    return report


_OFFSET = re.compile(r"record at (\d+)")


def locate(files: Sequence[str], error: BaseException) -> Optional[FileReport]:
    """The file among `files` that raised `error` (a `tf.errors.DataLossError`, whose message
    holds only a byte offset), with the record and the reason; None if no file is found bad.

    The headers of every file are walked (no payload read); a file whose walk fails is it, else
    the files with a record starting at that offset are read in full."""
    match = _OFFSET.search(str(getattr(error, "message", error)))
    offset = int(match.group(1)) if match else None
    candidates = []
    for path in files:
        report = walk(path)
        if report.problem:
            return report
        # TensorFlow gives a truncated record's start, a corrupt one's payload (12 bytes on).
        if offset is None or offset in report.offsets or offset - _HEADER in report.offsets:
            candidates.append(path)
    for path in candidates:
        report = verify_file(path, check_schema=False)
        if report.problem:
            return report
    return None


def is_corrupt_read(error: BaseException) -> bool:
    """Whether `error`, met while reading records, means a corrupt or truncated file: a
    `tf.errors.DataLossError`, or the error `speech2face.data.input_fn` raises for a file its
    records end before (`data.SHORT_READ`)."""
    from speech2face import data  # pylint: disable=import-outside-toplevel  # data reads records

    return isinstance(error, tf.errors.DataLossError) or (
        isinstance(error, tf.errors.InvalidArgumentError) and data.SHORT_READ in str(error))


def corrupt_error(files: Sequence[str], error: BaseException, what: str) -> CorruptRecordsError:
    """The `CorruptRecordsError` to raise for a `DataLossError` met while reading `files`."""
    found = locate(files, error)
    message = tf_message(error)
    where = (f"{found.path}: {found.problem}" if found else
             f"one of the {len(files)} {what} files: {message} (no file checks out bad now)")
    return CorruptRecordsError(
        f"corrupt {what} record in {where}. Rebuild or remove that file, or pass "
        "--skip_corrupt_records to train on the rest (docs/failures.md)")


if __name__ == "__main__":
    from speech2face.cli import verify_records  # pylint: disable=import-outside-toplevel

    verify_records.run()
