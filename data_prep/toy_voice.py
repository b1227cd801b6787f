"""Voices of the toy world: a small Klatt-style source–filter synthesiser and voice statistics.

`synthesize_clip` turns a `toy_speakers.Speaker` into a speech-like waveform:
  glottal flow pulses at the speaker's f0 (per-period jitter and shimmer, an intonation contour)
  + aspiration noise (breathiness) → amplitude envelopes of random syllables and words
  → a cascade of second-order resonators (nasal pole, nasal zero, F1…F5 from a vowel table scaled
  by 1/vtl_scale, updated every few milliseconds) → fricative-like noise bursts
  → background noise at a random SNR → random peak gain.
The filter runs block by block with `scipy.signal.sosfilt`, carrying its state across blocks, so
a 5 s clip takes milliseconds.

`voice_statistics` computes a few hand-made statistics (median f0, formants, band energies, …)
that a linear probe can use to check which attributes a voice carries.
"""

from typing import Tuple

import numpy as np

from speech2face import audio
from scipy import linalg, signal

from data_prep import toy_speakers

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


# ----------------------------------------------------------------------------------------------
# Statistics for the linear-probe self-check.

_BANDS_HZ = ((80, 300), (300, 600), (600, 1000), (1000, 1600), (1600, 2500), (2500, 3500),
             (3500, 5000), (5000, 8000))
VOICE_STAT_NAMES: Tuple[str, ...] = (
    "log_f0_median",       # log Hz of the median f0 over voiced frames (autocorrelation)
    "f0_std_semitones",    # spread of f0 over voiced frames (from the interquartile range)
    "voiced_fraction",     # voiced frames / all frames
    "periodicity",         # mean normalised autocorrelation peak over voiced frames
    "spectral_centroid_khz",  # of the long-term spectrum of voiced frames
    "centroid_1k_5k_khz",  # the same within 1–5 kHz (F2–F4 region and aspiration noise)
    "log_f1", "log_f2", "log_f3",  # medians of LPC formant estimates, log Hz
) + tuple(f"band_{lo}_{hi}" for lo, hi in _BANDS_HZ) + (  # log10 band share of LTAS power
    "modulation_rate_hz",  # centroid of the energy envelope's 1.5–12 Hz modulation spectrum
)
# Values used where a statistic cannot be measured (silence, no voiced frames): typical ones, so
# that a failed measurement is not an outlier for a linear probe.
_NEUTRAL_STATS = {"log_f0_median": float(np.log(150.0)), "log_f1": float(np.log(500.0)),
                  "log_f2": float(np.log(1500.0)), "log_f3": float(np.log(2500.0)),
                  "spectral_centroid_khz": 1.0, "centroid_1k_5k_khz": 2.0,
                  "modulation_rate_hz": 4.0}
_FRAME = 640  # 40 ms: long enough for two periods at 60 Hz
_HOP = 160


def _frames(x: np.ndarray) -> np.ndarray:
    if len(x) < _FRAME:
        x = np.pad(x, (0, _FRAME - len(x)))
    num = 1 + (len(x) - _FRAME) // _HOP
    return np.lib.stride_tricks.sliding_window_view(x, _FRAME)[::_HOP][:num]


def _lpc_formants(frame_autocorr: np.ndarray, sr: int, order: int = 16) -> np.ndarray:
    """F1–F3 (Hz) from LPC on one frame's autocorrelation; NaN where not found."""
    r = frame_autocorr[: order + 1]
    if r[0] <= 0:
        return np.full(3, np.nan)
    r = r * np.exp(-0.5 * (2 * np.pi * 40.0 * np.arange(order + 1) / sr) ** 2)  # lag window
    r[0] *= 1.0 + 1e-6
    try:
        a = linalg.solve_toeplitz(r[:-1], r[1:])
    except (linalg.LinAlgError, ValueError):
        return np.full(3, np.nan)
    roots = np.roots(np.concatenate([[1.0], -a]))
    roots = roots[np.imag(roots) > 0]
    freqs = np.angle(roots) * sr / (2 * np.pi)
    bws = -np.log(np.abs(roots) + 1e-12) * sr / np.pi
    freqs = np.sort(freqs[(freqs > 150) & (bws < 600)])
    out = np.full(3, np.nan)
    out[: min(3, len(freqs))] = freqs[:3]
    return out


