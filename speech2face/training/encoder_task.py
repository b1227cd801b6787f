"""Stage 2: train the voice encoder (paper Table 1) to predict v_f from speech (docs/training.md).

Inputs per example: the spectrogram of 6 s of speech and v_f. In training, the 6 s are a random
crop of the stored waveform (clips shorter than 6 s were tiled when the records were written),
cut on the host CPUs inside tf.data and handed on as int16; the spectrogram is computed from it
inside the replica step, on the accelerator when there is one; `random_crops=False` uses the stored
spectrogram (the first 6 s) instead, which is also what evaluation uses.

Loss (paper Eq. 1–2) through two FROZEN teachers loaded through the real loaders: f_dec, the first
layer of the stage-1 face decoder (`--decoder_dir`), and VGG-Face fc8 (`--vggface_weights`).
Optimiser (the paper's): Adam(0.5, 0.999, 1e-4), lr 1e-3 × 0.95^floor(step / 10,000).

Export (`model_dir/export/`): `voice_encoder.keras` and `voice_encoder.json` (preset, the
decoder directory and VGG-Face weights it was trained against); `export.load_encoder(model_dir)`.
"""

import dataclasses
import os
from typing import Dict, Optional, Sequence

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from speech2face import audio, data, losses, metrics, records
from speech2face.models import export, vggface, voice_encoder
from speech2face.training import decoder_task, loop



@dataclasses.dataclass(frozen=True)
class EncoderTaskConfig:
    """Stage-2 settings.

    Attributes:
      preset: `paper` (Table 1), `small` (same topology, channels ÷8; CPU) or `toy` (`small`
        with conv1 striding 4 in time; the toy world's).
      decoder_dir: model_dir of a stage-1 run (its export holds f_dec).
      vggface_weights: rcmalli-layout VGG-Face .h5 (fc8 is the distillation teacher).
      learning_rate: initial learning rate (the paper's 1e-3).
      decay_rate: staircase decay, lr × decay_rate^floor(step / decay_steps) (the paper's 0.95).
      decay_steps: steps between decays (the paper's 10,000).
      lambda1: weight of the normalised-feature L2 term (the paper's 0.025).
      lambda2: weight of the fc8 distillation term (the paper's 200).
      temperature: distillation temperature T (the paper's 2).
      random_crops: train on random 6 s crops of the stored waveforms.
      mean_feature_init: start the output layer at the mean face feature of the stage-1
        training set (stored in the decoder): bias = that mean, kernel = 0, so v_s starts at
        the average face for every input. The loss sees v_s mostly through f_dec (4096 -> 1000),
        so a random kernel would leave a random projection of the hidden units in the other
        3,096 directions, which cosine retrieval counts as noise. The paper gives no
        initialisation, so it is off by default (Keras's Glorot-uniform kernel, zero bias) and
        on in the toy experiment.
    """

    preset: str = "paper"
    decoder_dir: Optional[str] = None
    vggface_weights: Optional[str] = None
    learning_rate: float = 1e-3
    decay_rate: float = 0.95
    decay_steps: int = 10000
    lambda1: float = losses.LAMBDA1
    lambda2: float = losses.LAMBDA2
    temperature: float = losses.TEMPERATURE
    random_crops: bool = True
    mean_feature_init: bool = False


WAVEFORM_KEY = data.WAVEFORM_KEY  # [B, num_samples] int16 crops, for the spectrogram in the step


def _random_crops(num_samples: int):
    """Host-side transform: random `num_samples` crops of the stored int16 waveforms, handed on
    as int16 [B, num_samples] (`WAVEFORM_KEY`; a third of a float32 copy's bytes). The
    spectrogram is computed from them inside the replica step (`spectrogram_of`), so on a GPU
    or TPU the STFT runs on the accelerator and the host only cuts bytes. The offsets are
    stateless draws from the batch's seed (`data.InputOptions.batch_transform`), so a run's
    crops repeat with its input order."""

    def transform(batch, seed):
        lengths = batch["num_samples"]
        span = tf.maximum(lengths - num_samples, 0)
        draws = tf.random.stateless_uniform(tf.shape(lengths), seed=seed)
        offsets = tf.cast(tf.floor(draws * tf.cast(span + 1, tf.float32)), tf.int64)
        offsets = tf.minimum(offsets, span)
        # Crop in byte space (2 bytes per sample), so the batch decodes to one dense tensor.
        crops = tf.strings.substr(batch["waveform_bytes"], offsets * 2,
                                  tf.fill(tf.shape(offsets), tf.constant(num_samples * 2, tf.int64)))
        out = {k: v for k, v in batch.items() if k not in ("waveform_bytes", "num_samples")}
        out[WAVEFORM_KEY] = tf.reshape(tf.io.decode_raw(crops, tf.int16, little_endian=True),
                                       [-1, num_samples])
        return out

    return transform


# The batch's spectrogram, stored or computed from its int16 crops or segments (waveform_int16
# records) on the device running the step: the one function of every reader.
spectrogram_of = data.spectrogram_of


def _decode_faces(batch, seed):
    del seed  # nothing random
    out = dict(batch)
    out["face_image"] = records.decode_faces(out.pop("face_jpeg"))
    return out


