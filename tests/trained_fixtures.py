"""Tiny trained models shared by the evaluation and prediction tests.

`tiny_models` trains, once per test session, a small face decoder (4 steps, no perceptual term)
and a small voice encoder against it (4 steps on the stored spectrograms) on the session's tiny
toy world. The models are barely trained: the tests check plumbing, shapes and ranges, not
quality. Test modules wrap it in a fixture of their own:

    @pytest.fixture(scope="module")
    def models(tiny_world, tmp_path_factory):
        return trained_fixtures.tiny_models(tiny_world, tmp_path_factory)
"""

import os
from typing import NamedTuple

from speech2face.training import config, decoder_task, encoder_task, loop

_CACHE = {}  # world directory -> TinyModels: train once even when two modules ask


def trainer_kwargs(model_dir, train_records, eval_records=None, **trainer):
    """Keyword arguments of `loop.Trainer` after the task: model_dir, data and trainer configs."""
    return dict(model_dir=model_dir, data_config=config.DataConfig(train_records, eval_records),
                trainer=config.TrainerConfig(**trainer))


class TinyModels(NamedTuple):
    decoder_dir: str
    encoder_dir: str
    steps: int


def tiny_models(tiny_world, tmp_path_factory, steps: int = 4) -> TinyModels:
    """(decoder_dir, encoder_dir, steps) of models trained on the tiny world (cached)."""
    world, info = tiny_world
    if world in _CACHE:
        return _CACHE[world]
    train = os.path.join(world, "train-*.tfrecord")
    decoder_dir = str(tmp_path_factory.mktemp("tiny_decoder"))
    loop.Trainer(
        decoder_task.DecoderTask(decoder_task.DecoderTaskConfig(preset="small",
                                                                perceptual_weight=0.0)),
        **trainer_kwargs(decoder_dir, train, global_batch_size=4, train_steps=steps,
                         steps_per_loop=2, summary_every=2)).train()
    encoder_dir = str(tmp_path_factory.mktemp("tiny_encoder"))
    loop.Trainer(
        encoder_task.EncoderTask(encoder_task.EncoderTaskConfig(
            preset="small", decoder_dir=decoder_dir, random_crops=False,
            vggface_weights=info.weights_path(world))),
        **trainer_kwargs(encoder_dir, train, global_batch_size=4, train_steps=steps,
                         steps_per_loop=2, summary_every=2, checkpoint_every=100,
                         image_summary_every=100)).train()
    _CACHE[world] = TinyModels(decoder_dir, encoder_dir, steps)
    return _CACHE[world]
