"""Thin-plate-spline image warp of the face decoder (Cole et al., CVPR 2017).

Coordinates are (x, y) normalised to the image, as in `speech2face.models.face_decoder`:
x, y in [0, 1] from the left/top edge to the right/bottom edge; pixel (row i, column j) has
its centre at ((j + 0.5) / W, (i + 0.5) / H).

As in Cole et al. (Sec. 3: "we include extra points at the boundary of the image, where we
enforce zero displacement"), the warp pins the image border by default: `BORDER_POINTS_PER_SIDE`
control points along each side of the outer ring of pixel centres, held in place, join the
landmarks. Moving the landmarks then moves the face and leaves the frame where it is.
"""

import tensorflow as tf

# Added to the diagonal of the TPS kernel matrix (normalised coordinates). Without it, two
# coinciding predicted landmarks make the system singular (the CPU solve raises); at 1e-6 the
# spline still passes within 0.01 px (at 224) of realistic landmark displacements, and coinciding
# centres give weights of ~1e4 at most, harmless in float32. Larger values smooth the warp
# (1e-5: ~0.08 px, growing with the value). Affine maps are exact whatever the value (they live
# in the unregularised polynomial part).
DEFAULT_TPS_REGULARIZATION = 1e-6

# Pinned points per side of the border (corners included; 4 * (n - 1) = 124 in all). When all 68
# landmarks of the template face shift by a tenth of the image, the outer ring of pixels moves
# by at most 0.04 px at 64×64 and 0.14 px at 224×224 (the spline bulges between pins: 16 per
# side let it move 0.5 and 1.4 px), the face by 6.4 and 22 px.
BORDER_POINTS_PER_SIDE = 32

REFINEMENT_STEPS = 3  # see _solve_tps

# No matmuls on purpose: GPUs run float32 matmuls in TF32 by default
# (10-bit mantissa), which would move sampling positions by ~1e-3 of the image.


def _tps_kernel(r2):
    """U(r) = r² log r, written in r² (= ½ r² log r²); 0 at r = 0, finite gradient there."""
    return 0.5 * r2 * tf.math.log(tf.maximum(r2, 1e-20 if r2.dtype == tf.float64 else 1e-12))


def _solve_tps(centres, values, regularization):
    """Coefficients of the TPS f with f(centres[k]) ≈ values[k].

    Args:
      centres, values: [B, K, 2] float.
    Returns:
      (w [B, K, 2], a [B, 3, 2]); f(p) = a[0] + p_x a[1] + p_y a[2] + Σ_k w_k U(|p − centres_k|).
    """
    k = tf.shape(centres)[1]
    diff = centres[:, :, None, :] - centres[:, None, :, :]
    kernel = _tps_kernel(tf.reduce_sum(tf.square(diff), axis=-1))
    kernel += regularization * tf.eye(k, dtype=centres.dtype)
    poly = tf.concat([tf.ones_like(centres[..., :1]), centres], axis=-1)  # [B, K, 3]
    top = tf.concat([kernel, poly], axis=2)
    bottom = tf.concat([tf.transpose(poly, [0, 2, 1]), tf.zeros_like(poly[:, :3, :3])], axis=2)
    rhs = tf.concat([values, tf.zeros_like(values[:, :3])], axis=1)
    system = tf.concat([top, bottom], axis=1)  # [B, K + 3, K + 3], symmetric indefinite
    # (tf.linalg.lu would factorise once for the four solves, but XLA has no kernel for it.)
    coeffs = tf.linalg.solve(system, rhs)  # [B, K + 3, D]
    # Iterative refinement: XLA's float32 solve alone leaves errors of ~0.04 px (at 224) in the
    # warp, 30x more than TF's kernel, and ~1e-3 in pixel values with the 124 border pins; one
    # step left 1e-3, two 1e-5, three bring XLA and TF within ~1e-6 of a float64 solve.
    for _ in range(REFINEMENT_STEPS):
        residual = rhs - tf.reduce_sum(system[..., None] * coeffs[:, None], axis=2)
        coeffs += tf.linalg.solve(system, residual)
    return coeffs[:, :-3], coeffs[:, -3:]


def _bilinear_sample(image, x, y):
    """Samples image [B, H, W, C] at pixel positions x, y [B, N] (border-clamped) → [B, N, C]."""
    shape = tf.shape(image)
    h, w = shape[1], shape[2]
    x0, y0 = tf.floor(x), tf.floor(y)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    x0, y0 = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)
    # Clamping the indices (not the positions) keeps the gradient wrt positions inside the image
    # and makes both neighbours the edge pixel outside it: border replication.
    xs = [tf.clip_by_value(x0 + d, 0, w - 1) for d in (0, 1)]
    ys = [tf.clip_by_value(y0 + d, 0, h - 1) for d in (0, 1)]
    flat = tf.reshape(image, [shape[0], h * w, shape[3]])

    def pixel(yi, xi):
        return tf.gather(flat, yi * w + xi, batch_dims=1)

    top = pixel(ys[0], xs[0]) * (1.0 - fx) + pixel(ys[0], xs[1]) * fx
    bottom = pixel(ys[1], xs[0]) * (1.0 - fx) + pixel(ys[1], xs[1]) * fx
    return top * (1.0 - fy) + bottom * fy


