"""Stage 1: train the face decoder (Cole et al.) from face features v_f to canonical faces.

Inputs per example: v_f (`face_feature`), the 224×224 face crop (`face/jpeg`) and its 68 dlib
landmarks (`face/landmarks`). Like Cole et al., who train on frontal, neutral-expression photos
only, the task keeps only the faces whose landmarks say so (`canonical_faces`,
`landmarks.is_canonical`), in training and in the held-out numbers; `prepare` counts what is kept
over the whole training set and `config()` records it. Targets (Cole et al., Sec. 3): the
landmarks; the texture = the crop warped to the mean landmarks of the (kept) training faces
(computed in `prepare`); the crop itself for the perceptual term (distance between VGG-Face
features of the rendered and the true face).

Export (`model_dir/export/`): `face_decoder.keras` (carries the mean landmarks) and
`face_decoder.json` (`speech2face.models.export`, whose `load_decoder(model_dir)` reads them back
for stage 2, evaluate.py and predict.py).
"""

import dataclasses
from typing import Dict, Optional, Sequence

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from speech2face import data, losses, records
from speech2face.models import export, face_decoder, vggface
from speech2face.models import landmarks as landmarks_lib
from speech2face.training import loop

EVAL_FILE = "decoder_eval.json"
PERCEPTUAL_LAYERS = ("fc7", "pool3", "pool2", "none")


@dataclasses.dataclass(frozen=True)
class DecoderTaskConfig:
    """Stage-1 settings.

    Attributes:
      preset: `paper` (224×224 output) or `small` (64×64; CPU and the toy world).
      learning_rate: Adam step size (β1 0.5, β2 0.999, ε 1e-4, as for the encoder).
      decay_rate: staircase decay, lr × decay_rate^floor(step / decay_steps), as the encoder's
        (`losses.learning_rate_schedule`); 1 (the default) keeps it constant, as Cole et al.
      decay_steps: steps between decays.
      landmark_weight: weight of the landmark MSE.
      texture_weight: weight of the texture L1.
      perceptual_weight: weight of the perceptual term (VGG-Face features of the rendered vs
        the true face).
      image_weight: weight of the rendered-image L1 (ours, not in Cole et al.: 0 = off).
      texture_batch_norm: batch normalisation in the texture branch (ours, not in Cole et al.).
      perceptual_layer: VGG-Face layer of the perceptual term: `fc7` (the face feature itself,
        the rendered image resized to 224×224: Cole et al.'s choice and the default for `paper`),
        `pool3`/`pool2` (convolutional features at the decoder's own resolution: ~10-40× cheaper,
        the default for `small` on CPUs), or `none`.
      vggface_weights: rcmalli-layout VGG-Face .h5 for the perceptual term.
      canonical_faces: train (and evaluate) on frontal, neutral faces only, as Cole et al.: the
        landmarks' yaw, roll and mouth opening within the bounds below (models/landmarks.py).
      canonical_max_yaw: largest |nose-tip offset| from the outer eye corners' midpoint, in half
        eye distances (~0.85 tan of the head's yaw; 0.25 ≈ 15°).
      canonical_max_roll_deg: largest |angle| of the eye line, in degrees.
      canonical_max_mouth_open: largest inner-lip gap, in mouth widths (closed lips ≈ 0).
    """

    preset: str = "paper"
    learning_rate: float = 1e-3
    decay_rate: float = 1.0
    decay_steps: int = 10000
    landmark_weight: float = face_decoder.DecoderLossWeights.landmark
    texture_weight: float = face_decoder.DecoderLossWeights.texture
    perceptual_weight: float = face_decoder.DecoderLossWeights.perceptual
    image_weight: float = face_decoder.DecoderLossWeights.image
    texture_batch_norm: bool = face_decoder.DecoderConfig.texture_batch_norm
    perceptual_layer: Optional[str] = None
    vggface_weights: Optional[str] = None
    canonical_faces: bool = True
    canonical_max_yaw: float = landmarks_lib.MAX_YAW
    canonical_max_roll_deg: float = landmarks_lib.MAX_ROLL_DEG
    canonical_max_mouth_open: float = landmarks_lib.MAX_MOUTH_OPEN

    def is_canonical(self, landmarks):
        """[..., 68, 2] landmarks (pixels or normalised, NumPy or tf) -> [...] bool: within
        this config's bounds (`landmarks.is_canonical`)."""
        return landmarks_lib.is_canonical(landmarks, self.canonical_max_yaw,
                                          self.canonical_max_roll_deg,
                                          self.canonical_max_mouth_open)

    def filter_description(self) -> str:
        return (f"|yaw| <= {self.canonical_max_yaw:g}, |roll| <= {self.canonical_max_roll_deg:g} "
                f"deg, mouth opening <= {self.canonical_max_mouth_open:g}")

    def resolved_perceptual_layer(self) -> str:
        layer = self.perceptual_layer or ("fc7" if self.preset == "paper" else "pool3")
        if layer not in PERCEPTUAL_LAYERS:
            raise ValueError(f"perceptual_layer must be one of {PERCEPTUAL_LAYERS}, got {layer!r}")
        return layer


