"""The tiny toy world and the tiny models trained on it, made once per test session.

`WORLD` is the world most end-to-end tests share: 6 speakers (5 train, 1 test), 12 clips.
`train_models` trains, on it, a small face decoder (4 steps, no perceptual term) and a small
voice encoder against it (4 steps, random crops, a held-out evaluation and image summaries at the
last step). The models are barely trained: the tests check plumbing, shapes and ranges, not
quality. `tests/conftest.py` hands both out as session fixtures (`tiny_world`, `tiny_models`), so
the stage-2 end-to-end test, evaluation and prediction all read the one run.
"""

import os
from typing import Any, Dict, NamedTuple

from speech2face.datasets.toy import world as toy_world
from speech2face.training import config, decoder_task, encoder_task, loop

# The spectrogram layout (the real builders' default), so that the tests read both layouts: the
# toy world's own default, waveform_int16, is built in tests/test_waveform_records.py.
WORLD = toy_world.ToyWorldConfig(num_speakers=6, clips_per_speaker=2, faces_per_speaker=1,
                                 min_seconds=1.0, max_seconds=7.0, seed=3,
                                 records_layout="spectrogram_float16")

STEPS = 4


def trainer_kwargs(model_dir, train_records, eval_records=None, **trainer):
    """Keyword arguments of `loop.Trainer` after the task: model_dir, data and trainer configs."""
    return dict(model_dir=model_dir, data_config=config.DataConfig(train_records, eval_records),
                trainer=config.TrainerConfig(**trainer))


class TinyModels(NamedTuple):
    decoder_dir: str
    encoder_dir: str
    steps: int
    encoder_task: Any  # the trained EncoderTask (its frozen teachers, for checks)
    encoder_result: Dict[str, Any]  # what loop.Trainer.train() returned


def train_models(world, weights, decoder_dir, encoder_dir) -> TinyModels:
    """Trains the decoder, then the encoder against it, on the tiny world in `world`."""
    train = os.path.join(world, "train-*.tfrecord")
    loop.Trainer(
        decoder_task.DecoderTask(decoder_task.DecoderTaskConfig(preset="small",
                                                                perceptual_weight=0.0)),
        **trainer_kwargs(decoder_dir, train, global_batch_size=4, train_steps=STEPS,
                         steps_per_loop=2, summary_every=2)).train()
    task = encoder_task.EncoderTask(encoder_task.EncoderTaskConfig(
        preset="small", decoder_dir=decoder_dir, vggface_weights=weights))
    result = loop.Trainer(task, **trainer_kwargs(
        encoder_dir, train, os.path.join(world, "test-*.tfrecord"), global_batch_size=4,
        train_steps=STEPS, steps_per_loop=2, checkpoint_every=2, summary_every=2,
        image_summary_every=STEPS, eval_every=STEPS, num_images=2)).train()
    return TinyModels(decoder_dir, encoder_dir, STEPS, task, result)