def border_points(height, width, per_side=None, dtype=tf.float32):
    """[4 * (per_side - 1), 2] normalised (x, y) points evenly along the ring of border pixel
    centres (corners included, each once); `per_side` defaults to `BORDER_POINTS_PER_SIDE`."""
    per_side = BORDER_POINTS_PER_SIDE if per_side is None else per_side
    h, w = tf.cast(height, dtype), tf.cast(width, dtype)
    t = tf.linspace(tf.constant(0.0, dtype), tf.constant(1.0, dtype), per_side)
    x = (0.5 + t * (w - 1.0)) / w  # from the first to the last column's centre
    y = (0.5 + t * (h - 1.0)) / h
    x0, x1 = x[0] * tf.ones_like(t), x[-1] * tf.ones_like(t)
    y0, y1 = y[0] * tf.ones_like(t), y[-1] * tf.ones_like(t)
    top = tf.stack([x[:-1], y0[:-1]], axis=1)  # left to right, without the last corner
    right = tf.stack([x1[:-1], y[:-1]], axis=1)  # top to bottom
    bottom = tf.stack([x[::-1][:-1], y1[:-1]], axis=1)  # right to left
    left = tf.stack([x0[:-1], y[::-1][:-1]], axis=1)  # bottom to top
    return tf.concat([top, right, bottom, left], axis=0)


def source_coordinates(height, width, control_from, control_to,
                       regularization=DEFAULT_TPS_REGULARIZATION, pin_border=True):
    """T(p) for every pixel centre p, in normalised (x, y): [B, H * W, 2] in row-major pixel
    order (see `warp_image`). Control points in the float dtype of the result: `control_from`
    [B, K, 2]; `control_to` [B, K, 2], or [K, 2] when the whole batch shares it (the texture
    target's mean landmarks): then the spline's system is solved once, with every example's
    values as columns of one right-hand side, and its kernel at the pixels is computed once."""
    dtype = control_to.dtype
    batch = tf.shape(control_from)[0]
    shared = control_to.shape.rank == 2
    if pin_border:
        pins = border_points(height, width, dtype=dtype)
        if shared:
            control_to = tf.concat([control_to, pins], axis=0)
        else:
            control_to = tf.concat(
                [control_to, tf.broadcast_to(pins[None], [batch, tf.shape(pins)[0], 2])], axis=1)
        control_from = tf.concat(
            [control_from, tf.broadcast_to(pins[None], [batch, tf.shape(pins)[0], 2])], axis=1)
    if shared:
        # [1, K, 2B]: column 2b + d holds coordinate d of example b.
        values = tf.reshape(tf.transpose(control_from, [1, 0, 2]), [1, -1, 2 * batch])
        control_to = control_to[None]
    else:
        values = control_from
    weights, affine = _solve_tps(control_to, values, tf.cast(regularization, dtype))
    # Pixel centres in normalised coordinates, [1, H*W, 1] each.
    gx = (tf.cast(tf.range(width), dtype) + 0.5) / tf.cast(width, dtype)
    gy = (tf.cast(tf.range(height), dtype) + 0.5) / tf.cast(height, dtype)
    gy, gx = tf.meshgrid(gy, gx, indexing="ij")
    gx, gy = tf.reshape(gx, [1, -1, 1]), tf.reshape(gy, [1, -1, 1])
    # U(|p − c_k|) for every pixel p and centre c_k: [B, H*W, K] (B = 1 when shared).
    u = _tps_kernel(tf.square(gx - control_to[:, None, :, 0])
                    + tf.square(gy - control_to[:, None, :, 1]))
    # [B, H*W, D]: the affine part plus Σ_k w_k U(|p − c_k|), for each of the D columns.
    src = (affine[:, None, 0] + gx * affine[:, None, 1] + gy * affine[:, None, 2]
           + tf.reduce_sum(u[:, :, None, :] * tf.transpose(weights, [0, 2, 1])[:, None], axis=-1))
    if shared:  # [1, H*W, 2B] -> [B, H*W, 2]
        return tf.transpose(tf.reshape(src[0], [height * width, batch, 2]), [1, 0, 2])
    return src


def warp_image(image, control_from, control_to, regularization=DEFAULT_TPS_REGULARIZATION,
               pin_border=True):
    """Thin-plate-spline warp with bilinear sampling: content at `control_from` moves to `control_to`.

    output(p) = image(T(p)), where T is the TPS with T(control_to[k]) = control_from[k] (up to the
    regulariser) and, with `pin_border`, T(b) = b at the border points (module docstring).
    Differentiable in the image and in both sets of control points; runs under tf.function and
    XLA.

    Args:
      image: [B, H, W, C] float (any float dtype).
      control_from, control_to: [B, K, 2] or [K, 2] (x, y) normalised coordinates (module
        docstring), K >= 3 and not all on one line.
      regularization: added to the TPS kernel's diagonal (see `DEFAULT_TPS_REGULARIZATION`).
      pin_border: hold the border in place (Cole et al.); False gives the plain TPS through the
        control points alone (an affine motion of all of them is then the affine map).

    Returns:
      [B, H, W, C] float32 (float64 for float64 input): the warp is computed in at least float32
      whatever the mixed-precision policy, since half-precision coordinates would be off by pixels.
      Samples outside the image repeat its border.
    """
    dtype = tf.float64 if image.dtype == tf.float64 else tf.float32
    image = tf.cast(image, dtype)
    shape = tf.shape(image)
    batch, h, w = shape[0], shape[1], shape[2]

    def batched(points):
        points = tf.cast(points, dtype)
        if points.shape.rank == 2:
            points = tf.broadcast_to(points[None], [batch, tf.shape(points)[0], 2])
        return points

    # A `control_to` shared by the batch stays [K, 2]: its spline is solved once.
    control_to = tf.cast(control_to, dtype)
    src = source_coordinates(h, w, batched(control_from),
                             control_to if control_to.shape.rank == 2 else batched(control_to),
                             regularization, pin_border)
    # Normalised → pixel-index coordinates (centres at integers).
    x = src[..., 0] * tf.cast(w, dtype) - 0.5
    y = src[..., 1] * tf.cast(h, dtype) - 0.5
    return tf.reshape(_bilinear_sample(image, x, y), shape)