def voice_statistics(waveform: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Hand-made voice statistics for linear probes (see VOICE_STAT_NAMES).

    Args:
      waveform: float [n] mono audio.
      sample_rate: in Hz.

    Returns:
      float32 [len(VOICE_STAT_NAMES)], always finite; statistics that cannot be measured (no voiced
      frames, silence) take a fixed typical value (0 for fractions and band shares).
    """
    sr = int(sample_rate)
    x = np.nan_to_num(np.asarray(waveform, np.float64).reshape(-1))
    x = x - np.mean(x) if len(x) else np.zeros(_FRAME)
    stats = dict.fromkeys(VOICE_STAT_NAMES, 0.0)
    stats.update(_NEUTRAL_STATS)
    window = np.hanning(_FRAME)
    frames = _frames(x) * window
    energy_db = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-12)
    peak_db = np.percentile(energy_db, 95)
    if peak_db < -90:  # silence
        return np.array([stats[name] for name in VOICE_STAT_NAMES], np.float32)
    active = energy_db > max(np.percentile(energy_db, 10) + 6.0, peak_db - 35.0)
    if not active.any():  # stationary sound (steady noise, one frame): every frame counts
        active = np.ones_like(active)

    # Pitch: normalised autocorrelation of the low-passed signal, corrected for the window.
    nfft = 2048
    lowpass = signal.butter(4, 1000.0, fs=sr, output="sos")
    lp_frames = _frames(signal.sosfilt(lowpass, x)) * window
    ac = np.fft.irfft(np.abs(np.fft.rfft(lp_frames, nfft)) ** 2, nfft)[:, :_FRAME]
    win_ac = np.fft.irfft(np.abs(np.fft.rfft(window, nfft)) ** 2, nfft)[:_FRAME]
    nacf = ac / (ac[:, :1] + 1e-12) / (win_ac / win_ac[0])
    lo, hi = int(sr / 450), int(sr / 60)
    seg = nacf[:, lo - 1:hi + 2]
    mid = seg[:, 1:-1]
    best = mid.max(axis=1)
    is_peak = (mid > seg[:, :-2]) & (mid >= seg[:, 2:]) & (mid >= 0.85 * best[:, None])
    first = np.argmax(is_peak, axis=1)
    voiced = active & (best > 0.5) & is_peak.any(axis=1)
    stats["voiced_fraction"] = float(np.mean(voiced))
    if voiced.any():
        rows = np.nonzero(voiced)[0]
        y0, y1, y2 = (seg[rows, first[rows]], seg[rows, first[rows] + 1],
                      seg[rows, first[rows] + 2])
        denom = y0 - 2 * y1 + y2
        shift = np.where(np.abs(denom) > 1e-9, 0.5 * (y0 - y2) / np.where(denom == 0, 1, denom), 0)
        lag = lo + first[rows] + np.clip(shift, -0.5, 0.5)
        f0 = sr / lag
        med = np.median(f0)
        stats["log_f0_median"] = float(np.log(med))
        q25, q75 = np.percentile(12 * np.log2(f0 / med), [25, 75])
        stats["f0_std_semitones"] = float((q75 - q25) / 1.349)  # robust to octave errors
        stats["periodicity"] = float(np.mean(best[rows]))
    spec_rows = voiced if voiced.any() else active

    # Long-term average spectrum of voiced (else active) frames: centroid and band shares.
    power = np.abs(np.fft.rfft(frames[spec_rows], 1024)) ** 2
    ltas = power.mean(axis=0)
    freqs = np.fft.rfftfreq(1024, 1.0 / sr)
    total = ltas[freqs >= 80].sum() + 1e-20
    stats["spectral_centroid_khz"] = float(np.sum(freqs * ltas) / (ltas.sum() + 1e-20) / 1000)
    mid_band = (freqs >= 1000) & (freqs <= 5000)
    stats["centroid_1k_5k_khz"] = float(
        np.sum(freqs[mid_band] * ltas[mid_band]) / (ltas[mid_band].sum() + 1e-20) / 1000)
    for lo_hz, hi_hz in _BANDS_HZ:
        band = ltas[(freqs >= lo_hz) & (freqs < hi_hz)].sum()
        stats[f"band_{lo_hz}_{hi_hz}"] = float(np.log10(band / total + 1e-10))

    # Formants: LPC on pre-emphasised voiced frames (at most 120 of them, evenly spaced).
    if voiced.any():
        rows = np.nonzero(voiced)[0]
        rows = rows[np.linspace(0, len(rows) - 1, min(len(rows), 120)).astype(int)]
        emph = _frames(np.append(x[0], x[1:] - 0.95 * x[:-1]))[rows] * window
        acs = np.fft.irfft(np.abs(np.fft.rfft(emph, nfft)) ** 2, nfft)
        formants = np.array([_lpc_formants(a, sr) for a in acs])
        for j, name in enumerate(("log_f1", "log_f2", "log_f3")):
            col = formants[:, j]
            col = col[np.isfinite(col)]
            if len(col):
                stats[name] = float(np.log(np.median(col)))

    # Syllable rate: where the energy envelope's modulation spectrum sits.
    env = np.sqrt(np.mean(frames ** 2, axis=1))
    if len(env) >= 32:
        env = env - env.mean()
        mod = np.abs(np.fft.rfft(env * np.hanning(len(env)), 1024)) ** 2
        mod_f = np.fft.rfftfreq(1024, _HOP / sr)
        sel = (mod_f >= 1.5) & (mod_f <= 12.0)
        if mod[sel].sum() > 0:
            stats["modulation_rate_hz"] = float(np.sum(mod_f[sel] * mod[sel]) / mod[sel].sum())
    out = np.array([stats[name] for name in VOICE_STAT_NAMES], np.float32)
    return np.where(np.isfinite(out), out, 0.0).astype(np.float32)
