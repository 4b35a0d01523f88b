"""Concepts, image rendering, encoding and captions for the synthetic demo dataset.

A concept is a (shape, colour, background texture, background colour) combination such as
"red circle on striped light blue background". Every function that needs randomness takes a
`numpy.random.Generator`, so the output is a pure function of the generator's state.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "ring", "cross", "diamond", "hexagon")
COLOURS = {
    "red": (214, 40, 40),
    "green": (46, 160, 67),
    "blue": (36, 84, 200),
    "yellow": (240, 200, 30),
    "orange": (245, 130, 20),
    "purple": (128, 50, 160),
    "black": (20, 20, 20),
    "white": (250, 250, 250),
}
BACKGROUNDS = {
    "light blue": (170, 205, 235),
    "grey": (150, 150, 150),
    "beige": (225, 210, 170),
    "pale green": (180, 225, 180),
    "pink": (240, 180, 200),
    "dark teal": (20, 90, 95),
}
TEXTURES = ("plain", "striped", "checkered", "dotted", "gradient")
# Words a caption may use for each texture: (adjective, noun).
TEXTURE_WORDS = {
    "plain": (("plain", "solid"), ("a plain background", "a solid colour")),
    "striped": (("striped",), ("stripes", "a striped pattern")),
    "checkered": (("checkered", "checkerboard"), ("a checkerboard", "checks")),
    "dotted": (("dotted", "polka dot"), ("dots", "polka dots")),
    "gradient": (("gradient", "shaded"), ("a gradient", "a colour gradient")),
}
# Captions of 1 word or under 5 characters, as scraped alt-texts often are.
SHORT_CAPTIONS = ("image", "untitled", "IMG", "pic", "DSC", "photo", "logo", "icon")

FORMAT_WEIGHTS = {"jpg": 0.60, "png": 0.25, "webp": 0.15}
_PIL_FORMAT = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}


@dataclass(frozen=True)
class Concept:
    """One visual concept; `label` is its canonical text."""

    shape: str
    colour: str
    texture: str
    background: str

    @property
    def label(self) -> str:
        """Canonical description, e.g. 'red circle on striped light blue background'."""
        return f"{self.colour} {self.shape} on {self.texture} {self.background} background"


def concept_catalog(n: int = 48) -> list[Concept]:
    """A fixed list of `n` (at most 64) distinct concepts; independent of any seed.

    Concept i uses shape i % 8 and colour (i // 8 + 3 * (i % 8)) % 8, so the (shape, colour) pairs
    are all distinct; the texture and background cycle so that neighbours differ.
    """
    if not 1 <= n <= len(SHAPES) * len(COLOURS):
        raise ValueError(f"n must be in [1, {len(SHAPES) * len(COLOURS)}], got {n}")
    colours, backgrounds = list(COLOURS), list(BACKGROUNDS)
    catalog = []
    for i in range(n):
        s, j = i % len(SHAPES), i // len(SHAPES)
        catalog.append(
            Concept(
                shape=SHAPES[s],
                colour=colours[(j + 3 * s) % len(colours)],
                texture=TEXTURES[(i + j) % len(TEXTURES)],
                background=backgrounds[(5 * i + j) % len(backgrounds)],
            )
        )
    return catalog


def concept_grid() -> list[Concept]:
    """Every (shape, colour, background) combination: 8 x 8 x 6 = 384 concepts; independent of any seed.

    The texture is a fixed function of the other three, so that the label still names one texture.
    """
    return [
        Concept(shape=shape, colour=colour, texture=TEXTURES[(s + c + b) % len(TEXTURES)], background=background)
        for s, shape in enumerate(SHAPES)
        for c, colour in enumerate(COLOURS)
        for b, background in enumerate(BACKGROUNDS)
    ]


def _jitter(rgb: tuple[int, int, int], rng: np.random.Generator, amount: int) -> np.ndarray:
    """The colour with each channel moved by up to +-amount."""
    return np.clip(np.array(rgb) + rng.integers(-amount, amount + 1, size=3), 0, 255)


def _background(texture: str, rgb: tuple[int, int, int], w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """An h x w x 3 uint8 background of the given texture, with random period, phase and angle."""
    base = _jitter(rgb, rng, 12).astype(np.float64)
    alt = base * 0.6 if base.mean() > 100 else np.minimum(base * 1.8 + 40, 255)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    period = float(rng.uniform(6, 16))
    phase = float(rng.uniform(0, period))
    angle = float(rng.uniform(0, np.pi))
    u = x * np.cos(angle) + y * np.sin(angle) + phase
    v = -x * np.sin(angle) + y * np.cos(angle) + phase
    if texture == "plain":
        mask = np.zeros((h, w))
    elif texture == "striped":
        mask = (u // (period / 2)) % 2
    elif texture == "checkered":
        mask = ((u // period) + (v // period)) % 2
    elif texture == "dotted":
        du, dv = (u % period) - period / 2, (v % period) - period / 2
        mask = (du**2 + dv**2 < (period / 4) ** 2).astype(np.float64)
    elif texture == "gradient":
        mask = (u - u.min()) / max(np.ptp(u), 1.0)
    else:
        raise ValueError(f"unknown texture {texture!r}")
    img = base * (1 - mask[..., None]) + alt * mask[..., None]
    light = float(rng.uniform(0, 2 * np.pi))  # uneven lighting, so samples of a concept differ in pHash
    ramp = x * np.cos(light) + y * np.sin(light)
    ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1.0) - 0.5
    img = img * (1 + float(rng.uniform(0.2, 0.6)) * ramp[..., None])
    return np.clip(img, 0, 255).astype(np.uint8)


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a polygonal shape of radius r centred on (cx, cy), rotated by angle (radians)."""
    if shape == "square":
        radii, n = [r] * 4, 4
    elif shape == "triangle":
        radii, n = [r] * 3, 3
    elif shape == "diamond":
        radii, n = [r, r * 0.6] * 2, 4
    elif shape == "hexagon":
        radii, n = [r] * 6, 6
    elif shape == "star":
        radii, n = [r, r * 0.45] * 5, 10
    elif shape == "cross":
        a = r * 0.35
        pts = [(a, r), (a, a), (r, a), (r, -a), (a, -a), (a, -r)]
        pts += [(-x, -y) for x, y in pts]
        c, s = np.cos(angle), np.sin(angle)
        return [(cx + px * c - py * s, cy + px * s + py * c) for px, py in pts]
    else:
        raise ValueError(f"{shape!r} is not a polygon")
    thetas = angle + 2 * np.pi * np.arange(n) / n
    return [(cx + rr * np.cos(t), cy + rr * np.sin(t)) for rr, t in zip(radii, thetas)]


def render(concept: Concept, width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """Render the concept as an RGB image with random position, size, rotation and colour jitter."""
    img = render_background(concept, width, height, rng)
    draw = ImageDraw.Draw(img)
    side = min(width, height)
    r = side * float(rng.uniform(0.22, 0.42))
    cx = width / 2 + float(rng.uniform(-0.5, 0.5)) * (width - 2 * r)
    cy = height / 2 + float(rng.uniform(-0.5, 0.5)) * (height - 2 * r)
    angle = float(rng.uniform(0, 2 * np.pi))
    fill = tuple(int(c) for c in _jitter(COLOURS[concept.colour], rng, 20))
    if concept.shape in ("circle", "ring"):
        box = (cx - r, cy - r, cx + r, cy + r)
        ring_width = max(1, round(r * 0.35)) if concept.shape == "ring" else 0
        draw.ellipse(box, fill=None if ring_width else fill, outline=fill, width=ring_width)
    else:
        draw.polygon(_polygon(concept.shape, cx, cy, r, angle), fill=fill)
    return img


def render_background(concept: Concept, width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """The concept's textured background with no object on it: a low-information image."""
    return Image.fromarray(_background(concept.texture, BACKGROUNDS[concept.background], width, height, rng))


def pick_format(rng: np.random.Generator) -> str:
    """An image format drawn from FORMAT_WEIGHTS (jpg / png / webp)."""
    names = list(FORMAT_WEIGHTS)
    return names[int(rng.choice(len(names), p=list(FORMAT_WEIGHTS.values())))]


def encode(img: Image.Image, fmt: str, quality: int) -> bytes:
    """Encode the image; `quality` applies to jpg and webp and is ignored for png."""
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, "PNG", compress_level=6)
    else:
        img.save(buf, _PIL_FORMAT[fmt], quality=quality)
    return buf.getvalue()


def _article(word: str) -> str:
    """'a' or 'an' before the word."""
    return "an" if word[0] in "aeiou" else "a"


def caption(concept: Concept, rng: np.random.Generator) -> str:
    """A noisy caption of at least 3 words describing the concept."""
    c, s, bg = concept.colour, concept.shape, concept.background
    adjs, nouns = TEXTURE_WORDS[concept.texture]
    adj, noun = str(rng.choice(adjs)), str(rng.choice(nouns))
    templates = (
        f"a photo of {_article(c)} {c} {s}",
        f"{c} {s} on {noun}, clip art",
        f"{_article(c)} {c} {s} on {_article(adj)} {adj} {bg} background",
        f"{c} {s} icon, {bg} {adj} backdrop",
        f"simple {s} drawing in {c} over {noun}",
        f"{c} {s} - {adj} {bg} wallpaper",
    )
    text = templates[int(rng.integers(len(templates)))]
    roll = rng.random(3)
    if roll[0] < 0.3:
        text = text[0].upper() + text[1:]
    if roll[1] < 0.25:
        text += str(rng.choice([" - stock image", " | free vector", " HD", ".", " #art"]))
    if roll[2] < 0.05:
        text = text.upper()
    return text
