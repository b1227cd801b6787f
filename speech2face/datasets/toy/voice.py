"""Voices of the toy world: a small Klatt-style source–filter synthesiser.

`synthesize_clip` turns a `toy_speakers.Speaker` into a speech-like waveform:
  glottal flow pulses at the speaker's f0 (per-period jitter and shimmer, an intonation contour)
  + aspiration noise (breathiness) → amplitude envelopes of random syllables and words
  → a cascade of second-order resonators (nasal pole, nasal zero, F1…F5 from a vowel table scaled
  by 1/vtl_scale, updated every few milliseconds) → fricative-like noise bursts
  → background noise at a random SNR → random peak gain.
The filter runs block by block with `scipy.signal.sosfilt`, carrying its state across blocks, so
a 5 s clip takes milliseconds. `voice_stats` measures what a voice carries.
"""


import numpy as np

from speech2face import audio
from scipy import signal

from speech2face.datasets.toy import speakers as toy_speakers

SAMPLE_RATE = audio.SAMPLE_RATE  # 16 kHz
_BLOCK = 80  # samples between filter-coefficient updates (5 ms)

# Reference vowel formants F1–F4 in Hz for an adult male voice (Peterson & Barney 1952 averages;
# F4 approximate). A speaker's formants are these divided by `vtl_scale`.
VOWEL_FORMANTS_HZ = np.array([
    [270, 2290, 3010, 3600],  # i  (beet)
    [390, 1990, 2550, 3500],  # ɪ  (bit)
    [530, 1840, 2480, 3500],  # ɛ  (bet)
    [660, 1720, 2410, 3450],  # æ  (bat)
    [730, 1090, 2440, 3400],  # ɑ  (father)
    [570, 840, 2410, 3350],   # ɔ  (bought)
    [440, 1020, 2240, 3350],  # ʊ  (book)
    [300, 870, 2240, 3350],   # u  (boot)
    [640, 1190, 2390, 3400],  # ʌ  (but)
    [490, 1350, 1690, 3300],  # ɝ  (bird)
], np.float64)
_F5_HZ = 4300.0
_FORMANT_BANDWIDTHS_HZ = np.array([70.0, 90.0, 140.0, 200.0, 260.0])
_NASAL_POLE_HZ = 270.0
_NASAL_BANDWIDTH_HZ = 100.0


# ----------------------------------------------------------------------------------------------
# Synthesis.


def _resonator_sos(freq: np.ndarray, bw: np.ndarray, sr: int) -> np.ndarray:
    """Klatt resonators with unit gain at DC: [..., 6] second-order sections."""
    c = -np.exp(-2.0 * np.pi * bw / sr)
    b = 2.0 * np.exp(-np.pi * bw / sr) * np.cos(2.0 * np.pi * freq / sr)
    a = 1.0 - b - c
    zeros = np.zeros_like(a)
    return np.stack([a, zeros, zeros, np.ones_like(a), -b, -c], axis=-1)


def _antiresonator_sos(freq: np.ndarray, bw: np.ndarray, sr: int) -> np.ndarray:
    """Klatt antiresonators (the inverse of `_resonator_sos`): [..., 6] sections."""
    c = -np.exp(-2.0 * np.pi * bw / sr)
    b = 2.0 * np.exp(-np.pi * bw / sr) * np.cos(2.0 * np.pi * freq / sr)
    a = 1.0 - b - c
    zeros = np.zeros_like(a)
    ones = np.ones_like(a)
    return np.stack([1.0 / a, -b / a, -c / a, ones, zeros, zeros], axis=-1)


