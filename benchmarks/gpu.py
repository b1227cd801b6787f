"""One GPU benchmark: the two training steps and the on-device input pipeline, with MFU.

    benchmarks/gpu.sh [OUT.json]                       (the wrapper: environment and a timeout)
    python benchmarks/gpu.py [--json=gpu.json] [--budget_s=400] [--tiny]

Measures, in order of priority, inside a time budget (what does not fit is skipped and listed):
1. The voice-encoder training step (paper Table 1 encoder, batch 8, 598×257×2 spectrograms, the
   Speech2Face loss of paper Eq. 1–2 through its frozen teachers, the paper's Adam), in float32
   and mixed bfloat16, each with XLA off and on. FLOPs: 3 × `voice_encoder.flops_per_example`
   (forward + backward ≈ 3 × forward; the teachers' < 0.1 % left out).
2. The input pipeline of stage 2: records read and cut into random int16 crops on the host, the
   spectrogram computed from them on the device (`encoder_task.spectrogram_of`, as the training
   step does), beside the naive path that computes it on the host inside tf.data. FLOPs: the
   FFTs only, 2.5 · N · log2 N per 512-point real FFT frame (half the usual complex-FFT count).
3. The face-decoder training step of stage 1 (`DecoderTask.compute_losses`, as in
   benchmarks/decoder.py: paper preset, 224×224, batch 8, perceptual term on VGG-Face fc7 with
   random weights), float32 and mixed bfloat16 with XLA off; XLA on last, if time remains.
   FLOPs: an analytic count of the convolutions and dense layers (`decoder_flops`).

MFU = achieved FLOP/s ÷ the device's peak for that precision: a known card's datasheet figure
(`machine.peaks`), else a matmul measured in the same run. `--tiny` (CPU-sized presets, batch 2,
1 s clips, one timed step, no optional configurations) is what the test suite runs. Results: docs/performance.md.
"""

import gc
import json
import math
import os
import sys
import tempfile
import time
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_START = time.perf_counter()

from absl import app, flags  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from speech2face import audio, data, losses, records  # noqa: E402
from speech2face.models import face_decoder, landmarks, vggface, voice_encoder  # noqa: E402
from speech2face.training import decoder_task, encoder_task, strategy  # noqa: E402
import machine  # noqa: E402  (benchmarks/machine.py)

flags.DEFINE_string("json", None, "Write the results here as JSON (after every configuration).")
flags.DEFINE_bool("tiny", False, "CPU-sized run for the test suite: small presets, batch 2, "
                  "1 s clips, one timed step, the required configurations only.")
flags.DEFINE_float("budget_s", 400.0, "Seconds from start-up after which no configuration is "
                   "started; one expected to end past it is skipped.")
flags.DEFINE_integer("steps", 5, "Timed steps per training configuration (--tiny: 1).")
flags.DEFINE_integer("warmup", 2, "Untimed steps first (the first compiles; --tiny: 1).")
flags.DEFINE_float("max_timed_s", 20.0, "Stop timing a configuration after this many seconds "
                   "(at least one step is timed).")
flags.DEFINE_integer("peak_size", 0, "n of the n×n matmul that measures a peak the datasheet "
                     "table lacks; 0: 8192 on a GPU, 2048 on a CPU, 512 with --tiny.")
flags.DEFINE_integer("pipeline_examples", 256, "Records written for the pipeline (--tiny: 16).")
FLAGS = flags.FLAGS

PRECISIONS = ("float32", "bfloat16")
FFT_FLOPS = 2.5 * audio.FFT_LENGTH * math.log2(audio.FFT_LENGTH)  # per frame, real input


def _setup(tiny):
    """Sizes of this run: the paper's, or --tiny's."""
    if tiny:
        return {"preset": "small", "batch": 2, "samples": audio.SAMPLE_RATE,
                "perceptual": "pool3", "steps": 1, "warmup": 1}
    return {"preset": "paper", "batch": 8, "samples": audio.SEGMENT_SAMPLES,
            "perceptual": "fc7", "steps": FLAGS.steps, "warmup": FLAGS.warmup}


def _frames(num_samples):
    return 1 + (num_samples - audio.WINDOW_LENGTH) // audio.HOP_LENGTH