def _decode_faces(image_size: int):
    """Host-side batch transform: JPEG bytes -> [b, S, S, 3] float in [0, 1] (b may be 0);
    landmarks to normalised coordinates."""

    def decode(jpegs):
        return tf.image.resize(records.decode_faces(jpegs), [image_size, image_size],
                               method="area", antialias=True)

    def transform(batch, seed):
        del seed  # nothing random
        jpegs = batch["face_jpeg"]
        # An empty batch (every face of it filtered out in `prepare`) has nothing to decode.
        images = tf.cond(tf.size(jpegs) > 0, lambda: decode(jpegs),
                         lambda: tf.zeros([0, image_size, image_size, 3]))
        images.set_shape([None, image_size, image_size, 3])
        return {
            "face_feature": batch["face_feature"],
            "face_image": tf.clip_by_value(images, 0.0, 1.0),
            "landmarks": landmarks_lib.pixels_to_normalized(batch["landmarks"], records.FACE_SIZE),
            "speaker_id": batch["speaker_id"],
        }

    return transform


def _landmarks_of_serialized(serialized: tf.Tensor) -> tf.Tensor:
    """One serialized example -> its [68, 2] float32 pixel landmarks (only that key parsed)."""
    parsed = tf.io.parse_single_example(
        serialized, {records.Keys.LANDMARKS: tf.io.FixedLenFeature([], tf.string)})
    return tf.reshape(tf.io.decode_raw(parsed[records.Keys.LANDMARKS], tf.float32,
                                       little_endian=True), [records.NUM_LANDMARKS, 2])


def _perceptual_fn(layer: str, weights: str):
    """[b, S, S, 3] in [0, 1] -> [b, d] VGG-Face features of `layer` (frozen)."""
    if layer == "fc7":
        vgg = vggface.build_vggface(include_top=True, weights=weights)
        features = keras.Model(vgg.input, vgg.get_layer("fc7_relu").output)
    else:
        vgg = vggface.build_vggface(include_top=False, weights=weights)
        inputs = keras.Input((None, None, 3))
        x = inputs
        for sub in vgg.layers[1:]:
            x = sub(x)
            if sub.name == layer:
                break
        features = keras.Model(inputs, x)
    features.trainable = False

    def fn(images):
        x = tf.cast(images, tf.float32) * 255.0
        if layer == "fc7":
            x = tf.image.resize(x, [vggface.IMAGE_SIZE, vggface.IMAGE_SIZE], method="bilinear")
        out = features(vggface.preprocess_input(x), training=False)
        return tf.reshape(tf.cast(out, tf.float32), [tf.shape(images)[0], -1])

    return fn


