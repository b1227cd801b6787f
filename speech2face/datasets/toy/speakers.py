"""Speakers of the toy world: latent attributes and the physical parameters they drive.

A toy speaker is a handful of latent attributes, each a standard-normal-ish scalar. Some are
carried by both the voice and the face (the hidden causes that make voice→face learnable), some
only by the voice and some only by the face (so that the mapping is one-to-many, like the real
one). `toy_voice` reads the voice parameters derived here; `toy_face` derives its geometry and
colours from the same latents.
"""

import dataclasses
from typing import Dict, List, Mapping, Tuple

import numpy as np
from scipy import special

SPEAKERS_FILE = "speakers.json"  # per speaker of a toy world: split and latents

CARRIERS = ("both", "voice", "face")


@dataclasses.dataclass(frozen=True)
class Attribute:
    """One latent attribute.

    Attributes:
      name: key in `Speaker.latents`.
      carried_by: "both", "voice" or "face": which modality shows it.
      description: what it drives in the voice and/or the face.
    """

    name: str
    carried_by: str
    description: str

    def __post_init__(self):
        if self.carried_by not in CARRIERS:
            raise ValueError(f"Attribute {self.name!r}: carried_by must be one of {CARRIERS}, "
                             f"got {self.carried_by!r}.")


ATTRIBUTES: Tuple[Attribute, ...] = (
    # Shared: the hidden causes linking voice and face.
    Attribute("head_size", "both",
              "vocal-tract length (all formants scale by 1/vtl_scale); face width and height"),
    Attribute("masculinity", "both",
              "f0 (strongly) and a little vocal-tract length; jaw width/squareness, brow "
              "thickness, stubble, lip colour and most of the hair length. Bimodal, like sex, "
              "but continuous"),
    Attribute("nasality", "both",
              "nasal pole/zero coupling and wider F1 bandwidth; nose width, length and nostril "
              "size (large in the image)"),
    Attribute("age", "both",
              "jitter, shimmer and much of the breathiness; grey hair and forehead lines"),
    # Voice only.
    Attribute("speaking_rate", "voice", "syllables per second"),
    Attribute("intonation", "voice", "pitch range of the intonation contour (semitones)"),
    Attribute("breathiness", "voice", "aspiration noise and open quotient of the glottal pulse"),
    # Face only.
    Attribute("hair_hue", "face", "hair colour (hue)"),
    Attribute("hair_length", "face",
              "how far the hair falls below the ears (the part masculinity leaves open)"),
    Attribute("skin_tone", "face", "skin lightness (light to dark)"),
    Attribute("background", "face", "background hue"),
    Attribute("eye_color", "face", "iris hue"),
)
ATTRIBUTE_NAMES: Tuple[str, ...] = tuple(a.name for a in ATTRIBUTES)
SHARED_ATTRIBUTES: Tuple[str, ...] = tuple(a.name for a in ATTRIBUTES if a.carried_by == "both")
VOICE_ATTRIBUTES: Tuple[str, ...] = tuple(a.name for a in ATTRIBUTES if a.carried_by != "face")
FACE_ATTRIBUTES: Tuple[str, ...] = tuple(a.name for a in ATTRIBUTES if a.carried_by != "voice")

# Masculinity is a two-component mixture (modes at ±1, spread 0.45) so the population has two
# clusters, like sex, with a continuum between them.
MASCULINITY_MODE = 1.0
MASCULINITY_SPREAD = 0.45


@dataclasses.dataclass(frozen=True)
class Speaker:
    """A toy speaker: latents plus the voice parameters derived from them.

    Attributes:
      speaker_id: e.g. "toy-00042".
      latents: attribute name → value (standard-normal-ish; masculinity is a ±1 mixture).
      f0_hz: median fundamental frequency of the speaker's voice.
      vtl_scale: vocal-tract length relative to the reference adult male; formant frequencies
        are the reference table's divided by this.
      nasal_coupling: in [0, 1]; separates the nasal zero from the nasal pole and widens F1.
      jitter: per-period relative standard deviation of the glottal period.
      shimmer: per-period relative standard deviation of the glottal pulse amplitude.
      breathiness: in [0, 1]; aspiration noise level and glottal open quotient.
      syllable_rate_hz: mean syllables per second inside words.
      pitch_range_semitones: scale of the intonation contour.
    """

    speaker_id: str
    latents: Dict[str, float]
    f0_hz: float
    vtl_scale: float
    nasal_coupling: float
    jitter: float
    shimmer: float
    breathiness: float
    syllable_rate_hz: float
    pitch_range_semitones: float