def time_steps(step, batch_size, warmup, steps, max_seconds):
    """Runs `step()` (which must block until the device is done) `warmup` times, then up to
    `steps` times or `max_seconds`; returns examples/s, steps timed, first step's seconds."""
    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        step()
    timed, start = 0, time.perf_counter()
    while timed < steps and (timed == 0 or time.perf_counter() - start < max_seconds):
        step()
        timed += 1
    return {"examples_per_s": timed * batch_size / (time.perf_counter() - start),
            "timed_steps": timed, "first_step_s": first}


def _train_step(model, compute_loss, optimizer, jit):
    @tf.function(jit_compile=jit)
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(compute_loss())
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return lambda: step().numpy()


def encoder_step(setup, precision, jit):
    """Stage 2's step: v_s = encoder(spectrogram), the three-term loss through f_dec (a face
    decoder's first layer) and fc8 (a frozen Dense 4096 → 2622, VGG-Face's fc8 without loading
    550 MB of weights that speed does not depend on), Adam(0.5, 0.999, 1e-4)."""
    strategy.set_precision(precision)
    keras.utils.set_random_seed(0)
    config = voice_encoder.encoder_config(setup["preset"])
    model = voice_encoder.build_voice_encoder(config)
    teacher = face_decoder.FaceDecoder(face_decoder.decoder_config(setup["preset"]),
                                       mean_landmarks=landmarks.template_landmarks())
    teacher(tf.zeros([1, face_decoder.FEATURE_DIM]))
    fc8 = keras.layers.Dense(vggface.NUM_IDENTITIES, name="fc8")
    fc8.build((None, vggface.FEATURE_DIM))
    teacher.trainable = fc8.trainable = False
    frames, batch = _frames(setup["samples"]), setup["batch"]
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((batch, frames, audio.NUM_FREQ_BINS, 2), np.float32))
    v_f = tf.constant(rng.random((batch, voice_encoder.FEATURE_DIM), np.float32))

    def loss():
        return losses.speech2face_loss(v_f, model(x, training=True), teacher.f_dec, fc8)["total"]

    step = _train_step(model, loss, losses.paper_optimizer(), jit)
    return step, 3 * voice_encoder.flops_per_example(config, frames)


def decoder_flops(config: face_decoder.DecoderConfig, perceptual_layer: str) -> float:
    """Analytic FLOPs of one decoder training example: 2 × the multiply-adds of every dense,
    transposed-conv and conv layer (a transposed conv: H_in · W_in · k² · C_in · C_out), × 3 for
    the decoder (forward + both backward passes), plus VGG-Face up to `perceptual_layer` three
    times (the true face forward; the rendered face forward and backward to its pixels, not to
    the frozen weights). The TPS warp and the elementwise ops are left out."""
    macs, width = config.feature_dim * config.fc_units, config.fc_units
    for units in config.landmark_hidden + (2 * config.num_landmarks,):
        macs, width = macs + width * units, units
    side, channels = config.texture_base_size, config.texture_base_channels
    macs += config.fc_units * side * side * channels
    for out in config.texture_channels:
        macs += side * side * config.kernel_size ** 2 * channels * out
        side, channels = 2 * side, out
    macs += side * side * channels * 3
    vgg_side = vggface.IMAGE_SIZE if perceptual_layer == "fc7" else config.image_size
    vgg_macs = 0
    for name, (kernel, _) in vggface._weight_shapes(include_top=True).items():
        if name.startswith("conv"):
            block = int(name[4])
            if perceptual_layer.startswith("pool") and block > int(perceptual_layer[4]):
                break
            vgg_macs += (vgg_side >> (block - 1)) ** 2 * math.prod(kernel)
        else:
            vgg_macs += math.prod(kernel)
            if name == perceptual_layer:
                break
    return 2.0 * (3 * macs + 3 * vgg_macs)


def decoder_step(setup, precision, jit, weights):
    """Stage 1's step exactly as train.py runs it, on a synthetic batch."""
    strategy.set_precision(precision)
    keras.utils.set_random_seed(0)
    task = decoder_task.DecoderTask(decoder_task.DecoderTaskConfig(
        preset=setup["preset"], perceptual_layer=setup["perceptual"], vggface_weights=weights))
    size, batch = task.decoder_config.image_size, setup["batch"]
    task.mean_landmarks = landmarks.template_landmarks()
    task.mean_face = np.full((size, size, 3), 0.5, np.float32)
    model = task.build_model()
    rng = np.random.default_rng(1)
    jitter = 0.01 * rng.standard_normal((batch, face_decoder.NUM_LANDMARKS, 2))
    inputs = {"face_feature": tf.constant(rng.random((batch, face_decoder.FEATURE_DIM),
                                                     np.float32)),
              "face_image": tf.constant(rng.random((batch, size, size, 3), np.float32)),
              "landmarks": tf.constant((task.mean_landmarks + jitter).astype(np.float32))}

    def loss():
        return task.compute_losses(model, inputs, training=True)["total"]

    step = _train_step(model, loss, task.build_optimizer(), jit)
    return step, decoder_flops(task.decoder_config, setup["perceptual"])


