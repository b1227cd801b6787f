"""Faces of the toy world: simple cartoon faces drawn from a speaker's latents, with landmarks.

`render_face` draws a frontal face crop (face centred, about 60–75 % of the width) with Pillow at
twice the resolution and downsamples it (LANCZOS) for anti-aliasing. The 68 landmarks follow
dlib's convention and ARE the drawn geometry: the face outline passes through the jaw points
(0–16) and closes with a forehead arc, the eyes, brows, nose and lips are curves through their
points. Landmarks are in output pixel coordinates (x, y), pixel centres at integers, like dlib's.

What the latents drive (see toy_speakers.ATTRIBUTES):
  head_size → face width and height; masculinity → jaw squareness/width, brow thickness,
  stubble, lip colour and (mostly) hair length; nasality → nose width, length and nostril size
  (large on purpose: random VGG features see large changes best); age → grey hair and forehead
  lines; hair_hue, hair_length, skin_tone, background, eye_color → what their names say, the
  colours over narrow ranges.
Per render, a small random shift, scale, in-plane rotation and brightness change are applied to
the image and the landmarks alike.
"""

import colorsys
import dataclasses
import functools
from typing import Tuple

import numpy as np

from speech2face import records
from PIL import Image, ImageChops, ImageDraw
from scipy import special

from speech2face.datasets.toy import speakers as toy_speakers

FACE_SIZE = records.FACE_SIZE  # 224
_REF = 224.0  # geometry is designed in pixels of a 224×224 image and scaled to `size`
_SUPERSAMPLE = 2

# Per-render nuisance ranges. Kept small: trained VGG-Face maps renders of one identity close
# together, but the toy world's random VGG-Face does not (with ±3 px, ±3 %, ±4° and ±8 %
# brightness, the two renders of a speaker differed by 26-44 % of the features' total variance,
# as much as the shared attributes explained).
MAX_SHIFT_PX = 1.0  # at 224
MAX_SCALE_CHANGE = 0.01
MAX_ROTATION_DEG = 1.5
MAX_BRIGHTNESS_CHANGE = 0.03

# Face-only colours vary over a narrow band: random VGG features are dominated by large colour
# areas, which a voice cannot know; at full range they left the shared attributes too small a
# share of the features for voice→face retrieval (docs/toy_world.md).
HAIR_SATURATION = 0.2
IRIS_SATURATION = 0.2
BACKGROUND_SATURATION = 0.1
SKIN_RANGE = 0.4  # share of the light↔dark skin range used, centred on its middle


@dataclasses.dataclass(frozen=True)
class FaceParams:
    """Geometry (pixels at 224×224, before nuisance) and colours (RGB 0–255) of one face."""

    face_width: float
    face_height: float  # jaw start (level of point 0) to chin
    forehead_height: float
    jaw_exponent: float  # superellipse exponent of the jaw: 2 round … 4.5 square
    brow_thickness: float
    stubble: float  # 0..1 darkening of the beard area (lower face)
    nose_width: float
    nose_length: float
    mouth_width: float
    hair_length: float  # how far the hair falls below point 0
    grey: float  # 0..1 share of grey in the hair
    skin: Tuple[float, float, float]
    hair: Tuple[float, float, float]
    iris: Tuple[float, float, float]
    lips: Tuple[float, float, float]
    background: Tuple[float, float, float]


def _hsv(h: float, s: float, v: float) -> Tuple[float, float, float]:
    return tuple(255.0 * c for c in colorsys.hsv_to_rgb(h % 1.0, s, v))


def _mix(a, b, t: float):
    return tuple((1.0 - t) * x + t * y for x, y in zip(a, b))


