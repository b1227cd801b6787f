"""The toy world's generator: speakers, their voices and their faces."""

import numpy as np
import pytest
from scipy import stats

from speech2face.datasets.toy import face as toy_face, speakers as toy_speakers, voice as toy_voice
from speech2face.datasets.toy import voice_stats

SR = toy_voice.SAMPLE_RATE
F0 = voice_stats.VOICE_STAT_NAMES.index("log_f0_median")


def _speaker(**latents):
    """A speaker with every latent 0 except the ones given."""
    values = dict.fromkeys(toy_speakers.ATTRIBUTE_NAMES, 0.0)
    values.update(latents)
    return toy_speakers.speaker_from_latents("toy-test", values)


# ---------------------------------------------------------------------------------------------
# Speakers.


def test_attributes_cover_shared_and_unshared_causes():
    carriers = {a.carried_by for a in toy_speakers.ATTRIBUTES}
    assert carriers == {"both", "voice", "face"}
    names = toy_speakers.ATTRIBUTE_NAMES
    assert len(set(names)) == len(names)
    for shared in ("head_size", "masculinity", "nasality"):
        assert shared in toy_speakers.SHARED_ATTRIBUTES


def test_sample_speakers_is_deterministic():
    a = toy_speakers.sample_speakers(5, np.random.default_rng(0))
    b = toy_speakers.sample_speakers(5, np.random.default_rng(0))
    c = toy_speakers.sample_speakers(5, np.random.default_rng(1))
    assert a == b
    assert a != c
    assert [s.speaker_id for s in a] == [f"toy-{i:05d}" for i in range(5)]
    assert set(a[0].latents) == set(toy_speakers.ATTRIBUTE_NAMES)


def test_masculinity_is_bimodal():
    speakers = toy_speakers.sample_speakers(400, np.random.default_rng(0))
    masc = np.array([s.latents["masculinity"] for s in speakers])
    # Two modes near ±1 leave few speakers near 0.
    assert np.mean(np.abs(masc) < 0.3) < 0.15
    assert 0.35 < np.mean(masc > 0) < 0.65


# ---------------------------------------------------------------------------------------------
# Voices.


def test_clip_is_deterministic_and_well_formed():
    speaker = toy_speakers.sample_speakers(1, np.random.default_rng(3))[0]
    a = toy_voice.synthesize_clip(speaker, np.random.default_rng(7), 2.5)
    b = toy_voice.synthesize_clip(speaker, np.random.default_rng(7), 2.5)
    c = toy_voice.synthesize_clip(speaker, np.random.default_rng(8), 2.5)
    assert a.dtype == np.float32 and a.shape == (int(2.5 * SR),)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.all(np.isfinite(a))
    assert 0.45 <= np.max(np.abs(a)) <= 1.0
    assert np.sqrt(np.mean(a ** 2)) > 0.02


@pytest.mark.parametrize("duration_s", [0.3, 2.0, 7.9])
def test_clip_length_is_duration_times_rate(duration_s):
    speaker = _speaker()
    clip = toy_voice.synthesize_clip(speaker, np.random.default_rng(0), duration_s)
    assert clip.shape == (int(round(duration_s * SR)),)
    assert np.all(np.isfinite(clip))


def test_measured_f0_tracks_the_speakers_f0():
    speakers = toy_speakers.sample_speakers(6, np.random.default_rng(11))
    rng = np.random.default_rng(12)
    for speaker in speakers:
        clip = toy_voice.synthesize_clip(speaker, rng, 3.0)
        f0 = np.exp(voice_stats.voice_statistics(clip)[F0])
        assert abs(f0 / speaker.f0_hz - 1.0) < 0.15, (speaker.f0_hz, f0)


def test_masculinity_lowers_f0():
    speakers = toy_speakers.sample_speakers(12, np.random.default_rng(5))
    rng = np.random.default_rng(6)
    masc = [s.latents["masculinity"] for s in speakers]
    f0 = [voice_stats.voice_statistics(toy_voice.synthesize_clip(s, rng, 2.0))[F0] for s in speakers]
    assert stats.spearmanr(masc, f0)[0] < -0.8


def test_head_size_lowers_formants_and_centroid():
    names = voice_stats.VOICE_STAT_NAMES
    formant_cols = [names.index(n) for n in ("log_f1", "log_f2", "log_f3")]
    centroid_col = names.index("spectral_centroid_khz")
    head_sizes = np.linspace(-2.0, 2.0, 5)
    # The same rng seed for every speaker: same words, vowels and noise; only the tract differs.
    st = np.array([voice_stats.voice_statistics(toy_voice.synthesize_clip(
        _speaker(head_size=h), np.random.default_rng(21), 3.0)) for h in head_sizes])
    assert stats.spearmanr(head_sizes, st[:, formant_cols].mean(axis=1))[0] < -0.8
    assert stats.spearmanr(head_sizes, st[:, centroid_col])[0] < -0.8


def test_nasality_moves_energy_to_the_nasal_band():
    low = voice_stats.VOICE_STAT_NAMES.index("band_80_300")
    values = np.linspace(-2.0, 2.0, 5)
    st = np.array([voice_stats.voice_statistics(toy_voice.synthesize_clip(
        _speaker(nasality=v), np.random.default_rng(22), 3.0)) for v in values])
    assert stats.spearmanr(values, st[:, low])[0] > 0.8