def _plan_syllables(rng: np.random.Generator, duration_s: float, rate_hz: float):
    """Random words of 1–4 syllables separated by pauses.

    Returns float64 arrays (start_s, dur_s, onset_s, vowel, stress) per syllable: onset_s is the
    length of a noisy consonant onset (0 for none), vowel a row of VOWEL_FORMANTS_HZ, stress 0/1.
    """
    rows = []
    t = rng.uniform(0.05, 0.35)
    while t < duration_s - 0.12:
        n_syl = int(rng.integers(1, 5))
        stressed = int(rng.integers(0, n_syl))
        for k in range(n_syl):
            dur = rng.uniform(0.7, 1.35) / rate_hz
            onset = rng.uniform(0.05, 0.11) if rng.random() < 0.4 else 0.0
            rows.append((t, dur, onset, rng.integers(len(VOWEL_FORMANTS_HZ)), float(k == stressed)))
            t += dur
        t += rng.uniform(0.06, 0.25) if rng.random() < 0.75 else rng.uniform(0.3, 0.7)
    if not rows:  # a very short clip still gets one syllable
        rows.append((0.02, max(duration_s - 0.04, 0.02), 0.0, 0, 1.0))
    return tuple(np.array(col, np.float64) for col in zip(*rows))


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Moving Hann-window average along axis 0 with edge padding (keeps the length)."""
    if width < 2:
        return x
    w = np.hanning(width + 2)[1:-1]
    w /= w.sum()
    pad = width // 2
    xp = np.pad(x, [(pad, width - 1 - pad)] + [(0, 0)] * (x.ndim - 1), mode="edge")
    if x.ndim == 1:
        return np.convolve(xp, w, mode="valid")
    return np.stack([np.convolve(xp[:, j], w, mode="valid") for j in range(x.shape[1])], axis=1)


def _envelopes(plan, rng: np.random.Generator, n: int, sr: int):
    """Voicing and frication amplitude envelopes, float64 [n] each."""
    start, dur, onset, _, stress = plan
    voice_env = np.zeros(n)
    fric_env = np.zeros(n)
    for i in range(len(start)):
        s0 = int(start[i] * sr)
        s_on = min(int((start[i] + onset[i]) * sr), n)
        s1 = min(int((start[i] + dur[i]) * sr), n)
        if s1 - s_on > 4:  # the vowel: raised-cosine attack and decay
            m = s1 - s_on
            attack = min(int(0.025 * sr), m // 3)
            decay = min(int(0.05 * sr), m // 2)
            env = np.ones(m) * (1.0 + 0.35 * stress[i]) * np.exp(0.15 * rng.standard_normal())
            env[:attack] *= 0.5 - 0.5 * np.cos(np.pi * np.arange(attack) / attack)
            env[m - decay:] *= 0.5 + 0.5 * np.cos(np.pi * np.arange(decay) / decay)
            voice_env[s_on:s1] = np.maximum(voice_env[s_on:s1], env)
        if s_on - s0 > 4:  # a consonant onset
            fric_env[s0:s_on] = np.sin(np.pi * np.arange(s_on - s0) / (s_on - s0))
    return voice_env, fric_env


def _f0_contour(speaker, plan, rng, t_blocks, voiced_blocks, f0_clip, n, sr):
    """f0 in Hz per sample: word accents, phrase declination and a slow wander, scaled by the
    speaker's pitch range, with median f0_clip over the voiced blocks."""
    start, dur, _, _, stress = plan
    accent = np.zeros(len(t_blocks))
    for s_start, s_dur in zip(start[stress > 0], dur[stress > 0]):
        centre = s_start + 0.4 * s_dur
        accent += np.exp(-0.5 * ((t_blocks - centre) / 0.08) ** 2) * rng.uniform(0.5, 1.0)
    wander = _smooth(rng.standard_normal(len(t_blocks)), 60)
    wander /= np.std(wander) + 1e-9
    declination = -0.5 * t_blocks / max(n / sr, 1e-3)
    semis = speaker.pitch_range_semitones * (accent + declination + 0.3 * wander)
    semis -= np.median(semis[voiced_blocks]) if voiced_blocks.any() else np.median(semis)
    return np.interp(np.arange(n) / sr, t_blocks, f0_clip * 2.0 ** (semis / 12.0))


