"""Procedural rendering of one side-view bird with CUB-style part keypoints.

All bird geometry lives in a canonical frame: origin at the body centre, x towards the beak,
y downwards, lengths in pixels of an 80-px image at scale 1. A pose (mirror, rotation, scale,
translation) maps canonical points to image pixels. Shapes and keypoints go through the same map,
so keypoints are correct by construction. Image coordinates are continuous: pixel (col i, row j)
covers [i, i+1) x [j, j+1), so the pixel under keypoint (x, y) is ``image[int(y), int(x)]``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

RGB = tuple[int, int, int]

COLORS: dict[str, RGB] = {
    "black": (28, 28, 32),
    "white": (242, 242, 236),
    "red": (212, 36, 36),
    "orange": (246, 134, 28),
    "yellow": (246, 214, 40),
    "blue": (40, 86, 214),
    "green": (40, 152, 62),
    "chestnut": (150, 62, 30),
}

# Species attributes and their values. The first value is the default: the value a species takes
# when the attribute does not vary in its task.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "crown_color": ("black", "red", "yellow", "blue", "white", "orange"),
    "breast_color": ("white", "red", "yellow", "orange", "blue", "black"),
    "wing_color": ("black", "chestnut", "blue", "green", "yellow", "white"),
    "wing_pattern": ("plain", "bars", "spots", "stripes"),
    "tail_shape": ("square", "fan", "forked", "pointed"),
    "tail_color": ("black", "white", "chestnut", "blue"),
    "beak_shape": ("short", "long", "hooked"),
    "beak_color": ("black", "yellow", "red", "white"),
    "eye_ring": ("none", "white", "yellow", "red", "blue"),
}

# CUB-200-2011 part names, in CUB's id order (part id = index + 1).
PART_NAMES: tuple[str, ...] = (
    "back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg",
    "left wing", "nape", "right eye", "right leg", "right wing", "tail", "throat",
)

# Muted plumage colours, drawn per image (body colour is a nuisance, never a species trait).
BODY_COLORS: tuple[RGB, ...] = ((128, 120, 72), (176, 146, 104), (112, 88, 66), (104, 112, 126), (146, 132, 120))
EYE_COLOR: RGB = (12, 12, 14)
LEG_COLOR: RGB = (72, 64, 60)
PERCH_COLOR: RGB = (96, 70, 46)
SKY_COLORS: tuple[RGB, ...] = ((170, 205, 235), (214, 226, 232), (236, 232, 214), (188, 214, 196))
FOLIAGE_COLORS: tuple[RGB, ...] = ((62, 110, 52), (96, 140, 60), (140, 160, 80), (44, 80, 50), (120, 100, 60))

SUPERSAMPLING = 4  # shapes are drawn at 4x resolution, then box-filtered down (anti-aliasing)
REFERENCE_SIZE = 80.0  # canonical lengths are pixels of an 80-px image at scale 1

BODY_AXES = (13.0, 8.5)  # semi-axes of the body ellipse
BODY_TILT_DEG = -20.0  # body axis points up towards the head
HEAD_CENTER = np.array([11.5, -9.5])
HEAD_RADIUS = 7.0
EYE_OFFSET = np.array([2.7, -0.4])  # from the head centre
EYE_RADIUS, EYE_RING_RADIUS = 1.5, 3.0
BEAK_BASE = HEAD_CENTER + np.array([0.7 * HEAD_RADIUS, 0.6])
BEAK_SIZES = {"short": (6.8, 2.6), "long": (12.5, 1.8), "hooked": (9.5, 2.5)}  # (length, base half-height)
WING_CENTER, WING_HALF_LENGTH, WING_HALF_WIDTH, WING_TILT_DEG = np.array([-4.0, -1.8]), 9.5, 6.2, 4.0
TAIL_ROOT, TAIL_ANGLE_DEG, TAIL_LENGTH = np.array([-10.5, 1.0]), 165.0, 12.0  # root and angle in body frame
LEG_TOP, LEG_LENGTH, LEG_WIDTH = np.array([1.0, 0.95 * BODY_AXES[1]]), 6.0, 1.4
MARGIN_FRACTION = 0.08  # the bird's bounding box keeps this fraction of the side from every border


@dataclass(frozen=True)
class RenderSettings:
    """Nuisance ranges: bird scale range, max |rotation| in degrees, colour jitter (relative), pixel noise std (0-255)."""

    image_size: int
    scale_range: tuple[float, float]
    max_rotation_deg: float
    color_jitter: float
    pixel_noise: float


@dataclass(frozen=True)
class RenderedBird:
    """One image: ``image`` (H, W, 3) uint8; ``bbox`` (x, y, width, height) px; ``parts`` CUB name -> (x, y) px or None if hidden."""

    image: np.ndarray
    bbox: tuple[float, float, float, float]
    parts: dict[str, tuple[float, float] | None]


@dataclass(frozen=True)
class _Pose:
    """Affine canonical -> image map ``p_image = linear @ p + offset``; ``mirrored`` means the bird faces left."""

    linear: np.ndarray
    offset: np.ndarray
    mirrored: bool

    def apply(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) canonical points -> (N, 2) image pixels."""
        return points @ self.linear.T + self.offset

    @property
    def scale(self) -> float:
        """Image pixels per canonical unit."""
        return float(np.sqrt(abs(np.linalg.det(self.linear))))


