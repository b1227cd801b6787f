"""`python evaluate.py --help` for the flags; the code is speech2face/cli/evaluate.py."""

from speech2face.cli import evaluate as _cli

if __name__ == "__main__":
    _cli.run()
