"""`python -m data_prep.make_toy_world --help` for the flags; the code is speech2face/cli/make_toy_world.py."""

from speech2face.cli import make_toy_world as _cli

if __name__ == "__main__":
    _cli.run()