def render_bird(attributes: dict[str, str], rng: np.random.Generator, settings: RenderSettings) -> RenderedBird:
    """Draws one bird with the given attribute values (one value per key of ATTRIBUTES) over a random scene."""
    colors = _image_colors(attributes, rng, settings.color_jitter)
    shapes = _bird_shapes(attributes["tail_shape"], attributes["wing_pattern"], attributes["beak_shape"],
                          attributes["eye_ring"] != "none")
    pose = _sample_pose(rng, shapes, settings)
    foot = pose.apply(_foot_point()[None])[0]
    canvas = _background(rng, settings.image_size)
    _draw_perch(canvas, rng, foot, pose)
    _draw_bird(canvas, shapes, colors, pose)
    image = _downsample_with_noise(canvas, rng, settings.pixel_noise)
    return RenderedBird(image=image, bbox=_bounding_box(shapes, pose), parts=_image_keypoints(attributes, pose))


# ----------------------------------------------------------------------------- colours


def _image_colors(attributes: dict[str, str], rng: np.random.Generator, jitter: float) -> dict[str, RGB]:
    """Per-image colour of every drawing role: nominal colour x shared brightness factor + small per-role noise."""
    body = BODY_COLORS[rng.integers(len(BODY_COLORS))]
    wing = COLORS[attributes["wing_color"]]
    nominal = {
        "body": body,
        "belly": _mix(body, COLORS["white"], 0.55),
        "outline": _mix(body, (0, 0, 0), 0.45),
        "breast": COLORS[attributes["breast_color"]],
        "crown": COLORS[attributes["crown_color"]],
        "wing": wing,
        "wing_outline": _mix(wing, (0, 0, 0), 0.4),
        "wing_pattern": COLORS["white"] if _luminance(wing) < 110 else COLORS["black"],
        "tail": COLORS[attributes["tail_color"]],
        "beak": COLORS[attributes["beak_color"]],
        "eye": EYE_COLOR,
        "leg": LEG_COLOR,
    }
    if attributes["eye_ring"] != "none":
        nominal["eye_ring"] = COLORS[attributes["eye_ring"]]
    brightness = 1.0 + rng.uniform(-jitter, jitter)
    return {role: _jittered(rgb, brightness, rng, 40.0 * jitter) for role, rgb in nominal.items()}


def _jittered(rgb: RGB, brightness: float, rng: np.random.Generator, noise_std: float) -> RGB:
    """Colour scaled by ``brightness`` plus Gaussian per-channel noise (0-255 units), clipped."""
    values = np.asarray(rgb, dtype=float) * brightness + rng.normal(0.0, noise_std, 3)
    return tuple(int(v) for v in np.clip(np.round(values), 0, 255))


def _mix(a: RGB, b: RGB, weight_b: float) -> RGB:
    """Linear blend of two colours."""
    return tuple(int(round((1 - weight_b) * x + weight_b * y)) for x, y in zip(a, b))


def _luminance(rgb: RGB) -> float:
    """Rec. 601 luma, 0-255."""
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


# ----------------------------------------------------------------------------- canonical geometry


def _rotation_matrix(angle_deg: float) -> np.ndarray:
    """(2, 2) rotation; positive angles turn clockwise on screen, since y points down."""
    a = np.deg2rad(angle_deg)
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


