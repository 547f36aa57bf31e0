"""The demo's picture: live video, the events active now, a scrolling timeline.

:class:`Overlay` draws a :class:`~avparse.tools.demo_app.state.View` (what
``state.OverlayState`` collected) into an RGB image (OpenCV for shapes and
scaling, Pillow for anti-aliased text through ``paint``; both imported inside).

Layout (any size, laid out for 16:9): a header (title, source, media
clock), the video scaled into the left column with an audio level meter,
the events active now (class and modality badges, how long, the ground
truth of a generated scene) and the current latency below it; on the right
a timeline of the last ``window_seconds`` with the audio envelope on top and
one row per class, each with an audio, a visual and an audio-visual lane.
Predicted spans are solid bars; the ground truth (when known) lies faintly
beneath them; the stretch of media time not yet decided (the snippet being
filled and processed) is hatched.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from avparse.core.labels import MODALITIES

from .paint import Text, blend_mask, fill, outline, rounded
from .state import OverlayConfig, View

LANE_TAGS = {"audio": "A", "visual": "V", "audiovisual": "AV"}
BADGE_TEXT = {"audio": "AUDIO", "visual": "VISUAL", "audiovisual": "AUDIO-VISUAL"}

# RGB. Orange / blue / green stay apart for the common colour-vision deficiencies
# (blue-orange is the safe pair; green differs from both in lightness).
COLORS = {
    "audio": (255, 158, 27),
    "visual": (61, 142, 255),
    "audiovisual": (46, 204, 113),
    "bg": (16, 18, 23),
    "panel": (27, 30, 38),
    "panel_edge": (46, 51, 64),
    "stripe": (32, 35, 45),
    "grid": (52, 57, 71),
    "text": (236, 238, 243),
    "dim": (142, 149, 166),
    "faint": (96, 102, 118),
    "live": (239, 68, 68),
    "envelope": (196, 202, 214),
    "meter_low": (46, 204, 113),
    "meter_mid": (250, 204, 21),
    "meter_high": (239, 68, 68),
}


def _pretty(label: str) -> str:
    """A class name for people: LLP's "Frying_(food)" -> "Frying (food)"."""
    return label.replace("_", " ")


def _clock(t: float) -> str:
    t = max(0.0, t)
    m, s = divmod(t, 60.0)
    return f"{int(m):02d}:{s:04.1f}" if m < 60 else f"{int(m // 60)}:{int(m % 60):02d}:{s:04.1f}"