class EncoderTask(loop.Task):
    """Stage 2 for `loop.Trainer`."""

    name = "encoder"
    eval_file = "encoder_eval.json"
    loss_names = ("total", "decoder_l1", "feature_l2", "distill")

    def __init__(self, config: EncoderTaskConfig):
        if not config.decoder_dir:
            raise ValueError("stage 2 needs --decoder_dir: the model_dir of a stage-1 run "
                             "(python train.py --stage=decoder ...)")
        if not config.vggface_weights:
            raise ValueError("stage 2 needs --vggface_weights=PATH (rcmalli_vggface_tf_vgg16.h5; "
                             "the toy world writes its own next to the records)")
        self.cfg = config
        # Built here, so that a bad decay setting fails before anything is written.
        self._learning_rate = losses.learning_rate_schedule(
            config.learning_rate, config.decay_rate, config.decay_steps)
        self.encoder_config = voice_encoder.encoder_config(config.preset)
        self.num_samples = audio.SEGMENT_SAMPLES
        self.decoder = None
        self.fc8 = None

    def check(self) -> None:
        """The teachers exist before anything is written: the stage-1 export in decoder_dir,
        fc8 in the VGG-Face weights."""
        export.check_decoder(self.cfg.decoder_dir)
        vggface.check_weights_file(self.cfg.vggface_weights, layers=("fc8",))

    def config(self) -> dict:
        return {"architecture": {"model": "voice_encoder", "preset": self.cfg.preset},
                **dataclasses.asdict(self.cfg)}

    def input_options(self, training: bool) -> data.InputOptions:
        if training and self.cfg.random_crops:
            return self.options(with_spectrogram=False, with_waveform=True,
                                     batch_transform=_random_crops(self.num_samples))
        return self.options()

    def summary_input_options(self) -> data.InputOptions:
        return self.options(with_faces=True, with_waveform=True,
                                 batch_transform=_decode_faces)

    def prepare(self, train_files: Sequence[str]) -> None:
        first = next(iter(tf.data.TFRecordDataset(train_files[0]).take(1)))
        example = records.decode_example(first.numpy())
        if self.cfg.random_crops and example.waveform is None:
            raise ValueError(f"{train_files[0]} stores no waveforms, so random crops are "
                             "impossible: pass --norandom_crops to train on the stored "
                             "spectrograms")

    def build_model(self) -> keras.Model:
        # The teachers are built here too, inside the strategy scope, and frozen.
        self.decoder = export.load_decoder(self.cfg.decoder_dir)
        self.decoder.trainable = False
        self.fc8 = vggface.build_fc8(self.cfg.vggface_weights)
        self.fc8.trainable = False
        logging.info("Teachers: f_dec from %s, fc8 from %s.", self.cfg.decoder_dir,
                     self.cfg.vggface_weights)
        model = voice_encoder.build_voice_encoder(self.encoder_config)
        logging.info("Voice encoder (%s preset): %s weights.", self.cfg.preset,
                     f"{model.count_params():,}")
        if self.cfg.mean_feature_init:
            # A resumed run restores its own weights from the checkpoint afterwards.
            output = model.get_layer(voice_encoder.OUTPUT_LAYER)
            output.kernel.assign(tf.zeros_like(output.kernel))
            output.bias.assign(self.decoder.feature_mean.numpy())
        return model

    def build_optimizer(self):
        return losses.paper_optimizer(self._learning_rate)

    def compute_losses(self, model, batch, training: bool) -> Dict[str, tf.Tensor]:
        v_s = model(spectrogram_of(batch), training=training)  # the voice's face feature
        return losses.speech2face_loss(
            batch["face_feature"], v_s, self.decoder.f_dec, self.fc8,
            lambda1=self.cfg.lambda1, lambda2=self.cfg.lambda2,
            temperature=self.cfg.temperature)

    def summaries(self, model, batch) -> Dict[str, tuple]:
        v_s = model(spectrogram_of(batch), training=False)
        size = self.decoder.config.image_size
        true = tf.image.resize(batch["face_image"], [size, size], method="area")
        from_f = self.decoder(batch["face_feature"], training=False)["image"]
        from_s = self.decoder(v_s, training=False)["image"]
        waveform = tf.cast(tf.io.decode_raw(tf.strings.substr(
            batch["waveform_bytes"], 0, 2 * self.num_samples), tf.int16), tf.float32) / 32768.0
        return {
            "faces/true_vs_from_vf_vs_from_vs": ("image",
                                                 decoder_task.grid([true, from_f, from_s])),
            "audio/input": ("audio", waveform[..., None]),
        }

    def final_evaluation(self, model, eval_dataset) -> dict:
        """Quick held-out numbers (evaluate.py has the full protocol): cosine retrieval of each
        clip's face among all held-out faces, and the feature distances of docs/evaluation.md."""
        v_s, v_f = [], []
        for batch in eval_dataset:
            v_s.append(model(spectrogram_of(batch), training=False).numpy())
            v_f.append(batch["face_feature"].numpy())
        v_s, v_f = np.concatenate(v_s), np.concatenate(v_f)
        recall = metrics.retrieval_recall(v_s, v_f, metric="cos")
        return {
            "num_queries": int(len(v_s)),
            "gallery_size": int(len(v_f)),
            "retrieval_cos": {str(k): v for k, v in recall.items()},
            "chance": {str(k): v for k, v in metrics.chance_recall(len(v_f)).items()},
            "distances": {k: list(v) for k, v in metrics.feature_distances(v_s, v_f).items()},
        }

    def export(self, model, model_dir: str) -> str:
        info = {"preset": self.cfg.preset, "num_weights": int(model.count_params()),
                "decoder_dir": os.path.abspath(self.cfg.decoder_dir),
                "vggface_weights": os.path.abspath(self.cfg.vggface_weights),
                "loss": {"lambda1": self.cfg.lambda1, "lambda2": self.cfg.lambda2,
                         "temperature": self.cfg.temperature},
                "sample_rate": audio.SAMPLE_RATE, "segment_samples": self.num_samples}
        export_dir = export.save_encoder(model, info, model_dir)
        logging.info("Exported the voice encoder to %s.", export_dir)
        return export_dir