def _rotate(points: np.ndarray, angle_deg: float) -> np.ndarray:
    """Rotates (N, 2) points about the origin."""
    return points @ _rotation_matrix(angle_deg).T


def _ellipse(center: np.ndarray, axes: tuple[float, float], n: int = 40) -> np.ndarray:
    """(n, 2) outline of an axis-aligned ellipse."""
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    return np.stack([axes[0] * np.cos(t), axes[1] * np.sin(t)], axis=1) + center


def _body_to_canonical(points: np.ndarray) -> np.ndarray:
    """Body frame (x along the tilted body axis) -> canonical frame."""
    return _rotate(np.atleast_2d(points), BODY_TILT_DEG)


def _wing_to_canonical(points: np.ndarray) -> np.ndarray:
    """Wing frame (x from wing tip -L to wing front +L) -> canonical frame."""
    return _body_to_canonical(_rotate(np.atleast_2d(points), WING_TILT_DEG) + WING_CENTER)


def _tail_to_canonical(points: np.ndarray) -> np.ndarray:
    """Tail frame (x from the root 0 to the tip L) -> canonical frame."""
    return _body_to_canonical(_rotate(np.atleast_2d(points), TAIL_ANGLE_DEG) + TAIL_ROOT)


def _body_sector(angle_from: float, angle_to: float, inner: tuple[float, float]) -> np.ndarray:
    """Body-frame patch bounded by the body outline between two angles (deg) and an inner apex point."""
    t = np.deg2rad(np.linspace(angle_from, angle_to, 16))
    arc = np.stack([BODY_AXES[0] * np.cos(t), BODY_AXES[1] * np.sin(t)], axis=1)
    return np.concatenate([np.array([inner]), arc])


def _wing_half_width(x: np.ndarray) -> np.ndarray:
    """Half-width of the teardrop wing at wing-frame x (rounded front at +L, pointed tip at -L)."""
    u = np.clip(x / WING_HALF_LENGTH, -1.0, 1.0)
    return WING_HALF_WIDTH * np.sqrt(1.0 - u**2) * (0.55 + 0.45 * u)


def _wing_outline() -> np.ndarray:
    """(N, 2) wing-frame teardrop outline."""
    x = WING_HALF_LENGTH * np.cos(np.linspace(0.0, np.pi, 24))
    upper = np.stack([x, -_wing_half_width(x)], axis=1)
    lower = np.stack([x[::-1], _wing_half_width(x[::-1])], axis=1)
    return np.concatenate([upper, lower[1:-1]])


def _wing_pattern(pattern: str) -> list[np.ndarray]:
    """Wing-frame polygons of the wing pattern: none, two transverse bars, five spots or two long stripes."""
    if pattern == "plain":
        return []
    if pattern == "bars":
        bars = []
        for x0 in (2.5, -3.0):
            x = np.array([x0 - 1.0, x0 + 1.0])
            h = 0.9 * _wing_half_width(x)
            bars.append(np.array([[x[0], -h[0]], [x[1], -h[1]], [x[1], h[1]], [x[0], h[0]]]))
        return bars
    if pattern == "spots":
        centers = [(5.0, -1.6), (5.0, 1.6), (0.5, 0.0), (-4.0, -1.2), (-4.0, 1.2)]
        return [_ellipse(np.array(c), (1.15, 1.15), n=12) for c in centers]
    if pattern == "stripes":
        x = np.linspace(-7.5, 8.5, 12)
        stripes = []
        for fraction in (-0.45, 0.45):
            middle = fraction * _wing_half_width(x)
            top = np.stack([x, middle - 0.7], axis=1)
            bottom = np.stack([x[::-1], middle[::-1] + 0.7], axis=1)
            stripes.append(np.concatenate([top, bottom]))
        return stripes
    raise ValueError(f"unknown wing pattern {pattern!r}")


