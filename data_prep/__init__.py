"""Forwarding modules: `python -m data_prep.make_toy_world` and `python -m data_prep.build_records`
keep working; the builders live in `speech2face.datasets`, the commands in `speech2face.cli`."""
