"""Speech2Face: learning the face behind a voice (Oh et al., CVPR 2019), in TensorFlow/Keras."""

__version__ = "0.1.0"