def _tail_outline(shape: str) -> np.ndarray:
    """(N, 2) tail-frame outline; x = 0 at the root (tucked 2 px into the body), tip near x = TAIL_LENGTH."""
    length = TAIL_LENGTH
    if shape == "square":
        return np.array([[-2.0, -2.6], [length, -3.2], [length, 3.2], [-2.0, 2.6]])
    if shape == "fan":
        t = np.deg2rad(np.linspace(-60.0, 60.0, 12))
        arc = np.stack([length - 5.0 + 5.8 * np.cos(t), 5.8 * np.sin(t)], axis=1)
        return np.concatenate([[[-2.0, -2.4]], arc, [[-2.0, 2.4]]])
    if shape == "forked":
        return np.array([[-2.0, -2.4], [length + 1.0, -5.0], [length - 4.5, 0.0], [length + 1.0, 5.0], [-2.0, 2.4]])
    if shape == "pointed":
        return np.array([[-2.0, -2.6], [length - 5.0, -2.3], [length + 2.5, 0.0], [length - 5.0, 2.3], [-2.0, 2.6]])
    raise ValueError(f"unknown tail shape {shape!r}")


def _beak_outline(shape: str) -> np.ndarray:
    """(N, 2) canonical beak polygon attached to the front of the head."""
    length, half = BEAK_SIZES[shape]
    bx, by = BEAK_BASE
    if shape == "hooked":
        return np.array([
            [bx, by - half], [bx + 0.55 * length, by - 0.8 * half], [bx + 0.9 * length, by - 0.1 * half],
            [bx + length, by + 1.2 * half], [bx + 0.7 * length, by + 0.6 * half], [bx, by + half],
        ])
    return np.array([[bx, by - half], [bx + length, by + 0.3], [bx, by + half]])


def _head_arc(angle_from: float, angle_to: float) -> np.ndarray:
    """(N, 2) canonical points of the head circle between two angles (deg; -90 = top of the head)."""
    t = np.deg2rad(np.linspace(angle_from, angle_to, 16))
    return HEAD_CENTER + HEAD_RADIUS * np.stack([np.cos(t), np.sin(t)], axis=1)


def _leg_polygons() -> list[np.ndarray]:
    """Canonical polygons of the visible leg (vertical shank) and its foot (pointing towards the beak)."""
    top = _body_to_canonical(LEG_TOP)[0]
    half = LEG_WIDTH / 2
    shank = np.array([[top[0] - half, top[1]], [top[0] + half, top[1]],
                      [top[0] + half, top[1] + LEG_LENGTH], [top[0] - half, top[1] + LEG_LENGTH]])
    foot_y = top[1] + LEG_LENGTH
    foot = np.array([[top[0] - 1.5, foot_y - 1.2], [top[0] + 3.5, foot_y - 1.2], [top[0] + 3.5, foot_y], [top[0] - 1.5, foot_y]])
    return [shank, foot]


def _foot_point() -> np.ndarray:
    """Canonical point where the foot grips the perch."""
    top = _body_to_canonical(LEG_TOP)[0]
    return np.array([top[0], top[1] + LEG_LENGTH])


@functools.lru_cache(maxsize=None)
def _bird_shapes(tail_shape: str, wing_pattern: str, beak_shape: str, eye_ring: bool) -> tuple[tuple[str, np.ndarray], ...]:
    """(colour role, (N, 2) canonical polygon) pairs in back-to-front drawing order (cached; do not modify)."""
    shapes = [("tail", _tail_to_canonical(_tail_outline(tail_shape)))]
    shapes += [("leg", polygon) for polygon in _leg_polygons()]
    shapes += [
        ("body", _body_to_canonical(_ellipse(np.zeros(2), BODY_AXES))),
        ("belly", _body_to_canonical(_body_sector(80.0, 150.0, (-0.05 * BODY_AXES[0], 0.25 * BODY_AXES[1])))),
        ("breast", _body_to_canonical(_body_sector(-35.0, 80.0, (0.2 * BODY_AXES[0], 0.1 * BODY_AXES[1])))),
        ("wing", _wing_to_canonical(_wing_outline())),
    ]
    shapes += [("wing_pattern", _wing_to_canonical(p)) for p in _wing_pattern(wing_pattern)]
    shapes += [
        ("head", _ellipse(HEAD_CENTER, (HEAD_RADIUS, HEAD_RADIUS))),
        ("crown", _head_arc(-150.0, -30.0)),
    ]
    eye_center = HEAD_CENTER + EYE_OFFSET
    if eye_ring:
        shapes.append(("eye_ring", _ellipse(eye_center, (EYE_RING_RADIUS, EYE_RING_RADIUS), n=20)))
    shapes.append(("eye", _ellipse(eye_center, (EYE_RADIUS, EYE_RADIUS), n=16)))
    shapes.append(("beak", _beak_outline(beak_shape)))
    return tuple(shapes)


