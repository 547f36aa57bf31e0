"""Drawing primitives of the demo picture on numpy RGB images: anti-aliased text (Pillow,
else OpenCV's Hershey font) as cached alpha masks, translucent boxes, rounded boxes, outlines."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np


def font_path(bold: bool) -> str | None:
    """DejaVu Sans: matplotlib's copy (a dependency) without importing matplotlib, else the system's."""
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    spec = importlib.util.find_spec("matplotlib")
    dirs = [Path(p) / "mpl-data" / "fonts" / "ttf" for p in (spec.submodule_search_locations or [])] if spec else []
    dirs.append(Path("/usr/share/fonts/truetype/dejavu"))
    for d in dirs:
        if (d / name).is_file():
            return str(d / name)
    return None


class Text:
    """Anti-aliased text as cached alpha masks, blended onto numpy images."""

    def __init__(self):
        self._fonts: dict = {}
        self._cache: dict = {}

    def _font(self, size: int, bold: bool):
        key = (size, bold)
        if key not in self._fonts:
            try:
                from PIL import ImageFont
            except ImportError:
                self._fonts[key] = None
            else:
                path = font_path(bold)
                try:
                    self._fonts[key] = ImageFont.truetype(path, size) if path else ImageFont.load_default(size)
                except (OSError, TypeError):
                    self._fonts[key] = None
        return self._fonts[key]

    def mask(self, text: str, size: int, bold: bool = False) -> np.ndarray:
        """float32 [h, w] coverage in [0, 1]; h is the font's line height."""
        key = (text, size, bold)
        m = self._cache.get(key)
        if m is None:
            font = self._font(size, bold)
            if font is not None:
                from PIL import Image, ImageDraw

                asc, desc = font.getmetrics()
                w = max(1, int(math.ceil(font.getlength(text))) + 2)
                im = Image.new("L", (w, asc + desc), 0)
                ImageDraw.Draw(im).text((0, 0), text, font=font, fill=255)
                m = np.asarray(im, np.float32) / 255.0
            else:  # no Pillow: OpenCV's Hershey font
                import cv2

                scale = size / 30.0
                (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
                im = np.zeros((h + base + 2, w + 2), np.uint8)
                cv2.putText(im, text, (0, h), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, 1 + bold, cv2.LINE_AA)
                m = im.astype(np.float32) / 255.0
            if len(self._cache) > 2048:
                self._cache.clear()
            self._cache[key] = m
        return m

    def width(self, text: str, size: int, bold: bool = False) -> int:
        return self.mask(text, size, bold).shape[1]

    def draw(self, img: np.ndarray, text: str, x: float, y: float, color, size: int, bold: bool = False,
             anchor: str = "l", valign: str = "t", alpha: float = 1.0) -> int:
        """Draw ``text`` with its box's left/centre/right (``anchor`` l/c/r) at x and its
        top/middle (``valign`` t/m) at y; returns the width drawn."""
        m = self.mask(text, size, bold)
        h, w = m.shape
        x0 = int(round(x - (w / 2 if anchor == "c" else w if anchor == "r" else 0)))
        y0 = int(round(y - (h / 2 if valign == "m" else 0)))
        blend_mask(img, m * alpha, x0, y0, color)
        return w


def blend_mask(img, m, x0, y0, color) -> None:
    H, W = img.shape[:2]
    h, w = m.shape
    xa, ya, xb, yb = max(0, x0), max(0, y0), min(W, x0 + w), min(H, y0 + h)
    if xb <= xa or yb <= ya:
        return
    a = m[ya - y0:yb - y0, xa - x0:xb - x0, None]
    region = img[ya:yb, xa:xb].astype(np.float32)
    region += (np.asarray(color, np.float32) - region) * a
    img[ya:yb, xa:xb] = region.astype(np.uint8)


def fill(img, x0, y0, x1, y1, color, alpha: float = 1.0) -> None:
    """Axis-aligned box [x0, x1) x [y0, y1), clipped, optionally translucent."""
    H, W = img.shape[:2]
    xa, ya = max(0, int(round(x0))), max(0, int(round(y0)))
    xb, yb = min(W, int(round(x1))), min(H, int(round(y1)))
    if xb <= xa or yb <= ya:
        return
    if alpha >= 1.0:
        img[ya:yb, xa:xb] = color
    else:
        r = img[ya:yb, xa:xb]
        r[:] = r * (1.0 - alpha) + np.multiply(color, alpha, dtype=np.float32)


def rounded(img, x0, y0, x1, y1, r, color) -> None:
    import cv2

    x0, y0, x1, y1, r = (int(round(v)) for v in (x0, y0, x1, y1, r))
    r = max(0, min(r, (x1 - x0) // 2, (y1 - y0) // 2))
    fill(img, x0 + r, y0, x1 - r, y1, color)
    fill(img, x0, y0 + r, x1, y1 - r, color)
    for cx, cy in ((x0 + r, y0 + r), (x1 - r - 1, y0 + r), (x0 + r, y1 - r - 1), (x1 - r - 1, y1 - r - 1)):
        cv2.circle(img, (cx, cy), r, color, -1, cv2.LINE_AA)


def outline(img, x0, y0, x1, y1, color, alpha: float = 1.0) -> None:
    fill(img, x0, y0, x1, y0 + 1, color, alpha)
    fill(img, x0, y1 - 1, x1, y1, color, alpha)
    fill(img, x0, y0 + 1, x0 + 1, y1 - 1, color, alpha)
    fill(img, x1 - 1, y0 + 1, x1, y1 - 1, color, alpha)
