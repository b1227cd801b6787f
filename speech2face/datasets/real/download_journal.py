"""The downloader's records on disk: the journal of finished cuts, the failures, segments.csv.

Appends are locked, flushed (and the journal fsynced), so a killed run loses at most a line being
written; a line cut off that way is skipped when read. segments.csv and failures.jsonl are
rewritten whole at the end of a run, each through a temporary file (docs/data.md, "Getting the
data").
"""

import json
import os
import threading
from typing import Dict, Iterator

SEGMENTS_CSV = "segments.csv"
FAILURES = "failures.jsonl"
JOURNAL = "downloaded.jsonl"
_CSV_COMMENT = ("# youtube_id, start, end, x, y, file: data_prep.download's cuts, times relative "
                "to each cut (build_records --manifest_format=avspeech reads this file)\n")


def _read_jsonl(path: str) -> Iterator[dict]:
    """The parsed lines of a JSONL file; a line cut off by a kill is skipped."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


class State:
    """The journal of finished cuts and the failures, shared by the workers (appends are
    locked and flushed: a kill loses at most a line being written)."""

    def __init__(self, output_dir: str):
        self.dir = output_dir
        self.done: Dict[str, str] = {}  # clip_id -> its segments.csv row
        for entry in _read_jsonl(os.path.join(output_dir, JOURNAL)):
            if os.path.exists(os.path.join(output_dir, entry["file"])):
                self.done[entry["clip_id"]] = entry["row"]
        self.failures: Dict[str, dict] = {e["item"]: e for e in
                                          _read_jsonl(os.path.join(output_dir, FAILURES))}
        self._lock = threading.Lock()
        self._journal = open(os.path.join(output_dir, JOURNAL), "a", encoding="utf-8")
        self._failed = open(os.path.join(output_dir, FAILURES), "a", encoding="utf-8")

    def finish(self, clip_id: str, file: str, row: str) -> None:
        with self._lock:
            self._journal.write(json.dumps({"clip_id": clip_id, "file": file, "row": row}) + "\n")
            self._journal.flush()
            os.fsync(self._journal.fileno())
            self.done[clip_id] = row
            self.failures.pop(clip_id, None)

    def fail(self, entry: dict) -> None:
        with self._lock:
            self._failed.write(json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")
            self._failed.flush()
            self.failures[entry["item"]] = entry

    def close(self) -> None:
        """Closes the logs, then rewrites failures.jsonl (the latest entry of each row still
        failing) and segments.csv (every finished cut), each through a temporary file."""
        self._journal.close()
        self._failed.close()
        write_lines(os.path.join(self.dir, FAILURES), (
            json.dumps(e, ensure_ascii=False, sort_keys=True) + "\n"
            for item, e in self.failures.items() if item not in self.done))
        write_lines(os.path.join(self.dir, SEGMENTS_CSV),
                    [_CSV_COMMENT, *(self.done[c] + "\n" for c in sorted(self.done))])


def write_lines(path: str, lines) -> None:
    """Writes `path` through a temporary file renamed over it (a kill leaves the old one)."""
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.writelines(lines)
    os.replace(path + ".tmp", path)