def face_params(speaker: toy_speakers.Speaker) -> FaceParams:
    """Derives the face's geometry and colours from the speaker's latents (deterministic)."""
    z = {k: toy_speakers.soft_clip(v) for k, v in speaker.latents.items()}
    masc = special.expit(1.2 * z["masculinity"])
    head = np.exp(0.12 * z["head_size"])
    face_width = 148.0 * head * (0.95 + 0.1 * masc)
    age = special.expit(1.5 * z["age"])
    skin_dark = 0.5 + SKIN_RANGE * (0.5 - special.expit(1.2 * z["skin_tone"]))
    hair = _hsv(special.ndtr(z["hair_hue"]), HAIR_SATURATION, 0.5)
    skin = _mix((250.0, 218.0, 192.0), (98.0, 62.0, 44.0), skin_dark)
    grey = float(age)
    return FaceParams(
        face_width=float(face_width),
        face_height=float(85.0 * np.exp(0.10 * z["head_size"]) * (0.96 + 0.08 * masc)),
        forehead_height=float(78.0 * np.exp(0.10 * z["head_size"])),
        jaw_exponent=float(2.0 + 2.5 * masc),
        brow_thickness=float(2.5 + 8.0 * masc),
        stubble=float(masc ** 2),
        # Wide noses show best in random VGG features; bounded so that it stays inside the face.
        nose_width=float(0.25 * face_width * np.exp(0.5 * 2.2 * np.tanh(z["nasality"] / 2.2))),
        nose_length=float(40.0 * np.exp(0.15 * z["nasality"])),
        mouth_width=float(0.36 * face_width),
        # Mostly sex-linked, like hair length in most populations, with a face-only spread.
        hair_length=float(8.0 + 140.0 * special.expit(0.7 * z["hair_length"]
                                                      - 2.0 * z["masculinity"])),
        grey=grey,
        skin=skin,
        hair=_mix(hair, (205.0, 205.0, 205.0), 0.85 * grey),
        iris=_hsv(special.ndtr(z["eye_color"]), IRIS_SATURATION, 0.55),
        lips=_mix(skin, (190, 40, 60), 0.2 + 0.5 * (1.0 - masc)),
        background=_hsv(special.ndtr(z["background"]), BACKGROUND_SATURATION, 0.85),
    )


# ----------------------------------------------------------------------------------------------
# Geometry.


def _catmull_rom(points: np.ndarray, closed: bool, samples: int = 6) -> np.ndarray:
    """A Catmull-Rom curve through `points` [k, 2] (passes through every point)."""
    p = np.asarray(points, np.float64)
    if closed:
        ext = np.concatenate([p[-1:], p, p[:2]])
    else:
        ext = np.concatenate([2 * p[:1] - p[1:2], p, 2 * p[-1:] - p[-2:-1]])
    p0, p1, p2, p3 = ext[:-3], ext[1:-2], ext[2:-1], ext[3:]
    t = np.linspace(0.0, 1.0, samples, endpoint=False)[None, :, None]
    curve = 0.5 * (2 * p1[:, None] + (p2 - p0)[:, None] * t
                   + (2 * p0 - 5 * p1 + 4 * p2 - p3)[:, None] * t ** 2
                   + (-p0 + 3 * p1 - 3 * p2 + p3)[:, None] * t ** 3)
    curve = curve.reshape(-1, 2)
    return curve if closed else np.concatenate([curve, p[-1:]])


def _ellipse(cx, cy, rx, ry, n=48, start=0.0, stop=2 * np.pi) -> np.ndarray:
    a = np.linspace(start, stop, n)
    return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], axis=1)


_CX, _Y0 = 112.0, 104.0  # face centre x; y of jaw points 0 and 16 (a little below the eyes)