def grid(columns: Sequence[tf.Tensor]) -> tf.Tensor:
    """[n, S, S, 3] tensors side by side with a 2-pixel white gap -> [n, S, k*S + ..., 3]."""
    gap = tf.ones_like(columns[0][:, :, :2])
    parts = []
    for i, column in enumerate(columns):
        parts.extend([column] if i == 0 else [gap, column])
    return tf.clip_by_value(tf.concat(parts, axis=2), 0.0, 1.0)


class DecoderTask(loop.Task):
    """Stage 1 for `loop.Trainer`."""

    name = "decoder"
    eval_file = EVAL_FILE
    loss_names = ("total", "landmark_mse", "texture_l1", "perceptual", "image_l1")

    def __init__(self, config: DecoderTaskConfig):
        self.cfg = config
        # Built here, so that a bad decay setting fails before anything is written.
        self._learning_rate = losses.learning_rate_schedule(
            config.learning_rate, config.decay_rate, config.decay_steps)
        self.decoder_config = dataclasses.replace(face_decoder.decoder_config(config.preset),
                                                  texture_batch_norm=config.texture_batch_norm)
        self.perceptual_layer = config.resolved_perceptual_layer()
        if self.perceptual_layer != "none" and config.perceptual_weight > 0:
            if not config.vggface_weights:
                raise ValueError(
                    "the perceptual term needs VGG-Face weights: pass --vggface_weights=PATH "
                    "(rcmalli_vggface_tf_vgg16.h5), or --perceptual_weight=0")
            self._perceptual = _perceptual_fn(self.perceptual_layer, config.vggface_weights)
        else:
            self._perceptual = None
        self.weights = face_decoder.DecoderLossWeights(
            landmark=config.landmark_weight, texture=config.texture_weight,
            perceptual=config.perceptual_weight if self._perceptual else 0.0,
            image=config.image_weight)
        self.mean_landmarks = None
        self.mean_face = None
        self.feature_mean = None
        self.feature_scale = 1.0
        self.training_faces = None  # what `prepare` counted: faces read and kept

    def config(self) -> dict:
        out = {"architecture": {"model": "face_decoder", "preset": self.cfg.preset,
                                "texture_batch_norm": self.cfg.texture_batch_norm},
               **dataclasses.asdict(self.cfg), "perceptual_layer": self.perceptual_layer}
        if self.training_faces is not None:
            out["training_faces"] = self.training_faces
        return out

    def _keep_example(self, serialized: tf.Tensor) -> tf.Tensor:
        return self.cfg.is_canonical(_landmarks_of_serialized(serialized))

    def input_options(self, training: bool) -> data.InputOptions:
        return self.options(
            with_faces=True, with_spectrogram=False,
            batch_transform=_decode_faces(self.decoder_config.image_size),
            example_filter=self._keep_example if self.cfg.canonical_faces else None)

    def _prepare_options(self) -> data.InputOptions:
        """Every training example, the non-canonical ones masked out before JPEG decoding: one
        pass both counts the faces read and kept and sums over the kept ones."""
        decode = _decode_faces(self.decoder_config.image_size)
        cfg = self.cfg

        def transform(batch, seed):
            landmarks = batch["landmarks"]
            num_read = tf.shape(landmarks)[0]
            measures = landmarks_lib.face_measures(landmarks)
            fails = tf.stack([tf.abs(measures["yaw"]) > cfg.canonical_max_yaw,
                              tf.abs(measures["roll_deg"]) > cfg.canonical_max_roll_deg,
                              measures["mouth_open"] > cfg.canonical_max_mouth_open])
            if cfg.canonical_faces:
                keep = cfg.is_canonical(landmarks)
                batch = {k: tf.boolean_mask(v, keep) for k, v in batch.items()}
            out = decode(batch, seed)
            out["num_read"] = num_read
            out["fails"] = tf.reduce_sum(tf.cast(fails, tf.int64), axis=1)
            return out

        return dataclasses.replace(self.input_options(False), example_filter=None,
                                   batch_transform=transform)

    def prepare(self, train_files: Sequence[str]) -> None:
        """Mean landmarks (the texture frame) and the mean face (the baseline) of the kept
        training faces; counts the faces read and kept (`training_faces`, logged and recorded)."""
        dataset = data.input_fn(",".join(train_files), None, 64, False, self._prepare_options())
        landmark_sum, image_sum, feature_sum, square_sum, count = 0.0, 0.0, 0.0, 0.0, 0
        num_read, fails = 0, np.zeros(3, np.int64)
        for batch in dataset:
            num_read += int(batch["num_read"])
            fails += batch["fails"].numpy()
            if batch["landmarks"].shape[0] == 0:
                continue
            features = batch["face_feature"].numpy().astype(np.float64)
            feature_sum += features.sum(0)
            square_sum += float(np.square(features).sum())
            landmark_sum += batch["landmarks"].numpy().astype(np.float64).sum(0)
            image_sum += batch["face_image"].numpy().astype(np.float64).sum(0)
            count += int(batch["landmarks"].shape[0])
        if num_read == 0:
            raise ValueError("the training records hold no examples")
        self.training_faces = {
            "filter": self.cfg.filter_description() if self.cfg.canonical_faces else "off",
            "read": num_read, "kept": count, "kept_fraction": count / num_read,
            "outside_bounds": dict(zip(("yaw", "roll", "mouth_open"), fails.tolist())),
            "counted_over": "every training record, once before training"}
        if self.cfg.canonical_faces:
            logging.info("Canonical faces: kept %d of %d training faces (%.1f%%; %s); outside "
                         "the yaw bound %d, roll %d, mouth opening %d.", count, num_read,
                         100.0 * count / num_read, self.cfg.filter_description(), *fails)
        if count == 0:
            shown = ", ".join(train_files[:3]) + (f" and {len(train_files) - 3} more"
                                                  if len(train_files) > 3 else "")
            raise loop.TrainingError(
                f"none of the {num_read} training faces in {shown} passes the canonical-face "
                f"filter ({self.cfg.filter_description()}; outside the yaw bound {fails[0]}, "
                f"roll {fails[1]}, mouth opening {fails[2]}). Loosen --canonical_max_yaw, "
                "--canonical_max_roll_deg, --canonical_max_mouth_open, or train on every face "
                "with --nocanonical_faces.")
        self.mean_landmarks = (landmark_sum / count).astype(np.float32)
        self.mean_face = (image_sum / count).astype(np.float32)
        # Centred with unit RMS: the shared component of the features carries no identity.
        self.feature_mean = (feature_sum / count).astype(np.float32)
        centred_square = square_sum / count - float(np.square(feature_sum / count).sum())
        if centred_square <= 1e-9 * square_sum / count:
            # Scaled to unit RMS, features that do not vary would be blown up by ~1e12.
            raise loop.TrainingError(
                f"the {count} training face{'s' if count != 1 else ''} kept in "
                f"{', '.join(train_files[:3])}{' and more' if len(train_files) > 3 else ''} "
                f"{'all have' if count != 1 else 'has'} the same face feature (one person): the face decoder learns from the differences between "
                "people; train on records of several speakers")
        self.feature_scale = 1.0 / max(np.sqrt(max(centred_square, 0.0)
                                               / face_decoder.FEATURE_DIM), 1e-12)
        logging.info("Mean landmarks and mean face over %d training faces.", count)

    def build_model(self) -> keras.Model:
        model = face_decoder.FaceDecoder(self.decoder_config, mean_landmarks=self.mean_landmarks)
        model.set_feature_normalization(self.feature_scale, self.feature_mean)
        model(tf.zeros([1, face_decoder.FEATURE_DIM]))
        logging.info("Face decoder (%s preset): %d×%d output, %s weights.", self.cfg.preset,
                     self.decoder_config.image_size, self.decoder_config.image_size,
                     f"{model.count_params():,}")
        return model

    def build_optimizer(self):
        return losses.paper_optimizer(self._learning_rate)

    def compute_losses(self, model, batch, training: bool) -> Dict[str, tf.Tensor]:
        # Without an image term the step needs no rendering (texture and landmark terms only).
        render = bool(self.weights.image) or self._perceptual is not None
        outputs = model(batch["face_feature"], training=training, render=render)
        return face_decoder.decoder_losses(
            outputs, batch["face_image"], batch["landmarks"], model.mean_landmarks,
            weights=self.weights, perceptual_fn=self._perceptual)

    def summaries(self, model, batch) -> Dict[str, tuple]:
        outputs = model(batch["face_feature"], training=False)
        return {"faces/true_vs_decoded": ("image", grid([batch["face_image"], outputs["image"]])),
                "faces/texture_in_mean_frame": ("image", grid([outputs["texture"]]))}

    def export(self, model, model_dir: str) -> str:
        info = {"preset": self.cfg.preset, "image_size": self.decoder_config.image_size,
                "mean_landmarks": model.mean_landmarks.numpy().tolist(),
                "feature_scale": float(model.feature_scale.numpy()),
                "vggface_weights": self.cfg.vggface_weights}
        export_dir = export.save_decoder(model, info, model_dir)
        logging.info("Exported the face decoder to %s.", export_dir)
        return export_dir

    def final_evaluation(self, model, eval_dataset) -> dict:
        """Held-out pixel L1 and landmark error of decoded faces, beside the mean face."""
        size = self.decoder_config.image_size
        sums = {"l1": 0.0, "l1_mean_face": 0.0, "lm": 0.0, "lm_mean": 0.0}
        count = 0
        mean_face = tf.constant(self.mean_face)
        mean_landmarks = tf.constant(self.mean_landmarks)
        for batch in eval_dataset:
            outputs = model(batch["face_feature"], training=False)
            true = batch["face_image"]
            n = int(true.shape[0])
            sums["l1"] += float(tf.reduce_sum(tf.reduce_mean(tf.abs(outputs["image"] - true),
                                                             [1, 2, 3])))
            sums["l1_mean_face"] += float(tf.reduce_sum(tf.reduce_mean(
                tf.abs(mean_face[None] - true), [1, 2, 3])))
            # Mean Euclidean landmark error in pixels of a 224×224 face.
            err = tf.norm((outputs["landmarks"] - batch["landmarks"]) * records.FACE_SIZE, axis=-1)
            err_mean = tf.norm((mean_landmarks[None] - batch["landmarks"]) * records.FACE_SIZE,
                               axis=-1)
            sums["lm"] += float(tf.reduce_sum(tf.reduce_mean(err, -1)))
            sums["lm_mean"] += float(tf.reduce_sum(tf.reduce_mean(err_mean, -1)))
            count += n
        if count == 0:
            return {"num_faces": 0, "note": "no held-out face passes the canonical-face filter "
                                            f"({self.cfg.filter_description()})"}
        result = {
            "num_faces": count,
            "faces": (f"canonical only ({self.cfg.filter_description()})"
                      if self.cfg.canonical_faces else "all"),
            "image_size": size,
            "pixel_l1": {"decoded": sums["l1"] / count, "mean_face": sums["l1_mean_face"] / count},
            "landmark_error_px224": {"decoded": sums["lm"] / count,
                                     "mean_face": sums["lm_mean"] / count},
            "note": "pixel L1: mean absolute difference in [0, 1] RGB at the decoder's "
                    "resolution, decoded from the true face feature vs the true face; landmark "
                    "error: mean Euclidean distance in pixels of a 224x224 crop; mean_face: the "
                    "baseline that always draws the training set's mean image and landmarks",
        }
        return result