def _glottal_source(speaker, rng, f0, voice_env, sr):
    """Radiated glottal excitation plus aspiration noise, gated by voice_env: float64 [n].

    Rosenberg flow pulses with per-period jitter (period length) and shimmer (amplitude); the
    flow's derivative is the excitation (glottal source + lip radiation).
    """
    n_periods = int(np.sum(f0) / sr * 1.2) + 4
    period_jitter = 1.0 + speaker.jitter * rng.standard_normal(n_periods)
    period_amp = np.maximum(1.0 + speaker.shimmer * rng.standard_normal(n_periods), 0.2)
    phase0 = np.cumsum(f0 / sr)
    phase = np.cumsum(f0 * period_jitter[np.minimum(phase0.astype(int), n_periods - 1)] / sr)
    k = np.minimum(phase.astype(int), n_periods - 1)
    open_q = 0.5 + 0.3 * speaker.breathiness
    t_open, t_close = 0.66 * open_q, 0.34 * open_q
    grid = np.linspace(0.0, 1.0, 1025)  # the pulse shape, tabulated once per clip
    shape = np.where(grid < t_open, 0.5 - 0.5 * np.cos(np.pi * grid / t_open),
                     np.where(grid < t_open + t_close,
                              np.cos(0.5 * np.pi * (grid - t_open) / t_close), 0.0))
    flow = np.interp(phase - np.floor(phase), grid, shape) * period_amp[k]
    source = np.diff(flow, prepend=0.0)
    # Breathy voices lose high-frequency harmonics (Klatt's spectral tilt) and gain aspiration,
    # which is louder while the glottis is open.
    tilt = 0.15 + 0.55 * speaker.breathiness
    source = signal.lfilter([1.0 - tilt], [1.0, -tilt], source)
    level = (np.sqrt(np.mean(source ** 2)) + 1e-12) * (0.05 + 0.9 * speaker.breathiness ** 2)
    on = voice_env > 0
    source[on] += rng.standard_normal(int(on.sum()), np.float32) * (0.3 + flow[on]) * level
    return source * voice_env


def _vocal_tract(speaker, plan, rng, excitation, t_blocks, sr):
    """Filters the excitation through the time-varying tract: nasal pole, nasal zero, F1–F5."""
    start, _, _, vowel, _ = plan
    n, n_blocks, n_syl = len(excitation), len(t_blocks), len(start)
    # Formant targets per syllable (with a little per-syllable variation), smoothed into
    # transitions, scaled by the speaker's tract length.
    idx = np.clip(np.searchsorted(start, t_blocks, side="right") - 1, 0, n_syl - 1)
    syl_perturb = np.exp(0.04 * rng.standard_normal((n_syl, 4)))
    formants = VOWEL_FORMANTS_HZ[vowel.astype(int)][idx] * syl_perturb[idx]
    formants = _smooth(formants, max(int(0.04 * sr / _BLOCK), 1)) / speaker.vtl_scale
    f5 = np.full((n_blocks, 1), _F5_HZ / speaker.vtl_scale)
    formants = np.concatenate([formants, f5], axis=1)
    # Formants too close to Nyquist (low sample rates) are left out for the whole clip.
    keep = formants.max(axis=0) < 0.42 * sr
    formants = formants[:, keep]
    bws = np.broadcast_to(_FORMANT_BANDWIDTHS_HZ[keep], formants.shape).copy()
    # Nasal coupling: the zero moves away from the pole (Klatt), F1 widens and rises a little.
    c = speaker.nasal_coupling
    bws[:, 0] *= 1.0 + 1.5 * c
    formants[:, 0] += 60.0 * c
    nasal = np.full((n_blocks, 1), 1.0)
    sos = np.concatenate([
        _resonator_sos(nasal * _NASAL_POLE_HZ, nasal * _NASAL_BANDWIDTH_HZ, sr),
        _antiresonator_sos(nasal * _NASAL_POLE_HZ * (1.0 + 0.9 * c),
                           nasal * _NASAL_BANDWIDTH_HZ, sr),
        _resonator_sos(formants, bws, sr),
    ], axis=1)
    # One sosfilt call per run of blocks with (nearly) the same coefficients, carrying the filter
    # state across: inside a syllable and in pauses the tract is steady, so only transitions cost
    # a call per 5 ms block.
    change = np.any(np.abs(np.diff(sos, axis=0)) > 1e-5, axis=(1, 2))
    seg_starts = np.concatenate([[0], np.nonzero(change)[0] + 1, [n_blocks]])
    speech = np.zeros(n)
    zi = np.zeros((sos.shape[1], 2))
    for b0, b1 in zip(seg_starts[:-1], seg_starts[1:]):
        s0, s1 = b0 * _BLOCK, min(b1 * _BLOCK, n)
        speech[s0:s1], zi = signal.sosfilt(sos[b0], excitation[s0:s1], zi=zi)
    return speech