def _landmarks(fp: FaceParams) -> np.ndarray:
    """The 68 dlib landmarks of the canonical (un-jittered) face, float64 [68, 2] at 224."""
    lm = np.zeros((68, 2))
    half_w, height = fp.face_width / 2, fp.face_height
    # Jaw 0–16: the lower half of a superellipse, resampled to equal arc length like dlib's.
    a = np.linspace(0.0, np.pi, 400)
    n = fp.jaw_exponent
    cos, sin = np.cos(a), np.sin(a)
    curve = np.stack([_CX - half_w * np.sign(cos) * np.abs(cos) ** (2 / n),
                      _Y0 + height * sin ** (2 / n)], axis=1)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))])
    targets = np.linspace(0.0, arc[-1], 17)
    lm[0:17, 0] = np.interp(targets, arc, curve[:, 0])
    lm[0:17, 1] = np.interp(targets, arc, curve[:, 1])

    y_eye = _Y0 - 6.0
    eye_dx, eye_a, eye_b = 0.225 * fp.face_width, 0.10 * fp.face_width, 7.0
    # Brows 17–21 (subject's right = image left, outer → inner), 22–26 (inner → outer).
    bx = np.linspace(-1.25, 0.85, 5)
    by = y_eye - 17.0 - 5.0 * np.sin(np.linspace(0.25, 2.6, 5))
    lm[17:22] = np.stack([_CX - eye_dx + bx * eye_a, by], axis=1)
    lm[22:27] = np.stack([_CX + eye_dx - bx[::-1] * eye_a, by[::-1]], axis=1)
    # Nose bridge 27–30 (top → tip) and base 31–35 (image left → right).
    tip_y = y_eye + fp.nose_length
    lm[27:31] = np.stack([np.full(4, _CX), np.linspace(y_eye - 2.0, tip_y, 4)], axis=1)
    nw = fp.nose_width
    lm[31:36] = np.stack([_CX + nw * np.array([-0.5, -0.25, 0.0, 0.25, 0.5]),
                          tip_y + np.array([4.0, 7.0, 8.0, 7.0, 4.0])], axis=1)
    # Eyes: 36 outer corner, 37–38 upper lid, 39 inner corner, 40–41 lower lid; 42–47 mirrored.
    ex = np.array([-1.0, -0.35, 0.35, 1.0, 0.35, -0.35]) * eye_a
    ey = np.array([0.0, -1.0, -1.0, 0.0, 0.8, 0.8]) * eye_b
    lm[36:42] = np.stack([_CX - eye_dx + ex, y_eye + ey], axis=1)
    lm[42:48] = np.stack([_CX + eye_dx - ex[[3, 2, 1, 0, 5, 4]], y_eye + ey[[3, 2, 1, 0, 5, 4]]],
                         axis=1)
    # Mouth: outer 48–59 (left corner, upper lip → right corner, lower lip back), inner 60–67.
    chin_y = _Y0 + height
    ym = tip_y + 0.42 * (chin_y - tip_y)
    mw, up, lo = fp.mouth_width, 6.0, 8.0
    ox = np.array([-0.5, -0.32, -0.12, 0.0, 0.12, 0.32, 0.5, 0.3, 0.12, 0.0, -0.12, -0.3]) * mw
    oy = np.array([0.0, -0.8, -1.0, -0.8, -1.0, -0.8, 0.0, 0.85, 1.0, 1.0, 1.0, 0.85])
    oy = oy * np.where(oy < 0, up, lo)
    lm[48:60] = np.stack([_CX + ox, ym + oy], axis=1)
    ix = np.array([-0.42, -0.15, 0.0, 0.15, 0.42, 0.15, 0.0, -0.15]) * mw
    iy = np.array([0.0, -1.0, -1.0, -1.0, 0.0, 1.0, 1.0, 1.0])
    lm[60:68] = np.stack([_CX + ix, ym + iy], axis=1)
    return lm


def mean_landmarks_template(size: int = FACE_SIZE) -> np.ndarray:
    """Landmarks of the average toy face (all latents 0, no nuisance): float32 [68, 2]."""
    latents = dict.fromkeys(toy_speakers.ATTRIBUTE_NAMES, 0.0)
    speaker = toy_speakers.speaker_from_latents("mean", latents)
    return (_landmarks(face_params(speaker)) * size / _REF).astype(np.float32)


def canonical_landmarks(speaker: toy_speakers.Speaker, size: int = FACE_SIZE) -> np.ndarray:
    """The speaker's landmarks without per-render nuisance: float32 [68, 2] (x, y)."""
    return (_landmarks(face_params(speaker)) * size / _REF).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Drawing.


