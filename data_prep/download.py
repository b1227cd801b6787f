"""`python -m data_prep.download --help` for the flags; the code is speech2face/cli/download.py."""

from speech2face.cli import download as _cli

if __name__ == "__main__":
    _cli.run()
