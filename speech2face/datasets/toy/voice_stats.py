"""Voice statistics of the toy world's linear-probe self-check.

`voice_statistics` computes a few hand-made statistics (median f0, formants, band energies, …)
that a linear probe can use to check which attributes a voice carries (docs/toy_world.md).
"""

from typing import Tuple

import numpy as np
from scipy import fft, linalg, signal

from speech2face import audio

SAMPLE_RATE = audio.SAMPLE_RATE


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


def _lpc_formants(frame_autocorrs: np.ndarray, sr: int, order: int = 16) -> np.ndarray:
    """F1–F3 (Hz) from LPC on each frame's autocorrelation: [N, >= order + 1] -> [N, 3], NaN
    where not found. All frames at once: the normal equations as one batched solve of the
    Toeplitz systems, the predictor's roots as the eigenvalues of its companion matrices (what
    `np.roots` computes for one polynomial)."""
    r = np.array(frame_autocorrs[:, : order + 1], np.float64)
    out = np.full((len(r), 3), np.nan)
    ok = r[:, 0] > 0
    if not ok.any():
        return out
    r = r[ok] * np.exp(-0.5 * (2 * np.pi * 40.0 * np.arange(order + 1) / sr) ** 2)  # lag window
    r[:, 0] *= 1.0 + 1e-6
    lags = np.abs(np.arange(order)[:, None] - np.arange(order)[None, :])
    try:
        a = np.linalg.solve(r[:, lags], r[:, 1:, None])[..., 0]
    except np.linalg.LinAlgError:  # a singular frame: solve them one by one, skipping it
        a = np.full((len(r), order), np.nan)
        for i, row in enumerate(r):
            try:
                a[i] = linalg.solve_toeplitz(row[:-1], row[1:])
            except (linalg.LinAlgError, ValueError):
                pass
    solved = np.isfinite(a).all(axis=1)
    companion = np.zeros((len(a), order, order))
    companion[:, 0, :] = np.where(solved[:, None], a, 0.0)
    companion[:, np.arange(1, order), np.arange(order - 1)] = 1.0
    roots = np.linalg.eigvals(companion)
    freqs = np.angle(roots) * sr / (2 * np.pi)
    bws = -np.log(np.abs(roots) + 1e-12) * sr / np.pi
    keep = (np.imag(roots) > 0) & (freqs > 150) & (bws < 600) & solved[:, None]
    found = np.sort(np.where(keep, freqs, np.inf), axis=1)[:, :3]
    out[ok] = np.where(np.isfinite(found), found, np.nan)
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
    # Zero-padded to 2 × 640 = 1280 points (2^8·5, a fast size): enough for the autocorrelation
    # at every lag of a 640-sample frame to come out exact, without wrapping around.
    # In float32 (scipy.fft keeps it; numpy.fft computes in float64): the peak picking below
    # needs nowhere near float64's precision, and float32 transforms take a third of the time.
    nfft = 2 * _FRAME
    lowpass = signal.butter(4, 1000.0, fs=sr, output="sos")
    lp_frames = _frames(signal.sosfilt(lowpass, x).astype(np.float32)) * window.astype(np.float32)
    ac = fft.irfft(np.abs(fft.rfft(lp_frames, nfft)) ** 2, nfft)[:, :_FRAME]
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
    power = np.abs(fft.rfft(frames[spec_rows].astype(np.float32), 1024)) ** 2
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
        acs = fft.irfft(np.abs(fft.rfft(emph, nfft)) ** 2, nfft)  # float64: LPC needs it
        formants = _lpc_formants(acs, sr)
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