def soft_clip(x: float, limit: float = 3.0) -> float:
    """Smoothly limits x to (-limit, limit) so that extreme draws stay physically sensible."""
    return float(limit * np.tanh(x / limit))


def speaker_from_latents(speaker_id: str, latents: Mapping[str, float]) -> Speaker:
    """Builds a Speaker whose voice parameters follow deterministically from `latents`.

    Args:
      speaker_id: identifier string.
      latents: a value for every name in ATTRIBUTE_NAMES (missing names raise a KeyError).

    Returns:
      The Speaker.
    """
    missing = [n for n in ATTRIBUTE_NAMES if n not in latents]
    if missing:
        raise KeyError(f"speaker_from_latents: missing latents {missing}.")
    z = {n: soft_clip(float(latents[n])) for n in ATTRIBUTE_NAMES}
    # f0: ~120 Hz for the masculine mode, ~215 Hz for the feminine one (a factor 1.8 apart).
    f0_hz = 160.0 * np.exp(-0.29 * z["masculinity"] - 0.03 * z["age"])
    # Head size sets vocal-tract length; masculinity adds a little (longer male tracts).
    vtl_scale = np.exp(0.18 * z["head_size"] + 0.04 * z["masculinity"]) / 1.06
    nasal_coupling = special.expit(1.3 * z["nasality"])
    age01 = special.expit(1.2 * z["age"])
    jitter = 0.003 + 0.04 * age01
    shimmer = 0.02 + 0.25 * age01
    breathiness = special.expit(1.0 * z["breathiness"] + 1.5 * z["age"] - 0.3)
    syllable_rate_hz = 4.5 * np.exp(0.2 * z["speaking_rate"])
    pitch_range_semitones = 2.5 * np.exp(0.35 * z["intonation"])
    return Speaker(
        speaker_id=speaker_id,
        latents={n: float(latents[n]) for n in ATTRIBUTE_NAMES},
        f0_hz=float(f0_hz),
        vtl_scale=float(vtl_scale),
        nasal_coupling=float(nasal_coupling),
        jitter=float(jitter),
        shimmer=float(shimmer),
        breathiness=float(breathiness),
        syllable_rate_hz=float(syllable_rate_hz),
        pitch_range_semitones=float(pitch_range_semitones),
    )


def sample_latents(rng: np.random.Generator) -> Dict[str, float]:
    """Draws one speaker's latents: standard normal, masculinity from a ±1 mixture."""
    latents = {}
    for name in ATTRIBUTE_NAMES:
        if name == "masculinity":
            sign = 1.0 if rng.random() < 0.5 else -1.0
            latents[name] = float(sign * MASCULINITY_MODE
                                  + MASCULINITY_SPREAD * rng.standard_normal())
        else:
            latents[name] = float(rng.standard_normal())
    return latents


def speaker_id_for(index: int) -> str:
    """The toy speaker id for an index, e.g. 42 → "toy-00042"."""
    return f"toy-{index:05d}"


def sample_speakers(num_speakers: int, rng: np.random.Generator,
                    first_index: int = 0) -> List[Speaker]:
    """Samples `num_speakers` independent speakers; deterministic given the rng state.

    Args:
      num_speakers: how many speakers.
      rng: the random generator (advanced by this call).
      first_index: index of the first speaker, used in the ids ("toy-%05d").

    Returns:
      A list of Speakers with ids toy-{first_index:05d}, ... in order.
    """
    if num_speakers < 0:
        raise ValueError(f"num_speakers must be >= 0, got {num_speakers}.")
    return [speaker_from_latents(speaker_id_for(first_index + i), sample_latents(rng))
            for i in range(num_speakers)]


def latent_matrix(speakers: List[Speaker], names: Tuple[str, ...] = ATTRIBUTE_NAMES) -> np.ndarray:
    """Stacks the speakers' latents into float32 [num_speakers, len(names)] (for probes)."""
    return np.array([[s.latents[n] for n in names] for s in speakers], np.float32).reshape(
        len(speakers), len(names))
