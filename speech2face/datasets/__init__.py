"""Dataset builders: the toy world (`toy`) and real AVSpeech/VoxCeleb2 records (`real`).

Both write the one record schema (`speech2face.records`) and a `dataset_info.json`; no stage of
the model pipeline imports them.
"""
