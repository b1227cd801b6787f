"""`python predict.py --help` for the flags; the code is speech2face/cli/predict.py."""

from speech2face.cli import predict as _cli

if __name__ == "__main__":
    _cli.run()