@functools.lru_cache(maxsize=None)
def _canonical_keypoints(beak_shape: str) -> dict[str, np.ndarray]:
    """Canonical part centres; 'eye', 'leg', 'wing' are the visible side's parts (cached; do not modify)."""
    length, _ = BEAK_SIZES[beak_shape]
    beak_visible_from = HEAD_CENTER[0] + HEAD_RADIUS
    beak_tip = BEAK_BASE[0] + length
    leg_top = _body_to_canonical(LEG_TOP)[0]
    r = HEAD_RADIUS
    return {
        "back": _body_to_canonical(np.array([-3.0, -7.0]))[0],
        "beak": np.array([beak_visible_from + 0.3 * (beak_tip - beak_visible_from), BEAK_BASE[1] + 0.2]),
        "belly": _body_to_canonical(np.array([-3.5, 0.68 * BODY_AXES[1]]))[0],
        "breast": _body_to_canonical(np.array([0.62 * BODY_AXES[0], 0.42 * BODY_AXES[1]]))[0],
        "crown": HEAD_CENTER + np.array([-0.5, -0.75 * r]),
        "forehead": HEAD_CENTER + np.array([0.5 * r, -0.62 * r]),
        "eye": HEAD_CENTER + EYE_OFFSET,
        "leg": leg_top + np.array([0.0, 0.5 * LEG_LENGTH]),
        "wing": _wing_to_canonical(np.zeros(2))[0],
        "nape": HEAD_CENTER + np.array([-0.8 * r, -0.1 * r]),
        "tail": _tail_to_canonical(np.array([0.45 * TAIL_LENGTH, 0.0]))[0],
        "throat": HEAD_CENTER + np.array([0.45 * r, 0.62 * r]),
    }


# ----------------------------------------------------------------------------- pose and keypoints


def _sample_pose(rng: np.random.Generator, shapes: tuple[tuple[str, np.ndarray], ...], settings: RenderSettings) -> _Pose:
    """Random mirror, rotation and scale; translation keeps the bird's bounding box inside the margins."""
    mirrored = bool(rng.integers(2))
    rotation = _rotation_matrix(rng.uniform(-settings.max_rotation_deg, settings.max_rotation_deg))
    scale = rng.uniform(*settings.scale_range) * settings.image_size / REFERENCE_SIZE
    mirror = np.diag([-1.0 if mirrored else 1.0, 1.0])
    linear = scale * rotation @ mirror
    points = np.concatenate([points for _, points in shapes]) @ linear.T
    low = MARGIN_FRACTION * settings.image_size - points.min(axis=0)
    high = (1 - MARGIN_FRACTION) * settings.image_size - points.max(axis=0)
    offset = np.where(low <= high, low + rng.uniform(size=2) * (high - low), (low + high) / 2)
    return _Pose(linear=linear, offset=offset, mirrored=mirrored)


