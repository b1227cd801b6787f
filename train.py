"""`python train.py --help` for the flags; the code is speech2face/cli/train.py."""

from speech2face.cli import train as _cli

if __name__ == "__main__":
    _cli.run()