def _frication(speaker, rng, fric_env, speech_rms, sr):
    """Consonant-like noise bursts, band-passed around a peak scaled with the tract: [n]."""
    fric = np.zeros(len(fric_env))
    on = np.nonzero(fric_env)[0]
    if not len(on):
        return fric
    centre = min(rng.uniform(3000.0, 5500.0) / speaker.vtl_scale, 0.4 * sr)
    band = signal.butter(2, [0.6 * centre, min(1.5 * centre, 0.49 * sr)], "bandpass", fs=sr,
                         output="sos")
    fric[on[0]:on[-1] + 1] = rng.standard_normal(on[-1] + 1 - on[0], np.float32)
    fric = signal.sosfilt(band, fric) * fric_env
    fric_rms = np.sqrt(np.mean(fric[fric_env > 0.1] ** 2)) if (fric_env > 0.1).any() else 1.0
    return fric * rng.uniform(0.1, 0.3) * speech_rms / (fric_rms + 1e-12)


def synthesize_clip(speaker: toy_speakers.Speaker, rng: np.random.Generator, duration_s: float,
                    sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Synthesises one clip of the speaker talking.

    Args:
      speaker: the toy speaker (its f0, vtl_scale, nasality, … set the voice).
      rng: random generator for everything that varies between clips (words, vowels, intonation,
        noise, gain); advanced by this call.
      duration_s: clip length in seconds.
      sample_rate: in Hz.

    Returns:
      float32 [round(duration_s * sample_rate)] waveform with its peak in [0.5, 0.9].
    """
    sr = int(sample_rate)
    n = int(round(duration_s * sr))
    if n <= 0:
        raise ValueError(f"synthesize_clip: duration_s={duration_s} gives no samples.")
    # Per-clip variation of the speaker's voice (mood, effort).
    rate = speaker.syllable_rate_hz * np.exp(0.06 * rng.standard_normal())
    f0_clip = speaker.f0_hz * np.exp(0.03 * rng.standard_normal())
    plan = _plan_syllables(rng, n / sr, rate)
    voice_env, fric_env = _envelopes(plan, rng, n, sr)

    t_blocks = (np.arange(-(-n // _BLOCK)) + 0.5) * _BLOCK / sr  # control rate: one per block
    voiced_blocks = voice_env[np.minimum((t_blocks * sr).astype(int), n - 1)] > 0
    f0 = _f0_contour(speaker, plan, rng, t_blocks, voiced_blocks, f0_clip, n, sr)
    excitation = _glottal_source(speaker, rng, f0, voice_env, sr)
    speech = _vocal_tract(speaker, plan, rng, excitation, t_blocks, sr)
    active = voice_env > 0.1
    speech_power = np.mean(speech[active] ** 2) if active.any() else np.mean(speech ** 2)
    speech_power = max(speech_power, 1e-12)  # a clip too short for any voice is noise only
    speech += _frication(speaker, rng, fric_env, np.sqrt(speech_power), sr)

    # Background noise of a random colour at a random SNR (15–35 dB over the active speech).
    colour = rng.uniform(0.3, 0.97)  # from white-ish to brown-ish
    noise = signal.lfilter([1.0], [1.0, -colour], rng.standard_normal(n, np.float32))
    noise *= np.sqrt(speech_power / (np.mean(noise ** 2) + 1e-20)) * 10.0 ** (
        -rng.uniform(15.0, 35.0) / 20.0)
    x = speech + noise
    x *= rng.uniform(0.5, 0.9) / (np.max(np.abs(x)) + 1e-12)
    return x.astype(np.float32)
