"""Visible signatures of the generated scenes: shapes with colour, texture and motion.

A frame is a pure function of its index: a static smooth background, the
sprites alive at that time (clutter, distractors, class sprites, drawn
anti-aliased by signed distance on their bounding box only), then sensor noise
from a generator keyed by the frame index. No state carries from frame to frame,
so any frame can be rendered in any order, in well under a millisecond or two.

Each class is a (shape, colour, motion) triple; clutter and distractor sprites
take any shape and any colour except a class's shape in (nearly) that class's
colour, so a red square or a plain green square may appear as a confuser, a red
disk may not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# name -> (shape, RGB colour, one-line description of the motion pattern)
VISUAL_SIGNATURES: dict[str, tuple[str, tuple[int, int, int], str]] = {
    "siren": ("disk", (225, 35, 35), "red disk whose brightness pulses 2-3 times/s"),
    "drum": ("square", (245, 145, 25), "orange square bouncing up and down 1.5-2.5 times/s"),
    "bell": ("triangle", (240, 215, 40), "yellow triangle swinging and tilting side to side, 0.8-1.2 Hz"),
    "whistle": ("bar", (40, 215, 230), "cyan upright bar trembling by a pixel or two"),
    "engine": ("wheel", (235, 235, 235), "white wheel with spokes spinning 1-2 turns/s"),
    "hiss": ("speckle", (40, 190, 60), "green square of coarse speckle that changes every frame"),
    "bird": ("triangle", (45, 85, 240), "small blue triangle flying back and forth across the frame, bobbing"),
    "alarm": ("diamond", (230, 45, 205), "magenta diamond growing and shrinking 2-4 times/s"),
    "clap": ("pair", (150, 70, 225), "two purple bars closing and opening 2-3 times/s"),
    "horn": ("ring", (170, 235, 60), "lime ring drifting slowly"),
}

CLUTTER_SHAPES = ("disk", "square", "triangle", "bar", "diamond", "ring", "ellipse", "cross")


@dataclass(frozen=True)
class Sprite:
    """One drawn object: a class sprite, a clutter sprite or a distractor."""

    kind: str                      # class name, or "clutter"
    shape: str                     # see the drawing functions below
    colour: tuple                  # RGB floats 0..255
    size: float                    # half-extent in pixels
    cx: float                      # centre in pixels
    cy: float
    onset: float                   # seconds
    offset: float                  # seconds
    alpha: float                   # opacity 0..1
    key: tuple                     # random-generator key (speckle texture)
    params: dict = field(default_factory=dict)  # motion parameters


# ---------------------------------------------------------------- coverage of primitives

def _cov_disk(xx, yy, cx, cy, r):
    return np.clip(r - np.hypot(xx - cx, yy - cy) + 0.5, 0.0, 1.0)


def _cov_ring(xx, yy, cx, cy, r, r_in):
    d = np.hypot(xx - cx, yy - cy)
    return np.clip(r - d + 0.5, 0.0, 1.0) * np.clip(d - r_in + 0.5, 0.0, 1.0)


def _cov_ellipse(xx, yy, cx, cy, a, b):
    d = (np.sqrt(((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2) - 1.0) * min(a, b)
    return np.clip(0.5 - d, 0.0, 1.0)


def _cov_poly(xx, yy, pts):
    """Convex polygon ``pts`` [N, 2] (x, y); coverage by the max of edge distances."""
    c = pts.mean(axis=0)
    d = None
    for i in range(len(pts)):
        p, q = pts[i], pts[(i + 1) % len(pts)]
        e = q - p
        n = np.array([e[1], -e[0]]) / (np.hypot(e[0], e[1]) + 1e-12)
        if n @ (c - p) > 0:
            n = -n
        di = (xx - p[0]) * n[0] + (yy - p[1]) * n[1]
        d = di if d is None else np.maximum(d, di)
    return np.clip(0.5 - d, 0.0, 1.0)


def _rot(pts, theta, cx, cy):
    c, s = np.cos(theta), np.sin(theta)
    r = np.array([[c, -s], [s, c]])
    return pts @ r.T + np.array([cx, cy])


_UNIT = {
    "square": np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float),
    "triangle": np.array([[0, -1], [0.87, 0.6], [-0.87, 0.6]], float),
    "diamond": np.array([[0, -1], [0.7, 0], [0, 1], [-0.7, 0]], float),
    "bar": np.array([[-0.25, -1], [0.25, -1], [0.25, 1], [-0.25, 1]], float),
}


def _coverage(shape, xx, yy, cx, cy, s, theta, p):
    if shape == "disk":
        return _cov_disk(xx, yy, cx, cy, s)
    if shape == "ring":
        return _cov_ring(xx, yy, cx, cy, s, 0.6 * s)
    if shape == "ellipse":
        return _cov_ellipse(xx, yy, cx, cy, s, 0.55 * s)
    if shape in _UNIT:
        return _cov_poly(xx, yy, _rot(_UNIT[shape] * s, theta, cx, cy))
    if shape == "cross":
        a = _cov_poly(xx, yy, _rot(_UNIT["bar"] * s, theta, cx, cy))
        b = _cov_poly(xx, yy, _rot(_UNIT["bar"] * s, theta + np.pi / 2, cx, cy))
        return np.maximum(a, b)
    if shape == "wheel":
        cov = _cov_ring(xx, yy, cx, cy, s, 0.78 * s)
        spoke = np.array([[-0.1, -0.85], [0.1, -0.85], [0.1, 0.85], [-0.1, 0.85]]) * s
        for k in range(3):
            cov = np.maximum(cov, _cov_poly(xx, yy, _rot(spoke, theta + k * np.pi / 3, cx, cy)))
        return cov
    if shape == "pair":
        g = p["gap"]
        bar = _UNIT["bar"] * s
        a = _cov_poly(xx, yy, _rot(bar, 0.0, cx - g - 0.25 * s, cy))
        b = _cov_poly(xx, yy, _rot(bar, 0.0, cx + g + 0.25 * s, cy))
        return np.maximum(a, b)
    if shape == "speckle":
        return _cov_poly(xx, yy, _rot(_UNIT["square"] * s, 0.0, cx, cy))
    raise ValueError(f"unknown shape {shape!r}")


def _extent(shape, s, p):
    """Half-extent of the bounding box around the centre."""
    if shape == "pair":
        return max(s, p["gap"] + 0.5 * s) + 2
    return 1.45 * s + 2


# ---------------------------------------------------------------- motion

def draw_motion(kind: str, rng: np.random.Generator, size: float, width: int, height: int) -> dict:
    """Random motion parameters of one sprite of ``kind`` (a class name or "clutter"/"distractor")."""
    u = rng.uniform
    p: dict = {"phase": float(u(0, 10))}
    if kind == "siren":
        p.update(f=u(2, 3))
    elif kind == "drum":
        p.update(f=u(1.5, 2.5), amp=u(0.5, 0.8) * size)
    elif kind == "bell":
        p.update(f=u(0.8, 1.2), amp=u(0.4, 0.7) * size)
    elif kind == "engine":
        p.update(rev=u(1, 2) * (1 if u() < 0.5 else -1))
    elif kind == "bird":
        p.update(speed=u(25, 45), bob=u(2.5, 4.0))
    elif kind == "alarm":
        p.update(f=u(2, 4))
    elif kind == "clap":
        p.update(f=u(2, 3))
    elif kind in ("clutter", "distractor"):
        p.update(vx=u(-12, 12) if u() < 0.5 else 0.0, vy=u(-8, 8) if u() < 0.5 else 0.0,
                 sway=u(0, 0.4) * size, f=u(0.2, 1.5), theta=u(0, np.pi))
    return p


def _tri(x, lo, hi):
    """Reflect x into [lo, hi] (a triangle wave): bouncing motion."""
    w = hi - lo
    if w <= 0:
        return lo
    m = np.mod(x - lo, 2 * w)
    return lo + (m if m <= w else 2 * w - m)


def _pose(sp: Sprite, t: float, width: int, height: int):
    """(cx, cy, size, theta, colour scale, extra params) of sprite ``sp`` at time t."""
    p, s = sp.params, sp.size
    tt = t - sp.onset + p.get("phase", 0.0)
    cx, cy, theta, bright, extra = sp.cx, sp.cy, 0.0, 1.0, {}
    two_pi = 2 * np.pi
    k = sp.kind
    if k == "siren":
        bright = 0.5 + 0.5 * (0.5 + 0.5 * np.sin(two_pi * p["f"] * tt))
    elif k == "drum":
        cy -= p["amp"] * abs(np.sin(np.pi * p["f"] * tt))
    elif k == "bell":
        w = np.sin(two_pi * p["f"] * tt)
        cx += p["amp"] * w
        theta = 0.4 * w
    elif k == "whistle":
        cx += 1.2 * np.sin(two_pi * 7.3 * tt) + 0.8 * np.sin(two_pi * 12.7 * tt)
        cy += 0.8 * np.sin(two_pi * 9.1 * tt)
    elif k == "engine":
        theta = two_pi * p["rev"] * tt
    elif k == "bird":
        m = s + 2
        x = p["speed"] * tt
        cx = _tri(sp.cx + x, m, width - m)
        w = width - 2 * m
        going_right = w <= 0 or np.mod(sp.cx + x - m, 2 * w) <= w
        theta = np.pi / 2 if going_right else -np.pi / 2
        cy += 0.3 * s * np.sin(two_pi * p["bob"] * tt)
    elif k == "alarm":
        s = s * (0.7 + 0.3 * (0.5 + 0.5 * np.sin(two_pi * p["f"] * tt)))
    elif k == "clap":
        extra["gap"] = s * (0.1 + 0.6 * (0.5 + 0.5 * np.cos(two_pi * p["f"] * tt)))
    elif k == "horn":
        cx += 0.25 * s * np.sin(two_pi * 0.3 * tt)
        cy += 0.25 * s * np.cos(two_pi * 0.23 * tt)
    elif k in ("clutter", "distractor"):
        m = s + 1
        cx = _tri(sp.cx + p["vx"] * tt + p["sway"] * np.sin(two_pi * p["f"] * tt), m, width - m)
        cy = _tri(sp.cy + p["vy"] * tt, m, height - m)
        theta = p["theta"]
    return cx, cy, s, theta, bright, extra


def draw_sprite(img: np.ndarray, sp: Sprite, t: float, frame_index: int) -> None:
    """Draw ``sp`` at time ``t`` onto ``img`` (uint8 HxWx3) in place."""
    h, w = img.shape[:2]
    cx, cy, s, theta, bright, extra = _pose(sp, t, w, h)
    p = {**sp.params, **extra}
    e = _extent(sp.shape, s, p)
    x0, x1 = max(0, int(cx - e)), min(w, int(np.ceil(cx + e)) + 1)
    y0, y1 = max(0, int(cy - e)), min(h, int(np.ceil(cy + e)) + 1)
    if x0 >= x1 or y0 >= y1:
        return
    xx = np.arange(x0, x1, dtype=np.float32)[None, :]
    yy = np.arange(y0, y1, dtype=np.float32)[:, None]
    cov = _coverage(sp.shape, xx, yy, cx, cy, s, theta, p) * sp.alpha
    colour = np.asarray(sp.colour, np.float32) * bright
    region = img[y0:y1, x0:x1].astype(np.float32)
    if sp.shape == "speckle":
        # 2x2-pixel speckle cells, dark or lit, redrawn every frame
        rng = np.random.default_rng([*sp.key, frame_index])
        cells = rng.uniform(0.15, 1.0, ((y1 - y0 + 1) // 2 + 1, (x1 - x0 + 1) // 2 + 1)).astype(np.float32)
        cells = (cells > 0.5) * cells
        tex = np.repeat(np.repeat(cells, 2, 0), 2, 1)[: y1 - y0, : x1 - x0]
        colour = colour[None, None, :] * (0.25 + 0.75 * tex[..., None])
    c = cov[..., None]
    img[y0:y1, x0:x1] = (region * (1 - c) + colour * c + 0.5).astype(np.uint8)


def background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A smooth random colour field with a faint static texture (uint8 HxWx3)."""
    grid = rng.uniform(30, 170, (4, 4, 3))
    ys = np.linspace(0, 3, height)
    xs = np.linspace(0, 3, width)
    y0 = np.minimum(ys.astype(int), 2)
    x0 = np.minimum(xs.astype(int), 2)
    fy = (ys - y0)[:, None, None]
    fx = (xs - x0)[None, :, None]
    g00 = grid[y0][:, x0]
    g01 = grid[y0][:, x0 + 1]
    g10 = grid[y0 + 1][:, x0]
    g11 = grid[y0 + 1][:, x0 + 1]
    img = (g00 * (1 - fy) * (1 - fx) + g01 * (1 - fy) * fx + g10 * fy * (1 - fx) + g11 * fy * fx)
    img += rng.normal(0, 4, (height, width, 1))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)
