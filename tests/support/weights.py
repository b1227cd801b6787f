"""Random VGG-Face weights written once per test session.

A full random-weight file is ~553 MiB (fc6 alone is 25088 x 4096 floats). Several tests build a
toy world or a data set, and each build writes one: five runs' worth of them filled pytest's
temporary directories with gigabytes. `vggface.random_vggface_weights(path, seed)` depends only on
its arguments (tests/test_vggface.py checks that), so `shared_random_weights(cache_dir)` swaps it,
for the length of a `with` block, for a version that writes each (seed, include_top, input_scale)
once into `cache_dir` and hard-links that file to every path asked for: same bytes, no new disk.
test_vggface.py calls the real function directly and is never inside the block.
"""

import contextlib
import os
import shutil

from speech2face.models import vggface

_real_random_vggface_weights = vggface.random_vggface_weights


def _link_or_copy(source, target):
    try:
        os.link(source, target)
    except OSError:  # another file system: a copy is still correct, only bigger
        shutil.copyfile(source, target)


@contextlib.contextmanager
def shared_random_weights(cache_dir):
    """Within the block, `vggface.random_vggface_weights` links files from `cache_dir`."""
    os.makedirs(cache_dir, exist_ok=True)

    def cached(path, seed, include_top=True, input_scale=1.0 / 64.0):
        name = f"random_seed{seed}_{'full' if include_top else 'notop'}_scale{input_scale!r}.h5"
        source = os.path.join(cache_dir, name)
        if not os.path.exists(source):
            _real_random_vggface_weights(source + ".partial", seed, include_top, input_scale)
            os.replace(source + ".partial", source)
        _link_or_copy(source, os.fspath(path))
        return path

    vggface.random_vggface_weights = cached
    try:
        yield cached
    finally:
        vggface.random_vggface_weights = _real_random_vggface_weights
