"""Speech2Face: learning the face behind a voice (Oh et al., CVPR 2019), in TensorFlow/Keras."""

__version__ = "0.1.0"


def load_model(path):
    """A trained model directory (`speech2face-export-model`, the demo's WORKDIR/model) ready to
    predict: `load_model(path)("clip.wav")` gives `.feature` [1, 4096] and `.face` uint8
    [1, S, S, 3]; see `speech2face.models.artifact.Speech2FaceModel` and docs/use_a_model.md.
    TensorFlow is imported on the first call, not by `import speech2face`."""
    from speech2face.models import artifact  # pylint: disable=import-outside-toplevel

    return artifact.load_model(path)
