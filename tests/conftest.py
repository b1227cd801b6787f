"""Test-session setup shared by every test module."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

# Two logical CPU devices, so that MirroredStrategy tests run a real two-replica setup on a CPU.
# This must happen before TensorFlow initialises its devices, i.e. before any test runs.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])


# -- shared fixtures ----------------------------------------------------------------------------
import pytest  # noqa: E402

from speech2face.datasets.toy import world as toy_world  # noqa: E402

# The tiny toy world most end-to-end tests share: 6 speakers (5 train, 1 test), 12 clips.
TINY = toy_world.ToyWorldConfig(num_speakers=6, clips_per_speaker=2, faces_per_speaker=1,
                                    min_seconds=1.0, max_seconds=7.0, seed=3)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """(directory, dataset_info) of a tiny toy world built once per test session."""
    directory = str(tmp_path_factory.mktemp("toy"))
    return directory, toy_world.build_toy_world(TINY, directory)


@pytest.fixture(scope="session")
def mirrored():
    """One MirroredStrategy over the two logical CPUs for the whole session: collective ops of
    strategies created one after another in one process can collide (instance keys)."""
    return tf.distribute.MirroredStrategy(
        [d.name for d in tf.config.list_logical_devices("CPU")[:2]])