def _bounding_box(shapes: tuple[tuple[str, np.ndarray], ...], pose: _Pose) -> tuple[float, float, float, float]:
    """(x, y, width, height) in image pixels of all posed bird polygons."""
    points = pose.apply(np.concatenate([points for _, points in shapes]))
    (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def _image_keypoints(attributes: dict[str, str], pose: _Pose) -> dict[str, tuple[float, float] | None]:
    """CUB part name -> image (x, y); a bird facing right shows its right side, so its left eye/leg/wing are hidden."""
    visible_side, hidden_side = ("left", "right") if pose.mirrored else ("right", "left")
    parts: dict[str, tuple[float, float] | None] = {}
    for name, point in _canonical_keypoints(attributes["beak_shape"]).items():
        x, y = pose.apply(point[None])[0]
        if name in ("eye", "leg", "wing"):
            parts[f"{visible_side} {name}"] = (float(x), float(y))
            parts[f"{hidden_side} {name}"] = None
        else:
            parts[name] = (float(x), float(y))
    return {name: parts[name] for name in PART_NAMES}


# ----------------------------------------------------------------------------- drawing


def _to_canvas(points: np.ndarray) -> list[float]:
    """(N, 2) image pixels -> flat PIL coordinates on the supersampled canvas (PIL puts pixel centres on integers)."""
    return (points * SUPERSAMPLING - 0.5).ravel().tolist()


def _background(rng: np.random.Generator, image_size: int) -> Image.Image:
    """Supersampled RGB scene: tilted two-colour gradient, leaf blobs, branches and small coloured berries."""
    size = image_size * SUPERSAMPLING
    top = np.array(SKY_COLORS[rng.integers(len(SKY_COLORS))], dtype=float)
    bottom = np.array(FOLIAGE_COLORS[rng.integers(len(FOLIAGE_COLORS))], dtype=float) * rng.uniform(0.8, 1.2)
    direction = _rotate(np.array([[0.0, 1.0]]), rng.uniform(-40.0, 40.0))[0]
    coords = (np.arange(image_size) + 0.5) / image_size - 0.5  # at output size: box-downsampling restores it exactly
    t = np.clip(0.5 + coords[None, :] * direction[0] + coords[:, None] * direction[1], 0.0, 1.0)[..., None]
    gradient = np.clip((1 - t) * top + t * bottom, 0, 255).astype(np.uint8)
    canvas = Image.fromarray(gradient).resize((size, size), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(2, 7)):
        axes = rng.uniform(0.04, 0.16, size=2) * image_size
        leaf = _rotate(_ellipse(np.zeros(2), (axes[0], axes[1]), n=24), rng.uniform(0, 180)) + rng.uniform(0, image_size, 2)
        color = _jittered(FOLIAGE_COLORS[rng.integers(len(FOLIAGE_COLORS))], rng.uniform(0.8, 1.2), rng, 6.0)
        draw.polygon(_to_canvas(leaf), fill=color)
    for _ in range(rng.integers(0, 3)):
        ends = rng.uniform(0, image_size, size=(2, 2))
        width = int(rng.uniform(0.015, 0.035) * image_size * SUPERSAMPLING) + 1
        draw.line(_to_canvas(ends), fill=_jittered(PERCH_COLOR, rng.uniform(0.7, 1.3), rng, 6.0), width=width)
    berry_colors = list(COLORS.values())
    for _ in range(rng.integers(0, 5)):
        radius = rng.uniform(0.012, 0.028) * image_size
        berry = _ellipse(rng.uniform(0, image_size, 2), (radius, radius), n=12)
        draw.polygon(_to_canvas(berry), fill=berry_colors[rng.integers(len(berry_colors))])
    return canvas


def _draw_perch(canvas: Image.Image, rng: np.random.Generator, foot: np.ndarray, pose: _Pose) -> None:
    """Draws a branch through the foot point, slightly tilted, spanning the image; thickness follows the bird scale."""
    size = canvas.width / SUPERSAMPLING
    thickness = 2.6 * pose.scale
    direction = _rotate(np.array([[1.0, 0.0]]), rng.uniform(-12.0, 12.0))[0]
    center = foot + np.array([0.0, thickness / 2])
    ends = np.stack([center - 2 * size * direction, center + 2 * size * direction])
    color = _jittered(PERCH_COLOR, rng.uniform(0.8, 1.2), rng, 6.0)
    ImageDraw.Draw(canvas).line(_to_canvas(ends), fill=color, width=int(round(thickness * SUPERSAMPLING)))


def _draw_bird(canvas: Image.Image, shapes: tuple[tuple[str, np.ndarray], ...], colors: dict[str, RGB], pose: _Pose) -> None:
    """Draws the posed bird: a dark silhouette outline first, then the filled parts back to front."""
    draw = ImageDraw.Draw(canvas)
    outline_width = max(1, int(round(0.7 * pose.scale * SUPERSAMPLING)))
    for role, points in shapes:
        if role in ("tail", "body", "head"):
            closed = pose.apply(np.concatenate([points, points[:1]]))
            draw.line(_to_canvas(closed), fill=colors["outline"], width=outline_width, joint="curve")
    for role, points in shapes:
        color = colors["body"] if role == "head" else colors[role]
        draw.polygon(_to_canvas(pose.apply(points)), fill=color)
        if role == "wing":
            closed = pose.apply(np.concatenate([points, points[:1]]))
            draw.line(_to_canvas(closed), fill=colors["wing_outline"], width=max(1, outline_width // 2))


def _downsample_with_noise(canvas: Image.Image, rng: np.random.Generator, noise_std: float) -> np.ndarray:
    """Box-filters the supersampled canvas to the output size and adds Gaussian pixel noise -> (H, W, 3) uint8."""
    image = np.asarray(canvas.reduce(SUPERSAMPLING), dtype=np.float32)
    noisy = image + noise_std * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)