def write_pipeline_records(directory, setup, count):
    """`count` records like the builders' (float16 spectrogram, v_f, a waveform 1 s longer than
    the crop), in 16 MB shards; returns their glob."""
    rng = np.random.default_rng(2)
    num_samples = setup["samples"] + audio.SAMPLE_RATE
    wave = (3000 * rng.standard_normal(num_samples)).astype(np.int16)
    spec = rng.standard_normal((_frames(setup["samples"]), audio.NUM_FREQ_BINS, 2), np.float32)
    feature = rng.random(records.FEATURE_DIM, np.float32)
    prefix = os.path.join(directory, "train")
    with records.ShardedWriter(prefix, max_shard_bytes=16 * 2**20) as writer:
        for i in range(count):
            writer.write(records.Example(spec, feature, f"spk{i // 4}", f"c{i}", "bench",
                                         waveform=np.roll(wave, 97 * i)))
    return prefix + "*"


def pipeline_step(setup, pattern, where):
    """One pipeline path: "host_crop_only" (read + crop, no STFT), "naive_host_stft" (the STFT in
    the host's tf.data map, float32 spectrograms shipped), "device_stft" (ours: int16 crops
    shipped, `encoder_task.spectrogram_of` on the device). Each step takes one batch and waits
    for the device's result."""
    strategy.set_precision("float32")
    crops = encoder_task._random_crops(setup["samples"])  # = EncoderTask's transform
    transform = crops
    if where == "naive_host_stft":
        def transform(batch, seed):
            out = crops(batch, seed)
            out["spectrogram"] = encoder_task.spectrogram_of(out)
            del out[encoder_task.WAVEFORM_KEY]
            return out
    options = data.InputOptions(with_spectrogram=False, with_waveform=True,
                                batch_transform=transform)
    iterator = iter(data.input_fn(pattern, None, setup["batch"], training=True, options=options))

    @tf.function
    def on_device(batch):
        if where == "host_crop_only":
            return tf.reduce_sum(tf.cast(batch[encoder_task.WAVEFORM_KEY], tf.float32))
        return tf.reduce_sum(encoder_task.spectrogram_of(batch))

    frames = _frames(setup["samples"])
    return lambda: on_device(next(iterator)).numpy(), (0 if where == "host_crop_only"
                                                      else frames * FFT_FLOPS)


def plan(setup, weights, pattern):
    """(name, group, precision, xla, required, build) of every configuration, by priority."""
    out = [(f"encoder/{p}/xla_{x}", "encoder", p, x, True,
            lambda p=p, x=x: encoder_step(setup, p, x == "on"))
           for p in PRECISIONS for x in ("off", "on")]
    out += [(f"pipeline/{w}", "pipeline", "float32", "off", True,
             lambda w=w: pipeline_step(setup, pattern, w))
            for w in ("naive_host_stft", "host_crop_only", "device_stft")]
    out += [(f"decoder/{p}/xla_{x}", "decoder", p, x, x == "off",
             lambda p=p, x=x: decoder_step(setup, p, x == "on", weights))
            for x in ("off", "on") for p in PRECISIONS]
    return out


def _print_row(row):
    mfu = f"{row['mfu']:>7.1%}" if row["mfu"] is not None else f"{'-':>7}"
    print(f"  {row['name']:<26} {row['batch_size']:>5} {row['examples_per_s']:>11.2f} "
          f"{row['gflops_per_s']:>10.1f} {mfu} {row['ratio']:>6.2f}x {row['first_step_s']:>8.1f}",
          flush=True)


