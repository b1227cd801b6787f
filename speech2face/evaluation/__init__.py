"""Evaluation: the paper's protocol (Sec. 4) on a trained voice encoder and its face decoder.

`encode` runs the models once over the test records; `run` hands that one value to every
protocol (feature distances and retrieval in `speech2face.metrics`, `craniofacial`,
`attributes`) and to `report` and `figures`. See docs/evaluation.md.
"""

from speech2face.evaluation.run import run_evaluation  # noqa: F401
