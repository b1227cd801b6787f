"""`python -m speech2face.demo --help` for the flags; the code is speech2face/cli/demo.py."""

from speech2face.cli import demo as _cli

if __name__ == "__main__":
    _cli.run()