@pytest.mark.parametrize("signal", ["zeros", "noise", "tiny", "empty"])
def test_voice_statistics_are_finite_on_odd_input(signal):
    rng = np.random.default_rng(0)
    x = {"zeros": np.zeros(SR), "noise": 0.1 * rng.standard_normal(SR),
         "tiny": 0.1 * rng.standard_normal(100), "empty": np.zeros(0)}[signal]
    out = voice_stats.voice_statistics(x.astype(np.float32))
    assert out.shape == (len(voice_stats.VOICE_STAT_NAMES),) and out.dtype == np.float32
    assert np.all(np.isfinite(out))


# ---------------------------------------------------------------------------------------------
# Faces.


def test_face_is_deterministic_and_well_formed():
    speaker = toy_speakers.sample_speakers(1, np.random.default_rng(4))[0]
    image, landmarks = toy_face.render_face(speaker, np.random.default_rng(9))
    image2, landmarks2 = toy_face.render_face(speaker, np.random.default_rng(9))
    image3, _ = toy_face.render_face(speaker, np.random.default_rng(10))
    assert image.shape == (toy_face.FACE_SIZE, toy_face.FACE_SIZE, 3) and image.dtype == np.uint8
    assert landmarks.shape == (68, 2) and landmarks.dtype == np.float32
    np.testing.assert_array_equal(image, image2)
    np.testing.assert_array_equal(landmarks, landmarks2)
    assert not np.array_equal(image, image3)
    assert image.std() > 20  # not a blank image


def test_landmarks_follow_dlib_order():
    speakers = toy_speakers.sample_speakers(8, np.random.default_rng(2))
    rng = np.random.default_rng(3)
    for speaker in speakers:
        _, lm = toy_face.render_face(speaker, rng)
        x, y = lm[:, 0], lm[:, 1]
        assert np.all(lm >= 0) and np.all(lm <= toy_face.FACE_SIZE - 1)
        # Jaw from image left to right; the near-vertical ends may turn back a little when the
        # head is rotated (the canonical, unrotated ones are checked strictly below).
        assert np.all(np.diff(x[0:17]) > -3.0)
        assert y[8] > y[0] and y[8] > y[16]  # chin below the ends of the jaw
        assert np.all(np.diff(x[17:22]) > 0) and np.all(np.diff(x[22:27]) > 0)  # brows
        assert np.all(np.diff(y[27:31]) > 0)  # nose bridge runs down
        assert np.all(np.diff(x[31:36]) > 0)  # nose base left → right
        assert x[36:42].mean() < x[42:48].mean()  # subject's right eye is on the image's left
        assert x[36] < x[39] < x[42] < x[45]  # eye corners
        brows, eyes = y[17:27].mean(), y[36:48].mean()
        nose, mouth = y[31:36].mean(), y[48:68].mean()
        assert brows < eyes < nose < mouth < y[8]
        assert x[48] < x[51] < x[54] and y[51] < y[57]  # mouth corners, upper above lower lip
        canonical = toy_face.canonical_landmarks(speaker)
        assert np.all(np.diff(canonical[0:17, 0]) > 0)
        assert np.all(np.diff(canonical[0:9, 1]) > 0) and np.all(np.diff(canonical[8:17, 1]) < 0)


def test_nose_width_grows_with_nasality():
    widths = []
    for nasality in np.linspace(-2.0, 2.0, 5):
        _, lm = toy_face.render_face(_speaker(nasality=nasality), np.random.default_rng(0))
        widths.append(np.linalg.norm(lm[35] - lm[31]))
    assert np.all(np.diff(widths) > 0)
    assert widths[-1] > 2.0 * widths[0]  # a large change, visible in VGG features


def test_face_width_grows_with_head_size():
    widths = []
    for head_size in np.linspace(-2.0, 2.0, 5):
        _, lm = toy_face.render_face(_speaker(head_size=head_size), np.random.default_rng(0))
        widths.append(np.linalg.norm(lm[16] - lm[0]))
    assert np.all(np.diff(widths) > 0)


def test_landmarks_are_the_drawn_geometry():
    # The nostrils are near-black and drawn inside the nose between landmarks 31 and 35.
    image, lm = toy_face.render_face(_speaker(nasality=1.0), np.random.default_rng(1))
    row = int(round(lm[30, 1] + 2.5))
    left, right = int(np.floor(lm[31, 0])), int(np.ceil(lm[35, 0]))
    dark = image[row - 1:row + 2, :, :].max(axis=(0, 2)) < 60
    assert dark[left:right + 1].any()
    assert not dark[:left - 8].any() and not dark[right + 8:].any()


def test_mean_template_and_other_sizes():
    template = toy_face.mean_landmarks_template()
    assert template.shape == (68, 2)
    image, lm = toy_face.render_face(_speaker(), np.random.default_rng(0), size=112)
    assert image.shape == (112, 112, 3)
    np.testing.assert_allclose(lm, template / 2, atol=6.0)  # only the nuisance differs