@functools.lru_cache(maxsize=4)
def _stipple(canvas: int) -> Image.Image:
    """A fixed random dot texture (mode "L", 0 or 255) for stubble; the same for every face."""
    dots = np.random.default_rng(1234).random((canvas // 2, canvas // 2)) < 0.45
    dots = np.kron(dots, np.ones((2, 2), bool))
    return Image.fromarray(np.pad(dots, [(0, canvas % 2)] * 2).astype(np.uint8) * 255)


def _rgb(c, scale: float = 1.0):
    return tuple(int(np.clip(round(v * scale), 0, 255)) for v in c)


def render_face(speaker: toy_speakers.Speaker, rng: np.random.Generator,
                size: int = FACE_SIZE) -> Tuple[np.ndarray, np.ndarray]:
    """Draws the speaker's face with a random small pose/lighting change.

    Args:
      speaker: the toy speaker.
      rng: random generator for the per-render nuisance (advanced by this call).
      size: output width = height in pixels.

    Returns:
      (image uint8 [size, size, 3] RGB, landmarks float32 [68, 2] (x, y) in output pixels).
    """
    fp = face_params(speaker)
    lm = _landmarks(fp)
    half_w = fp.face_width / 2

    # Outlines that are not landmarks (forehead, hair, ears, neck), in the same 224 frame.
    forehead = _ellipse(_CX, _Y0, half_w, fp.forehead_height, 40, -0.02, -np.pi + 0.02)
    margin = 9.0
    top = _ellipse(_CX, _Y0, half_w + margin, fp.forehead_height + margin, 40, 0.0, -np.pi)
    hair_bottom = _Y0 + fp.hair_length
    back_hair = np.concatenate([
        [[_CX - half_w - margin, hair_bottom]], top[::-1],
        [[_CX + half_w + margin, hair_bottom]],
        _ellipse(_CX, hair_bottom, half_w + margin, 10.0, 12, 0.0, np.pi)])
    hairline_y = _Y0 - 0.62 * fp.forehead_height
    fx = np.linspace(1.0, -1.0, 21)
    fringe_edge = np.stack([_CX + (half_w + 1.0) * fx,
                            hairline_y + (_Y0 - 6.0 - hairline_y) * np.abs(fx) ** 3.0], axis=1)
    fringe = np.concatenate([top[::-1], fringe_edge])
    ears = [_ellipse(_CX + side * (half_w + 2.0), _Y0 + 4.0, 8.0, 17.0, 24) for side in (-1, 1)]
    neck_w = 0.27 * fp.face_width
    neck = np.array([[_CX - neck_w, _Y0 + 0.5 * fp.face_height], [_CX + neck_w,
                     _Y0 + 0.5 * fp.face_height], [_CX + neck_w, 240.0], [_CX - neck_w, 240.0]])
    shoulders = _ellipse(_CX, 250.0, 1.25 * fp.face_width, 45.0, 40)
    face_outline = np.concatenate([_catmull_rom(lm[0:17], closed=False), forehead])
    lines = [_ellipse(_CX, hairline_y + 14.0 + 6.0 * k, 0.3 * fp.face_width, 4.0, 12, -0.3,
                      -np.pi + 0.3) for k in range(3)]

    # Per-render similarity transform (about the face centre) and the 2× drawing frame.
    ang = np.deg2rad(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
    scale = 1.0 + rng.uniform(-MAX_SCALE_CHANGE, MAX_SCALE_CHANGE)
    shift = rng.uniform(-MAX_SHIFT_PX, MAX_SHIFT_PX, 2)
    brightness = 1.0 + rng.uniform(-MAX_BRIGHTNESS_CHANGE, MAX_BRIGHTNESS_CHANGE)
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]]) * scale
    centre = np.array([_CX, _Y0])
    out_scale = size / _REF

    def to_out(p):  # 224 frame → output pixels
        return ((np.asarray(p) - centre) @ rot.T + centre + shift) * out_scale

    def to_canvas(p):  # output pixel centres → 2× canvas pixel centres
        return [tuple(q) for q in (to_out(p) * _SUPERSAMPLE + 0.5 * (_SUPERSAMPLE - 1))]

    px = _SUPERSAMPLE * out_scale  # canvas pixels per 224-frame pixel
    canvas = size * _SUPERSAMPLE
    img = Image.new("RGB", (canvas, canvas), _rgb(fp.background))
    draw = ImageDraw.Draw(img)
    skin, hair = fp.skin, fp.hair
    draw.polygon(to_canvas(shoulders), fill=_rgb((70, 78, 92)))
    draw.polygon(to_canvas(back_hair), fill=_rgb(hair))
    draw.polygon(to_canvas(neck), fill=_rgb(skin, 0.88))
    for ear in ears:
        draw.polygon(to_canvas(ear), fill=_rgb(skin, 0.93), outline=_rgb(skin, 0.7))
    draw.polygon(to_canvas(face_outline), fill=_rgb(skin))
    for line in lines:  # forehead lines fade in with age
        draw.line(to_canvas(line), fill=_rgb(_mix(skin, (60, 40, 30), 0.6 * fp.grey ** 2)),
                  width=max(int(round(1.5 * px)), 1))
    beard = np.concatenate([_catmull_rom(lm[3:14], closed=False),
                            [[lm[13, 0], lm[33, 1] + 3.0], [lm[3, 0], lm[33, 1] + 3.0]]])
    # A solid shadow, large in the image: random VGG features see area and luminance, not
    # fine texture.
    draw.polygon(to_canvas(beard), fill=_rgb(_mix(skin, (40, 32, 28), 0.75 * fp.stubble)))
    # Stubble: a fixed stipple texture inside the beard area, as dense as `stubble` says; a texture
    # shows on any skin tone, where a darker shade alone hardly changes dark skin.
    beard_mask = Image.new("L", img.size, 0)
    ImageDraw.Draw(beard_mask).polygon(to_canvas(beard), fill=int(round(255 * fp.stubble)))
    img.paste((35, 30, 28), mask=ImageChops.multiply(beard_mask, _stipple(img.size[0])))
    draw.polygon(to_canvas(fringe), fill=_rgb(hair))
    brow_colour = _rgb(_mix(hair, (30, 25, 20), 0.65))
    for brow in (lm[17:22], lm[22:27]):
        draw.line(to_canvas(_catmull_rom(brow, closed=False)), fill=brow_colour,
                  width=max(int(round(fp.brow_thickness * px)), 1), joint="curve")
    for eye in (lm[36:42], lm[42:48]):
        draw.polygon(to_canvas(_catmull_rom(eye, closed=True)), fill=(248, 248, 244),
                     outline=_rgb((40, 30, 30)))
        c = eye.mean(axis=0) - np.array([0.0, 0.8])
        draw.polygon(to_canvas(_ellipse(c[0], c[1], 5.2, 5.2, 20)), fill=_rgb(fp.iris))
        draw.polygon(to_canvas(_ellipse(c[0], c[1], 2.3, 2.3, 12)), fill=(15, 15, 15))
    # Nose: bridge sides from beside point 27 down to the wings 31/35, the base through 31–35.
    nose_tip = lm[30]
    nose = np.concatenate([
        [lm[27] + [-0.11 * fp.nose_width, 0.0]],
        [[nose_tip[0] - 0.32 * fp.nose_width, nose_tip[1] - 8.0]],
        _catmull_rom(np.concatenate([[lm[31] + [0.0, -8.0]], lm[31:36], [lm[35] + [0.0, -8.0]]]),
                     closed=False),
        [[nose_tip[0] + 0.32 * fp.nose_width, nose_tip[1] - 8.0]],
        [lm[27] + [0.11 * fp.nose_width, 0.0]]])
    # Fixed dark outline and nostrils: the nose must stand out on every skin tone.
    draw.polygon(to_canvas(nose), fill=_rgb(skin, 0.62))
    draw.line(to_canvas(np.concatenate([nose, nose[:1]])), fill=(45, 28, 22),
              width=max(int(round(1.5 * px)), 1), joint="curve")
    for side in (-1, 1):
        nostril = _ellipse(nose_tip[0] + side * 0.2 * fp.nose_width, nose_tip[1] + 2.5,
                           0.14 * fp.nose_width, 1.5 + 0.05 * fp.nose_width, 16)
        draw.polygon(to_canvas(nostril), fill=(22, 12, 12))
    lip_colour = fp.lips
    draw.polygon(to_canvas(_catmull_rom(lm[48:60], closed=True)), fill=_rgb(lip_colour),
                 outline=_rgb(lip_colour, 0.8))
    draw.polygon(to_canvas(_catmull_rom(lm[60:68], closed=True)), fill=_rgb((70, 20, 25)))

    img = img.resize((size, size), Image.LANCZOS)
    image = np.asarray(img, np.float32) * brightness
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return image, to_out(lm).astype(np.float32)