def run(report, setup, weights, pattern, write):
    """Runs the plan inside the budget, appending to `report`; True if nothing failed."""
    baselines = {"encoder": "encoder/float32/xla_off", "decoder": "decoder/float32/xla_off",
                 "pipeline": "pipeline/naive_host_stft"}
    took, ok, rates = {}, True, {}
    print(f"\n  {'configuration':<26} {'batch':>5} {'examples/s':>11} {'GFLOP/s':>10} "
          f"{'MFU':>7} {'ratio':>7} {'first s':>8}")
    for name, group, precision, xla, required, build in plan(setup, weights, pattern):
        left = FLAGS.budget_s - (time.perf_counter() - _START)
        need = took.get((group, xla), took.get((group, "off"), 0.0) * (2 if xla == "on" else 1))
        reason = None
        if FLAGS.tiny and not required:
            reason = "--tiny runs the required configurations only"
        elif need > left or left <= 0:
            reason = f"expected ~{need:.0f} s, {left:.0f} s left of --budget_s={FLAGS.budget_s:g}"
        if reason:
            report["skipped"].append({"name": name, "required": required, "reason": reason})
            print(f"  {name:<26} skipped: {reason}", flush=True)
            continue
        start = time.perf_counter()
        try:
            step, flops = build()
            timing = time_steps(step, setup["batch"], setup["warmup"],
                                setup["steps"] if group != "pipeline" else 10 * setup["steps"],
                                FLAGS.max_timed_s)
        except Exception as error:  # noqa: BLE001  (recorded, printed, and the exit code says so)
            traceback.print_exc()
            ok = False
            report["skipped"].append({"name": name, "required": required,
                                      "reason": f"failed: {type(error).__name__}: {error}"[:2000]})
            print(f"  {name:<26} FAILED: {type(error).__name__} (traceback above)", flush=True)
            continue
        finally:
            step = build = None
            keras.backend.clear_session()
            gc.collect()
        took[(group, xla)] = time.perf_counter() - start
        rate = timing["examples_per_s"]
        rates[name] = rate
        peak = report["peaks"][precision]
        row = {"name": name, "group": group, "precision": precision, "xla": xla == "on",
               "batch_size": setup["batch"], **timing, "flops_per_example": flops,
               "gflops_per_s": rate * flops / 1e9, "mfu": rate * flops / peak["flops_per_s"],
               "peak_source": peak["source"], "seconds": took[(group, xla)],
               "ratio": rate / rates.get(baselines[group], rate),
               "ratio_vs": baselines[group]}
        report["configurations"].append(row)
        _print_row(row)
        write()
    return ok


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"gpu.py takes flags only, got {argv[1:]}")
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)
    host = {**machine.describe(), "keras": keras.__version__}
    device = host["gpus"][0] if host["gpus"] else f"CPU: {host['cpu']}"
    setup = _setup(FLAGS.tiny)
    peak_size = FLAGS.peak_size or (512 if FLAGS.tiny else 8192 if host["gpus"] else 2048)
    print(f"TensorFlow {host['tensorflow']}, Keras {host['keras']}, device: {device} "
          f"({len(host['gpus'])} GPU(s) seen), {host['cpu_cores']} CPU cores, "
          f"{'--tiny' if FLAGS.tiny else 'paper sizes'}, budget {FLAGS.budget_s:g} s", flush=True)
    report = {"device": device, "tensorflow": host["tensorflow"], "keras": host["keras"],
              "machine": host, "tiny": FLAGS.tiny, "setup": setup, "budget_s": FLAGS.budget_s,
              "peaks": machine.peaks(device, PRECISIONS, peak_size, 1.0 if FLAGS.tiny else 3.0),
              "configurations": [], "skipped": []}
    for precision, peak in report["peaks"].items():
        print(f"peak {precision}: {peak['flops_per_s'] / 1e12:.3g} TFLOP/s ({peak['source']})")

    def write():
        report["elapsed_s"] = time.perf_counter() - _START
        if FLAGS.json:
            with open(FLAGS.json, "w", encoding="utf-8") as f:
                json.dump(report, f, indent=2)

    with tempfile.TemporaryDirectory() as tmp:
        weights = vggface.random_vggface_weights(os.path.join(tmp, "vggface.h5"), seed=0,
                                                 include_top=setup["perceptual"] == "fc7")
        pattern = write_pipeline_records(tmp, setup, 16 if FLAGS.tiny else FLAGS.pipeline_examples)
        ok = run(report, setup, weights, pattern, write)
    strategy.set_precision("float32")
    write()
    print(f"done in {report['elapsed_s']:.0f} s; skipped: {len(report['skipped'])}"
          + (f"; wrote {FLAGS.json}" if FLAGS.json else ""))
    if not ok:
        sys.exit("gpu.py: some configurations failed (see 'skipped' and the tracebacks above)")


if __name__ == "__main__":
    app.run(main)
