"""Evaluation figures drawn with Pillow (matplotlib is not a dependency): recall@K curves, distance
histograms, and grids of faces.

Every function writes one PNG and returns the image as uint8 [H, W, 3], ready for
`tf.summary.image`. `Plot` is a minimal chart on a Pillow canvas: axes with round-number ticks
(linear or log x), polylines (solid or dashed), step histograms and a legend.
"""

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from speech2face import media, records
from speech2face.evaluation import encode

FACE_SIZE = records.FACE_SIZE

# Colour per series: durations in order, then a grey for chance/mismatched references.
COLORS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (148, 103, 189), (140, 86, 75))
GREY = (128, 128, 128)
METRIC_TITLES = {"cos": "cosine", "l2": "L2", "l1": "L1"}
DISTANCE_TITLES = {"cos_deg": "angle (degrees)", "l2": "L2 distance", "l1": "L1 distance"}


def _font(size):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _nice_ticks(lo, hi, count=5):
    """Round-number ticks (1, 2, 2.5 or 5 × 10^k apart) covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _log_ticks(hi):
    ticks, decade = [], 1
    while decade <= hi:
        ticks += [t for t in (decade, 2 * decade, 5 * decade) if t <= hi]
        decade *= 10
    return ticks


def _label(value):
    return f"{value:g}" if abs(value) < 1e4 else f"{value:.0e}"


class Plot:
    """One panel: data coordinates mapped into a `width` × `height` pixel box.

    Args:
      x_range, y_range: (lo, hi) of the data shown; log_x draws x on a log10 scale (lo > 0).
      title, x_label, y_label: text around the panel.
    """

    MARGIN = (58, 44, 16, 44)  # left, top, right, bottom

    def __init__(self, width, height, x_range, y_range, title="", x_label="", y_label="",
                 log_x=False):
        self.image = Image.new("RGB", (width, height), "white")
        self.draw = ImageDraw.Draw(self.image)
        self.font, self.small = _font(14), _font(11)
        self.log_x = log_x
        self.x_range, self.y_range = x_range, y_range
        left, top, right, bottom = self.MARGIN
        self.box = (left, top, width - right, height - bottom)
        self.legend: List[Tuple[str, tuple, bool]] = []
        self.draw.text((left, 6), title, fill="black", font=self.font)
        self.draw.text(((left + width - right) // 2, height - 18), x_label, fill="black",
                       font=self.small, anchor="mt")
        self.draw.text((4, top - 16), y_label, fill="black", font=self.small)
        self._axes()

    def _fx(self, x):
        lo, hi = self.x_range
        if self.log_x:
            x, lo, hi = (math.log10(max(v, 1e-12)) for v in (x, lo, hi))
        return self.box[0] + (x - lo) / ((hi - lo) or 1.0) * (self.box[2] - self.box[0])

    def _fy(self, y):
        lo, hi = self.y_range
        return self.box[3] - (y - lo) / ((hi - lo) or 1.0) * (self.box[3] - self.box[1])

    def _axes(self):
        x0, y0, x1, y1 = self.box
        xs = _log_ticks(self.x_range[1]) if self.log_x else _nice_ticks(*self.x_range)
        for x in xs:
            if self.x_range[0] <= x <= self.x_range[1]:
                px = self._fx(x)
                self.draw.line([(px, y0), (px, y1)], fill=(235, 235, 235))
                self.draw.text((px, y1 + 4), _label(x), fill="black", font=self.small,
                               anchor="mt")
        for y in _nice_ticks(*self.y_range):
            if self.y_range[0] <= y <= self.y_range[1]:
                py = self._fy(y)
                self.draw.line([(x0, py), (x1, py)], fill=(235, 235, 235))
                self.draw.text((x0 - 4, py), _label(y), fill="black", font=self.small,
                               anchor="rm")
        self.draw.rectangle(self.box, outline="black")

    def line(self, xs, ys, color, label=None, dashed=False, width=2):
        """A polyline through (xs, ys); dashed as 6-pixel dashes along its length."""
        points = [(self._fx(x), self._fy(y)) for x, y in zip(xs, ys)]
        if dashed:
            travelled = 0.0
            for (ax, ay), (bx, by) in zip(points, points[1:]):
                length = math.hypot(bx - ax, by - ay)
                steps = max(1, int(length // 3))
                for i in range(steps):
                    if int((travelled + i * length / steps) // 6) % 2 == 0:
                        t0, t1 = i / steps, (i + 1) / steps
                        self.draw.line([(ax + t0 * (bx - ax), ay + t0 * (by - ay)),
                                        (ax + t1 * (bx - ax), ay + t1 * (by - ay))],
                                       fill=color, width=width)
                travelled += length
        elif len(points) > 1:
            self.draw.line(points, fill=color, width=width, joint="curve")
        if label:
            self.legend.append((label, color, dashed))

    def histogram(self, edges, fractions, color, label=None, dashed=False):
        """A step outline of a histogram: `fractions` [b] over bins `edges` [b + 1]."""
        xs, ys = [edges[0]], [0.0]
        for lo, hi, f in zip(edges[:-1], edges[1:], fractions):
            xs += [lo, hi]
            ys += [f, f]
        xs.append(edges[-1])
        ys.append(0.0)
        self.line(xs, ys, color, label, dashed)

    def finish(self) -> Image.Image:
        """Draws the legend in the top-left corner of the box and returns the image."""
        x, y = self.box[0] + 8, self.box[1] + 6
        for label, color, dashed in self.legend:
            if dashed:
                for dx in (0, 12):
                    self.draw.line([(x + dx, y + 7), (x + dx + 7, y + 7)], fill=color, width=2)
            else:
                self.draw.line([(x, y + 7), (x + 20, y + 7)], fill=color, width=2)
            self.draw.text((x + 26, y), label, fill="black", font=self.small)
            y += 16
        return self.image


def _side_by_side(images: Sequence[Image.Image]) -> Image.Image:
    width = sum(im.width for im in images)
    out = Image.new("RGB", (width, max(im.height for im in images)), "white")
    x = 0
    for im in images:
        out.paste(im, (x, 0))
        x += im.width
    return out


def _save(image: Image.Image, path: str) -> np.ndarray:
    image.save(path)
    return np.asarray(image)


def recall_figure(ranks: Dict[str, Dict[str, np.ndarray]], gallery_size: int,
                  ks: Sequence[int], path: str) -> np.ndarray:
    """Recall@K against K (log scale) per metric panel: one curve per duration, chance dashed.

    Args:
      ranks: {duration key: {metric: int [N] ranks (0 = own face nearest)}}.
      gallery_size: N, for the x range and chance (100·K/N).
      ks: the K of the tables, marked on the curves.
      path: PNG to write.
    """
    k_all = np.arange(1, gallery_size + 1)
    panels = []
    metric_names = list(next(iter(ranks.values())))
    for metric in metric_names:
        plot = Plot(400, 320, (1, max(gallery_size, 2)), (0, 100),
                    f"S2F -> face retrieval, {METRIC_TITLES.get(metric, metric)}", "K",
                    "recall@K (%)", log_x=True)
        for color, (key, by_metric) in zip(COLORS, ranks.items()):
            counts = np.bincount(by_metric[metric], minlength=gallery_size)[:gallery_size]
            recall = 100.0 * np.cumsum(counts) / len(by_metric[metric])
            plot.line(k_all, recall, color, f"{key} s")
            for k in ks:
                if k <= gallery_size:
                    x, y = plot._fx(k), plot._fy(recall[k - 1])
                    plot.draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
        plot.line(k_all, 100.0 * k_all / gallery_size, GREY, "chance", dashed=True)
        panels.append(plot.finish())
    return _save(_side_by_side(panels), path)


def distance_figure(distances: Dict[str, Tuple[dict, Optional[dict]]], path: str,
                    bins: int = 30) -> np.ndarray:
    """Histograms of v_s–v_f distances per distance (angle, L2, L1) panel.

    Args:
      distances: {duration key: (matched {name: [N]}, mismatched {name: [M]} or None)}: the
        distance of each v_s to its own face's v_f, and to a face of another speaker.
      path: PNG to write.
    """
    panels = []
    first_key = next(iter(distances))
    for name, title in DISTANCE_TITLES.items():
        series = [(f"{key} s, own face", d[name], color, False)
                  for color, (key, (d, _)) in zip(COLORS, distances.items())]
        mismatched = distances[first_key][1]
        if mismatched is not None and len(mismatched[name]):
            series.append((f"{first_key} s, other speaker", mismatched[name], GREY, True))
        values = np.concatenate([s[1] for s in series])
        lo, hi = float(values.min()), float(values.max())
        pad = 0.05 * (hi - lo) or 0.5
        edges = np.linspace(lo - pad, hi + pad, bins + 1)
        hists = [np.histogram(v, edges)[0] / max(len(v), 1) for _, v, _, _ in series]
        top = max(float(h.max()) for h in hists) * 1.25 or 1.0
        plot = Plot(400, 320, (edges[0], edges[-1]), (0, top), f"v_s vs v_f: {title}", title,
                    "share of pairs")
        for (label, _, color, dashed), h in zip(series, hists):
            plot.histogram(edges, h, color, label, dashed)
        panels.append(plot.finish())
    return _save(_side_by_side(panels), path)


def image_rows(rows: Sequence[Sequence[np.ndarray]], path: str, tile: int = 112,
               row_labels: Optional[Sequence[str]] = None,
               column_titles: Optional[Sequence[str]] = None,
               captions: Optional[Sequence[Sequence[str]]] = None,
               label_width: int = 110) -> np.ndarray:
    """The one image grid of the project: rows of tiles, optionally labelled on the left, titled
    on top and captioned under each tile.

    Args:
      rows: rows of images, float [S, S, 3] in [0, 1] or uint8 (any S, resized to `tile`);
        rows may differ in length.
      path: PNG to write.
      tile: side of each tile in pixels.
      row_labels: one label per row (e.g. the speaker id), drawn left of it.
      column_titles: one title per column, drawn above the first row.
      captions: one caption per tile (rows of str), drawn under it.
      label_width: pixels left of the tiles for the row labels.
    """
    gap, font = 4, _font(12)
    label_w = 0 if row_labels is None else label_width
    head_h = 24 if column_titles else 0
    caption_h = 18 if captions else 0
    columns = max([len(r) for r in rows] + [len(column_titles or ())] + [1])
    row_h = tile + caption_h + gap
    sheet = Image.new("RGB", (label_w + columns * (tile + gap), head_h + max(len(rows), 1) * row_h),
                      "white")
    draw = ImageDraw.Draw(sheet)
    for c, title in enumerate(column_titles or ()):
        draw.text((label_w + c * (tile + gap) + tile // 2, 6), title, fill="black", font=font,
                  anchor="mt")
    for r, images in enumerate(rows):
        y = head_h + r * row_h
        if row_labels is not None:
            draw.multiline_text((6, y + tile // 2), str(row_labels[r]), fill="black", font=font,
                                anchor="lm")
        for c, image in enumerate(images):
            image = np.asarray(image)
            tile_image = Image.fromarray(image if image.dtype == np.uint8 else media.to_uint8(image))
            x = label_w + c * (tile + gap)
            sheet.paste(tile_image.resize((tile, tile), Image.LANCZOS), (x, y))
            if captions:
                draw.text((x + tile // 2, y + tile + 3), captions[r][c][:40], fill="black",
                          font=font, anchor="mt")
    return _save(sheet, path)


def face_grid(row_labels: Sequence[str], columns: Sequence[Tuple[str, Sequence[np.ndarray]]],
              path: str, tile: int = 112) -> np.ndarray:
    """One row per example, one titled column per kind of face (`image_rows`).

    Args:
      row_labels: one label per row (e.g. the speaker id).
      columns: (title, images) pairs; images float [S, S, 3] in [0, 1], one per row.
      path: PNG to write.
    """
    rows = [[images[r] for _, images in columns] for r in range(len(row_labels))]
    return image_rows(rows, path, tile, row_labels, [title for title, _ in columns])


def faces_figure(enc, path: str) -> np.ndarray:
    """The face grid of an `encode.Encoded`'s sample: the true face, the face decoded from v_f,
    and from v_s at each duration."""
    rows = enc.sample
    columns = [("true face", media.decode_jpegs([enc.jpegs[r] for r in rows], FACE_SIZE)
                if rows else []),
               ("from v_f", [enc.decoded_faces[encode.V_F][r] for r in rows])]
    columns += [(f"from v_s, {key} s", [enc.decoded_faces[key][r] for r in rows])
                for key in enc.durations]
    return face_grid([enc.speaker_ids[r] for r in rows], columns, path)
