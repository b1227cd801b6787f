"""`python -m data_prep.build_records --help` for the flags; the code is speech2face/cli/build_records.py."""

from speech2face.cli import build_records as _cli

if __name__ == "__main__":
    _cli.run()