class Overlay:
    """Draws a :class:`View` into an RGB image of ``config.width`` x ``config.height``."""

    def __init__(self, config: OverlayConfig = OverlayConfig(), *, classes: Sequence[str], title: str = "avparse",
                 source: str = "", model: str = ""):
        self.config = config
        self.classes = tuple(classes)
        self.title, self.source, self.model = title, source, model
        self.text = Text()
        W, H = config.width, config.height
        s = self.s = H / 720.0
        m = self.m = round(16 * s)
        self.header = round(52 * s)
        # left column: video, level meter, events now, latency
        self.lw = min(round(480 * s), W // 2 - m)
        self.video = (m, self.header + round(6 * s), m + self.lw, self.header + round(6 * s) + round(self.lw * 0.75))
        y = self.video[3] + round(12 * s)
        self.meter = (m, y, m + self.lw, y + round(28 * s))
        y = self.meter[3] + round(12 * s)
        self.latency_box = (m, H - m - round(54 * s), m + self.lw, H - m)
        self.now_box = (m, y, m + self.lw, self.latency_box[1] - round(10 * s))
        # right: timeline
        x0 = m + self.lw + m
        self.tl = (x0, self.video[1], W - m, H - m)
        self.plot_x1 = W - m - round(10 * s)
        self.tl_legend_h = round(34 * s)
        self.axis_h = round(26 * s)
        self.env_h = round(40 * s)
        top = self.tl[1] + self.tl_legend_h + self.env_h + round(8 * s)
        bottom = self.tl[3] - self.axis_h
        n = max(1, len(self.classes))
        self.row_h = max(6.0, min(54 * s, (bottom - top) / n))
        self.rows_y0 = top
        self.rows_y1 = top + self.row_h * n
        # the label column: as wide as the longest class name needs (within bounds)
        self.tag_size = round(min(10 * s, (self.row_h - 2) / 3 * 0.95))
        self.label_size = round(min(15 * s, max(9.0, self.row_h * 0.5)))
        self.tags_w = round(30 * s) if self.tag_size >= 7 else round(8 * s)
        longest = max((self.text.width(_pretty(c), self.label_size) for c in self.classes), default=0)
        self.label_w = int(min(max(longest + self.tags_w + round(16 * s), 110 * s), 200 * s))
        self.plot_x0 = x0 + self.label_w
        self._base = None
        self._hatch = None

    # ------------------------------------------------------------ geometry
    def x_of(self, t: float, now: float) -> float:
        c = self.config
        return self.plot_x1 - (now - t) * (self.plot_x1 - self.plot_x0) / c.window_seconds

    def lane_box(self, label: str, modality: str) -> tuple[float, float]:
        """(y0, y1) of a class's lane for ``modality``."""
        i = self.classes.index(label)
        pad = max(1.0, self.row_h * 0.08)
        lane = (self.row_h - 2 * pad) / 3
        y0 = self.rows_y0 + i * self.row_h + pad + MODALITIES.index(modality) * lane
        return y0, y0 + lane

    # ------------------------------------------------------------ static parts
    def _static(self) -> np.ndarray:
        c, s, T = self.config, self.s, self.text
        img = np.empty((c.height, c.width, 3), np.uint8)
        img[:] = COLORS["bg"]
        m = self.m
        # header
        w = T.draw(img, self.title, m, round(12 * s), COLORS["text"], round(24 * s), bold=True)
        T.draw(img, "live audio-visual event parsing", m + w + round(12 * s), round(20 * s), COLORS["dim"], round(14 * s))
        sub = "  ·  ".join(x for x in (self.source, self.model) if x)
        if sub:
            T.draw(img, sub, c.width // 2 + round(40 * s), round(20 * s), COLORS["dim"], round(14 * s), anchor="c")
        for box in (self.video, self.meter, self.now_box, self.latency_box, self.tl):
            rounded(img, *box, round(8 * s), COLORS["panel"])
        # level meter caption
        T.draw(img, "LEVEL", self.meter[0] + round(10 * s), (self.meter[1] + self.meter[3]) / 2, COLORS["dim"],
               round(11 * s), bold=True, valign="m")
        bx0, by0, bx1, by1, n = self._meter_geometry()
        for i in range(n):
            seg = (bx1 - bx0) / n
            fill(img, bx0 + i * seg, by0, bx0 + (i + 1) * seg - max(1, round(2 * s)), by1, self._meter_color(i, n),
                  0.14)
        T.draw(img, "NOW", self.now_box[0] + round(12 * s), self.now_box[1] + round(8 * s), COLORS["dim"],
               round(11 * s), bold=True)
        T.draw(img, "LATENCY", self.latency_box[0] + round(12 * s), self.latency_box[1] + round(8 * s),
               COLORS["dim"], round(11 * s), bold=True)
        # timeline: legend, rows, labels
        x, y = self.tl[0] + round(12 * s), self.tl[1] + round(10 * s)
        T.draw(img, "TIMELINE", x, y + round(1 * s), COLORS["dim"], round(11 * s), bold=True)
        lx = self.plot_x0
        sw = round(22 * s)
        for mod in MODALITIES:
            rounded(img, lx, y + round(2 * s), lx + sw, y + round(12 * s), round(3 * s), COLORS[mod])
            lx += sw + round(6 * s)
            lx += T.draw(img, {"audiovisual": "audio-visual"}.get(mod, mod), lx, y, COLORS["text"], round(12 * s))
            lx += round(16 * s)
        fill(img, lx, y + round(1 * s), lx + sw, y + round(13 * s), COLORS["dim"], 0.22)
        outline(img, lx, y + round(1 * s), lx + sw, y + round(13 * s), COLORS["dim"], 0.6)
        lx += sw + round(6 * s)
        lx += T.draw(img, "ground truth", lx, y, COLORS["text"], round(12 * s)) + round(16 * s)
        hx = lx
        fill(img, hx, y + round(1 * s), hx + sw, y + round(13 * s), COLORS["bg"])
        self._hatch_box(img, hx, y + round(1 * s), hx + sw, y + round(13 * s))
        T.draw(img, "deciding", hx + sw + round(6 * s), y, COLORS["text"], round(12 * s))
        ey0 = self.tl[1] + self.tl_legend_h
        T.draw(img, "sound", self.tl[0] + round(12 * s), ey0 + self.env_h / 2, COLORS["dim"], round(13 * s),
               valign="m")
        tag_size, label_size = self.tag_size, self.label_size
        for i, name in enumerate(self.classes):
            y0 = self.rows_y0 + i * self.row_h
            if i % 2 == 0:
                fill(img, self.tl[0] + round(4 * s), y0, self.plot_x1, y0 + self.row_h, COLORS["stripe"])
            text, size = self._fit(_pretty(name), self.label_w - self.tags_w - round(12 * s), label_size)
            T.draw(img, text, self.tl[0] + round(12 * s), y0 + self.row_h / 2, COLORS["text"], size, valign="m")
            if tag_size >= 7:
                for mod in MODALITIES:
                    ly0, ly1 = self.lane_box(name, mod)
                    T.draw(img, LANE_TAGS[mod], self.plot_x0 - round(6 * s), (ly0 + ly1) / 2, COLORS["faint"],
                           tag_size, anchor="r", valign="m")
        return img

    def _hatch_box(self, img, x0, y0, x1, y1, alpha: float = 0.35) -> None:
        H, W = img.shape[:2]
        xa, ya, xb, yb = max(0, int(round(x0))), max(0, int(round(y0))), min(W, int(round(x1))), min(H, int(round(y1)))
        if xb <= xa or yb <= ya:
            return
        if self._hatch is None:
            yy, xx = np.mgrid[0:H, 0:W]
            self._hatch = ((xx + yy) % max(4, round(7 * self.s))) < max(1, round(1.5 * self.s))
        lines = self._hatch[ya:yb, xa:xb]
        r = img[ya:yb, xa:xb]
        r[lines] = (r[lines] + (np.asarray(COLORS["dim"], np.float32) - r[lines]) * alpha).astype(np.uint8)

    # ------------------------------------------------------------ the picture
    def render(self, v: View) -> np.ndarray:
        if self._base is None:
            self._base = self._static()
        img = self._base.copy()
        self._header(img, v)
        self._video(img, v)
        self._meter(img, v)
        self._now(img, v)
        self._latency(img, v)
        self._timeline(img, v)
        return img

    def _header(self, img, v: View) -> None:
        s, T, c = self.s, self.text, self.config
        x = c.width - self.m
        x -= T.draw(img, _clock(v.t), x, round(12 * s), COLORS["text"], round(24 * s), bold=True, anchor="r")
        x -= round(12 * s)
        if v.ended:
            T.draw(img, "ENDED", x, round(20 * s), COLORS["dim"], round(13 * s), bold=True, anchor="r")
        else:
            w = T.draw(img, "LIVE", x, round(20 * s), COLORS["live"], round(13 * s), bold=True, anchor="r")
            import cv2

            cv2.circle(img, (int(x - w - round(9 * s)), int(round(28 * s))), max(2, round(5 * s)), COLORS["live"],
                       -1, cv2.LINE_AA)

    def _video(self, img, v: View) -> None:
        import cv2

        x0, y0, x1, y1 = self.video
        s = self.s
        if v.frame is None:
            self.text.draw(img, "waiting for video…", (x0 + x1) / 2, (y0 + y1) / 2, COLORS["dim"], round(16 * s),
                           anchor="c", valign="m")
            return
        f = v.frame
        h, w = f.shape[:2]
        pad = round(6 * s)
        bw, bh = x1 - x0 - 2 * pad, y1 - y0 - 2 * pad
        k = min(bw / w, bh / h)
        nw, nh = max(1, int(w * k)), max(1, int(h * k))
        interp = cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA
        pic = cv2.resize(np.ascontiguousarray(f), (nw, nh), interpolation=interp)
        px, py = x0 + pad + (bw - nw) // 2, y0 + pad + (bh - nh) // 2
        img[py:py + nh, px:px + nw] = pic
        # the events active now, as badges over the picture's bottom edge
        active = self._active(v)
        bx, by = px + round(8 * s), py + nh - round(8 * s)
        for label, mods in active[:4]:
            by -= round(24 * s)
            label = _pretty(label)
            name_w = self.text.width(label, round(13 * s), True)
            width = name_w + round(16 * s) + sum(self.text.width(LANE_TAGS[m], round(11 * s), True) + round(12 * s)
                                                  for m in mods)
            fill(img, bx, by, bx + width, by + round(20 * s), (0, 0, 0), 0.55)
            xx = bx + round(6 * s)
            xx += self.text.draw(img, label, xx, by + round(10 * s), COLORS["text"], round(13 * s), True,
                                 valign="m") + round(6 * s)
            for mod in mods:
                tw = self.text.width(LANE_TAGS[mod], round(11 * s), True)
                rounded(img, xx, by + round(3 * s), xx + tw + round(8 * s), by + round(17 * s), round(3 * s),
                         COLORS[mod])
                self.text.draw(img, LANE_TAGS[mod], xx + round(4 * s), by + round(10 * s), (15, 15, 20),
                               round(11 * s), True, valign="m")
                xx += tw + round(12 * s)

    def _active(self, v: View) -> list[tuple[str, list[str]]]:
        by_class: dict[str, list[str]] = {}
        for sp in v.spans:
            if sp.offset is None:
                by_class.setdefault(sp.label, []).append(sp.modality)
        order = {c: i for i, c in enumerate(self.classes)}
        return [(k, sorted(ms, key=MODALITIES.index)) for k, ms in sorted(by_class.items(),
                                                                          key=lambda kv: order.get(kv[0], 1 << 20))]

    def _meter_geometry(self):
        s = self.s
        x0, y0, x1, y1 = self.meter
        return x0 + round(64 * s), y0 + round(8 * s), x1 - round(76 * s), y1 - round(8 * s), 40

    def _meter_color(self, i: int, n: int):
        db = self.config.floor_db * (1 - (i + 0.5) / n)
        return COLORS["meter_high"] if db > -6 else COLORS["meter_mid"] if db > -20 else COLORS["meter_low"]

    def _meter(self, img, v: View) -> None:
        c, s = self.config, self.s
        x0, y0, x1, y1 = self.meter
        bx0, by0, bx1, by1, n = self._meter_geometry()
        seg = (bx1 - bx0) / n
        frac = min(1.0, max(0.0, (v.level_db - c.floor_db) / -c.floor_db))
        lit = int(round(frac * n))
        for i in range(lit):   # the unlit segments are in the static picture
            fill(img, bx0 + i * seg, by0, bx0 + (i + 1) * seg - max(1, round(2 * s)), by1, self._meter_color(i, n))
        pf = min(1.0, max(0.0, (v.peak_db - c.floor_db) / -c.floor_db))
        if pf > 0:
            px = bx0 + pf * (bx1 - bx0)
            fill(img, px - max(1, round(1.5 * s)), by0 - round(2 * s), px + max(1, round(1.5 * s)),
                  by1 + round(2 * s), COLORS["text"])
        txt = f"{v.level_db:.0f} dB" if v.level_db > c.floor_db else f"< {c.floor_db:.0f} dB"
        self.text.draw(img, txt, x1 - round(10 * s), (y0 + y1) / 2, COLORS["text"], round(13 * s), anchor="r",
                       valign="m")

    def _now(self, img, v: View) -> None:
        s, T = self.s, self.text
        x0, y0, x1, y1 = self.now_box
        y = y0 + round(28 * s)
        rh = round(26 * s)
        truth_h = round(24 * s) if v.truth else 0
        active = self._active(v)
        since = {}
        for sp in v.spans:
            if sp.offset is None:
                since[sp.label] = min(since.get(sp.label, sp.onset), sp.onset)
        room = max(1, int((y1 - truth_h - y) // rh))
        if not active:
            T.draw(img, "nothing detected right now", x0 + round(12 * s), y + round(4 * s), COLORS["faint"],
                   round(14 * s))
        for k, (label, mods) in enumerate(active):
            if k == room - 1 and len(active) > room:
                T.draw(img, f"+ {len(active) - k} more", x0 + round(12 * s), y, COLORS["dim"], round(13 * s))
                break
            name, size = self._fit(_pretty(label), round(112 * s), round(16 * s), bold=True)
            T.draw(img, name, x0 + round(12 * s), y + rh / 2 - round(3 * s), COLORS["text"], size,
                   bold=True, valign="m")
            bx = x0 + round(130 * s)
            for mod in mods:
                tw = T.width(BADGE_TEXT[mod], round(11 * s), True)
                rounded(img, bx, y + round(2 * s), bx + tw + round(14 * s), y + rh - round(8 * s), round(4 * s),
                         COLORS[mod])
                T.draw(img, BADGE_TEXT[mod], bx + round(7 * s), y + rh / 2 - round(3 * s), (15, 15, 20),
                       round(11 * s), True, valign="m")
                bx += tw + round(20 * s)
            T.draw(img, f"{max(0.0, v.t - since[label]):.0f} s", x1 - round(12 * s), y + rh / 2 - round(3 * s),
                   COLORS["dim"], round(13 * s), anchor="r", valign="m")
            y += rh
        if v.truth:
            now = sorted({(lab, mod) for lab, mod, on, off in v.truth if on <= v.t < off and mod != "audiovisual"})
            parts: dict[str, str] = {}
            for lab, mod in now:
                parts[lab] = parts.get(lab, "") + LANE_TAGS[mod]
            text = "truth now: " + (", ".join(f"{_pretty(k)} ({'+'.join(x for x in ('A', 'V') if x in t)})"
                                              for k, t in parts.items()) if parts else "nothing")
            T.draw(img, text, x0 + round(12 * s), y1 - round(22 * s), COLORS["dim"], round(12 * s))

    def _fit(self, text: str, width: int, size: int, bold: bool = False) -> tuple[str, int]:
        """``text`` at ``size`` or smaller (down to 3/4 of it), cut with an ellipsis if still too wide."""
        T = self.text
        for sz in range(size, max(8, int(size * 0.75)) - 1, -1):
            if T.width(text, sz, bold) <= width:
                return text, sz
        sz = max(8, int(size * 0.75))
        while len(text) > 1 and T.width(text + "…", sz, bold) > width:
            text = text[:-1]
        return text.rstrip() + "…", sz

    def _latency(self, img, v: View) -> None:
        s, T = self.s, self.text
        x0, y0, x1, y1 = self.latency_box
        if v.latency is None:
            T.draw(img, "waiting for the first snippet…", x0 + round(110 * s), (y0 + y1) / 2, COLORS["faint"],
                   round(14 * s), valign="m")
        else:
            w = T.draw(img, f"{v.latency:.2f} s", x0 + round(104 * s), (y0 + y1) / 2, COLORS["text"],
                       round(24 * s), bold=True, valign="m")
            T.draw(img, f"= {v.latency - v.compute:.2f} s snippet + {v.compute:.2f} s compute",
                   x0 + round(116 * s) + w, (y0 + y1) / 2 + round(2 * s), COLORS["dim"], round(12 * s), valign="m")
        T.draw(img, f"{v.events} events" + (f"  ·  {v.drops} dropped" if v.drops else ""), x0 + round(12 * s),
               y1 - round(20 * s), COLORS["faint"], round(11 * s))

    def _timeline(self, img, v: View) -> None:
        c, s, T = self.config, self.s, self.text
        now = v.t
        x0, x1 = self.plot_x0, self.plot_x1
        ey0 = self.tl[1] + self.tl_legend_h
        ey1 = ey0 + self.env_h
        ry0, ry1 = self.rows_y0, self.rows_y1
        # seconds grid, labels every 5 s
        first = math.ceil(now - c.window_seconds)
        for sec in range(first, int(math.floor(now)) + 1):
            x = self.x_of(sec, now)
            major = sec % 5 == 0
            fill(img, x, ey0, x + 1, ry1, COLORS["grid"], 0.9 if major else 0.45)
            if major and sec >= 0 and x0 + 16 * s < x < x1 - 30 * s:
                T.draw(img, _clock(sec)[:-2], x, ry1 + round(6 * s), COLORS["dim"], round(11 * s), anchor="c")
        # audio envelope: one column per pixel, mirrored about the lane's middle
        if v.envelope is not None and len(v.envelope):
            xa, xb = int(math.ceil(x0)), int(x1)
            ts = now - (x1 - np.arange(xa, xb)) * c.window_seconds / (x1 - x0)
            idx = np.floor((ts - v.envelope_t0) / c.envelope_step).astype(int)
            ok = (idx >= 0) & (idx < len(v.envelope)) & (ts >= 0)
            lo_db, hi_db = c.envelope_db
            amp = np.where(ok, np.clip((v.envelope[np.clip(idx, 0, len(v.envelope) - 1)] - lo_db)
                                       / (hi_db - lo_db), 0, 1), -1.0)   # -1: no sound known there
            ya, yb = int(ey0), int(ey1)
            mid, half = (ey0 + ey1) / 2, (ey1 - ey0) / 2 - 2
            ys = np.arange(ya, yb)[:, None] + 0.5
            mask = (np.abs(ys - mid) <= amp[None, :] * half + 0.5).astype(np.float32) * 0.75
            blend_mask(img, mask, xa, ya, COLORS["envelope"])
        # ground truth, faint, beneath
        for label, mod, on, off in v.truth:
            if label not in self.classes or off <= now - c.window_seconds or on >= now:
                continue
            ly0, ly1 = self.lane_box(label, mod)
            xa, xb = max(x0, self.x_of(on, now)), min(x1, self.x_of(off, now))
            fill(img, xa, ly0, xb, ly1, COLORS[mod], 0.2)
            outline(img, xa, ly0, xb, ly1, COLORS[mod], 0.5)
        # predicted spans
        for sp in v.spans:
            if sp.label not in self.classes:
                continue
            end = now if sp.offset is None else sp.offset
            if end <= now - c.window_seconds:
                continue
            ly0, ly1 = self.lane_box(sp.label, sp.modality)
            inset = (ly1 - ly0) * 0.2
            xa, xb = max(x0, self.x_of(sp.onset, now)), min(x1, self.x_of(end, now))
            if xb - xa < 2:
                xb = xa + 2
            fill(img, xa, ly0 + inset, xb, ly1 - inset, COLORS[sp.modality])
        # not decided yet: from the decision frontier to now
        if v.frontier is not None and v.frontier < now:
            xa = max(x0, self.x_of(v.frontier, now))
            self._hatch_box(img, xa, ey0, x1, ry1, alpha=0.22)
        # now
        fill(img, x1, ey0 - round(4 * s), x1 + max(2, round(2 * s)), ry1 + round(4 * s), COLORS["text"])
        T.draw(img, "now", x1, ry1 + round(6 * s), COLORS["text"], round(11 * s), bold=True, anchor="c")
