"""Test-session setup shared by every test module, and the session fixtures.

The fixtures build what many modules need once per session: the tiny toy world (with the one
random VGG-Face file every in-process build links to, see tests/support/weights.py), the tiny
trained models, and one MirroredStrategy. What they are made of lives in tests/support/.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

# Two logical CPU devices, so that MirroredStrategy tests run a real two-replica setup on a CPU.
# This must happen before TensorFlow initialises its devices, i.e. before any test runs.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])


import pytest  # noqa: E402

from speech2face.datasets.toy import world as toy_world  # noqa: E402
from tests.support import tiny, weights  # noqa: E402


@pytest.fixture(scope="session")
def weights_cache(tmp_path_factory):
    """The directory of the session's random VGG-Face files (one per seed)."""
    return str(tmp_path_factory.mktemp("vggface_cache"))


@pytest.fixture
def shared_random_weights(weights_cache):
    """Within the test, random VGG-Face files are links to the session's copy."""
    with weights.shared_random_weights(weights_cache) as cached:
        yield cached


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory, weights_cache):
    """(directory, dataset_info) of the tiny toy world (tests/support/tiny.py)."""
    directory = str(tmp_path_factory.mktemp("toy"))
    with weights.shared_random_weights(weights_cache):
        return directory, toy_world.build_toy_world(tiny.WORLD, directory)


@pytest.fixture(scope="session")
def tiny_weights(tiny_world):
    """The tiny world's full random-weight VGG-Face file (~553 MiB, written once)."""
    world, info = tiny_world
    return info.weights_path(world)


@pytest.fixture(scope="session")
def tiny_models(tiny_world, tiny_weights, tmp_path_factory):
    """The decoder and encoder trained on the tiny world (tests/support/tiny.py)."""
    world, _ = tiny_world
    return tiny.train_models(world, tiny_weights, str(tmp_path_factory.mktemp("tiny_decoder")),
                             str(tmp_path_factory.mktemp("tiny_encoder")))


@pytest.fixture(scope="session")
def mirrored():
    """One MirroredStrategy over the two logical CPUs for the whole session: collective ops of
    strategies created one after another in one process can collide (instance keys)."""
    return tf.distribute.MirroredStrategy(
        [d.name for d in tf.config.list_logical_devices("CPU")[:2]])
