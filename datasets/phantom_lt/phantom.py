"""Procedural chest-radiograph phantoms: anatomy, findings and acquisition as vectorised numpy.

The renderer behind the embedded phantom_lt benchmark. Everything here is a pure function of
its arguments (random draws come only from the Generator passed in) and works on a whole batch
at once: per-image parameters are (n,) arrays, images are (n, S, S) arrays.

Conventions. Shapes live on normalised coordinates u (image left -> right) and v (top ->
bottom), both in [-1, 1], so a phantom looks the same at every resolution. The patient's right
is on the image's left, as radiographs are read. A *density* map is built first (soft tissue
grey, aerated lung dark, heart and bone bright) and `acquire` turns it into pixel intensities
in [0, 1] with the scanner's transfer curve and noise. A finding either changes the anatomy
(`adjust`, e.g. an enlarged heart) or adds density on top of it (`overlay`, e.g. fluid).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import numpy as np

EDGE = 0.035  # width of a shape's soft boundary, in normalised units (about half a pixel at 32x32)
RIGHT, LEFT = -1, 1  # the patient's sides as the sign of u
BASE_AP = 0.4  # share of AP (portable, supine) images when no finding leans either way


# -- primitives -------------------------------------------------------------------------------
def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in (-1, 1): u as (1, 1, size), v as (1, size, 1).

    Kept separable on purpose: a term in u alone or v alone costs a row of pixels, and only
    sums and products of both become full (n, S, S) images, which keeps rendering fast.
    """
    c = ((np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1).astype(np.float32)
    return c.reshape(1, 1, size), c.reshape(1, size, 1)


def around(mean: float, sd: float, n: int, rng) -> np.ndarray:
    """n Gaussian draws (float32): findings and builds vary smoothly, which keeps each subtype
    one compact mode rather than a slab a mixture model would cut into pieces."""
    return (mean + sd * rng.standard_normal(n)).astype(np.float32)


def col(values) -> np.ndarray:
    """(n,) per-image values as an (n, 1, 1) float32 column that broadcasts over pixels."""
    return np.asarray(values, dtype=np.float32).reshape(-1, 1, 1)


def soft(d: np.ndarray, edge: float = EDGE) -> np.ndarray:
    """1 where the signed distance d < -edge (inside), 0 beyond +edge, a linear ramp between.

    A ramp rather than a sigmoid: it anti-aliases as well at a fraction of the cost.
    """
    return np.clip(0.5 - d * np.float32(0.5 / edge), 0.0, 1.0).astype(np.float32, copy=False)


def ellipse(
    u,
    v,
    cx,
    cy,
    ax,
    by,
    power: float | np.ndarray = 2.0,
    edge: float = EDGE,
    u_scale: float | np.ndarray = 1.0,
) -> np.ndarray:
    """Soft superellipse |du / (ax u_scale)|^p + |dv / by|^p <= 1 (p = 2: ellipse, larger: boxier).

    `u_scale` (a function of v) narrows the shape row by row (a tapering lung apex). The signed
    distance is approximated by (f - 1) / p * min(ax, by), which has the right zero and slope
    at the boundary, all a soft edge needs, without a root per pixel.
    """
    f = np.abs((u - cx) / ax) ** power / np.power(u_scale, power) + np.abs((v - cy) / by) ** power
    return soft((f - 1.0) / power * np.minimum(ax, by), edge)


def segment(u, v, x0, y0, x1, y1, half_width, edge: float = EDGE) -> np.ndarray:
    """Soft bar of half-width `half_width` around the segment (x0, y0) - (x1, y1)."""
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((u - x0) * dx + (v - y0) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    ex, ey = u - x0 - t * dx, v - y0 - t * dy
    return soft(np.sqrt(ex * ex + ey * ey) - half_width, edge)


# -- anatomy ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Anatomy:
    """Per-image anatomy and positioning, each field an (n,) float32 array."""

    shift_u: np.ndarray  # positioning offset of the whole chest
    shift_v: np.ndarray
    body_w: np.ndarray  # half-width of the soft-tissue outline (sex, build)
    lung_w: np.ndarray  # lung width scale (1 = typical)
    lung_h: np.ndarray  # lung height scale (inspiration; AP films are shallower)
    lung_power: np.ndarray  # lung superellipse exponent (larger flattens the diaphragm)
    lung_air: np.ndarray  # how dark aerated lung is
    apex_air: np.ndarray  # extra darkness of the upper zones (emphysema)
    heart_w: np.ndarray  # cardiac half-width (AP magnifies it)
    heart_h: np.ndarray
    heart_u: np.ndarray  # cardiac centre offset
    heart_v: np.ndarray
    clavicle_v: np.ndarray  # height of the clavicles' medial ends (AP: higher)
    scapula: np.ndarray  # 1 where the scapulae overlap the lungs (AP), 0 when retracted (PA)
    rib_phase: np.ndarray  # where the rib pattern starts

    def take(self, idx: np.ndarray) -> Anatomy:
        """The images at `idx`."""
        return Anatomy(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def put(self, idx: np.ndarray, part: Anatomy) -> Anatomy:
        """A copy with the images at `idx` replaced by `part`."""
        out = {}
        for f in fields(self):
            values = getattr(self, f.name).copy()
            values[idx] = getattr(part, f.name)
            out[f.name] = values
        return Anatomy(**out)


@dataclass(frozen=True)
class Patients:
    """Patient-level draws shared by all of a patient's images, each an (n_patients,) array."""

    sex: np.ndarray  # "F" / "M"
    age: np.ndarray  # int years
    body_w: np.ndarray
    lung_w: np.ndarray
    lung_h: np.ndarray
    lung_air: np.ndarray
    heart: np.ndarray  # cardiac size scale
    rib_phase: np.ndarray


def draw_patients(n: int, rng: np.random.Generator) -> Patients:
    """n patients: sex, age, and a build that sex and age shift (men broader, old hearts larger).

    Builds vary only a little: a mixture model on the pixels should find the findings' subtypes,
    not split a class by build (sex shifts the body width by one standard deviation).
    """
    male = rng.random(n) < 0.5
    age = np.clip(np.round(rng.normal(56, 16, n)), 18, 92).astype(np.int64)
    older = (age - 56).astype(np.float32)
    return Patients(
        sex=np.where(male, "M", "F"),
        age=age,
        body_w=around(0.85, 0.01, n, rng) + np.float32(0.01) * male,
        lung_w=around(1.0, 0.02, n, rng),
        lung_h=around(1.0, 0.02, n, rng),
        lung_air=around(0.36, 0.015, n, rng) + 0.0005 * older,
        heart=around(1.0, 0.04, n, rng) + 0.002 * older,
        rib_phase=around(0.0, 0.6, n, rng),
    )


def image_anatomy(patients: Patients, patient: np.ndarray, ap: np.ndarray, rng) -> Anatomy:
    """Anatomy of each image of `patient` (index per image), positioned and projected per view.

    AP (portable, supine) films magnify the heart (by 5% +- 1.5%), show slightly shallower
    inspiration, higher clavicles and the scapulae over the lungs: the acquisition changes the
    picture, not only the label.
    """
    n = len(patient)
    ap = np.asarray(ap, dtype=np.float32)
    heart = patients.heart[patient] * (1 + ap * around(0.05, 0.015, n, rng))
    return Anatomy(
        shift_u=around(0.0, 0.006, n, rng),
        shift_v=around(0.0, 0.006, n, rng),
        body_w=patients.body_w[patient],
        lung_w=patients.lung_w[patient],
        lung_h=patients.lung_h[patient] * (1 - 0.01 * ap) + around(0.0, 0.015, n, rng),
        lung_power=np.full(n, 2.4, dtype=np.float32),
        lung_air=patients.lung_air[patient],
        apex_air=np.zeros(n, dtype=np.float32),
        heart_w=0.28 * heart,
        heart_h=0.24 * heart * (1 + 0.04 * ap),
        heart_u=around(0.0, 0.01, n, rng),
        heart_v=around(0.0, 0.01, n, rng),
        clavicle_v=around(-0.7, 0.015, n, rng) - 0.03 * ap,
        scapula=ap,
        rib_phase=patients.rib_phase[patient],
    )


def local(u: np.ndarray, v: np.ndarray, a: Anatomy) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates relative to each image's positioning: u (n, 1, S), v (n, S, 1)."""
    return u - col(a.shift_u), v - col(a.shift_v)


def lung_geometry(a: Anatomy, side: int) -> tuple[np.ndarray, ...]:
    """(centre u, centre v, half-width, half-height) columns of one lung; apices fixed at v=-0.68."""
    half_h = col(0.6 * a.lung_h)
    return col(np.multiply(side, 0.36 * a.lung_w)), -0.68 + half_h, col(0.24 * a.lung_w), half_h


def lung(u, v, a: Anatomy, side) -> np.ndarray:
    """Soft mask of one lung (heart not removed) in local coordinates; `side` may be per image."""
    return lung_shape(u, v, *lung_geometry(a, side), col(a.lung_power))


def lung_shape(u, v, cx, cy, ax, by, power) -> np.ndarray:
    """A lung-like superellipse that tapers towards its apex (the top 90% of its height narrows)."""
    taper = 0.6 + 0.4 * np.clip((v - cy + by) / (0.9 * by), 0.0, 1.0)  # (n, S, 1)
    return ellipse(u, v, cx, cy, ax, by, power, u_scale=taper)


def heart_geometry(a: Anatomy) -> tuple[np.ndarray, ...]:
    """(centre u, centre v, half-width, half-height) columns of the cardiac silhouette."""
    return col(0.1 + a.heart_u), col(0.35 + a.heart_v), col(a.heart_w), col(a.heart_h)


def hila(u, v) -> np.ndarray:
    """Vascular markings: density fading away from the two hila (what a pneumothorax lacks)."""
    du2 = np.minimum((u + 0.2) ** 2, (u - 0.24) ** 2)  # both hila sit at v = 0.02
    return np.exp(-np.sqrt(du2 + (v - 0.02) ** 2) / 0.22)


def render_anatomy(u: np.ndarray, v: np.ndarray, a: Anatomy) -> np.ndarray:
    """Density (n, S, S) of the normal chest: body, spine, heart, lungs, ribs, clavicles, scapulae."""
    u, v = local(u, v, a)
    body = ellipse(u, v, 0.0, 0.12, col(a.body_w), 1.15, 2.6, 0.1)  # soft skin edge
    cardiac = ellipse(u, v, *heart_geometry(a))
    lungs = np.maximum(lung(u, v, a, RIGHT), lung(u, v, a, LEFT)) * (1 - cardiac)
    ribs = 0.5 + 0.5 * np.cos(2 * np.pi * 3.0 * (v + 0.35 * u * u) + col(a.rib_phase))
    upper = soft(v + 0.1, 0.15)  # 1 in the upper zones
    # clavicles: bars rising medially, from |u| = 0.09 to 0.62
    clavicles = soft(np.abs(v - col(a.clavicle_v) + 0.18 * (np.abs(u) - 0.09)) - 0.03) * soft(
        np.abs(np.abs(u) - 0.355) - 0.265
    )
    scapulae = ellipse(np.abs(u), v, 0.66, -0.28, 0.12, 0.32, 2.0, 0.06)
    density = (
        0.55 * body
        + 0.07 * soft(np.abs(u) - 0.07) * body  # spine
        + 0.1 * soft(0.45 - v, 0.25) * body  # diaphragms and abdomen, below the lung bases
        - 0.14 * soft(np.abs(u) - 0.03) * soft(v + 0.32)  # trachea
        + 0.1 * ellipse(u, v, 0.13, -0.2, 0.08, 0.07)  # aortic knob
        + 0.12 * cardiac
        - (col(a.lung_air) + col(a.apex_air) * upper) * lungs
        + lungs * (0.02 * ribs + 0.08 * hila(u, v))
        + 0.16 * clavicles
        + 0.02 * col(a.scapula) * scapulae * body
    )
    return density.astype(np.float32, copy=False)


# -- findings ---------------------------------------------------------------------------------
def _table(sub: np.ndarray, *values) -> np.ndarray:
    """Per-image value of a per-subtype table, as an (n, 1, 1) column."""
    return col(np.asarray(values, dtype=np.float32)[sub])


def _positions(sub: np.ndarray, centres, jitter: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """Per-image centre (columns) of a focal finding: the subtype's site plus a small jitter."""
    c = np.asarray(centres, dtype=np.float32)[sub] + jitter * rng.standard_normal((len(sub), 2))
    return col(c[:, 0]), col(c[:, 1])


def effusion(u, v, a: Anatomy, sub: np.ndarray, rng) -> np.ndarray:
    """Pleural fluid: basal opacity with a meniscus rising laterally (right, left, bilateral),
    or a loculated lens along the right lateral chest wall."""
    depth = col(around(0.42, 0.03, len(sub), rng) * a.lung_h)
    fluid = 0.0
    for side, present in ((RIGHT, _table(sub, 1, 0, 1, 0)), (LEFT, _table(sub, 0, 1, 1, 0))):
        cx, cy, ax, by = lung_geometry(a, side)
        lateral = np.clip(side * (u - cx) / ax, 0, 1)
        level = cy + by - depth - 0.25 * lateral * by
        fluid = fluid + present * lung(u, v, a, side) * soft(level - v, 0.05)
    cx, cy, ax, _ = lung_geometry(a, RIGHT)
    lens = ellipse(u, v, cx - 0.75 * ax, cy + 0.05, 0.08, 0.26, 2.0, 0.05)
    return 1.05 * col(a.lung_air) * np.minimum(fluid + _table(sub, 0, 0, 0, 1) * lens, 1.0)


def cardiomegaly(a: Anatomy, sub: np.ndarray, rng) -> Anatomy:
    """Enlarged heart: globally (wide and tall) or left-ventricular (extends left and down)."""
    grow = around(1.38, 0.03, len(sub), rng)
    lv = (sub == 1).astype(np.float32)
    return replace(
        a,
        heart_w=a.heart_w * grow,
        heart_h=a.heart_h * (lv + (1 - lv) * grow),
        heart_u=a.heart_u + 0.14 * lv,
        heart_v=a.heart_v + 0.06 * lv - 0.04 * (1 - lv),
    )


def nodule(u, v, a: Anatomy, sub: np.ndarray, rng) -> np.ndarray:
    """A small round opacity in the right upper or the left lower zone."""
    cu, cv = _positions(sub, [(-0.33, -0.3), (0.45, 0.18)], 0.04, rng)
    r = col(around(0.12, 0.008, len(sub), rng))
    return 0.4 * ellipse(u, v, cu, cv, r, r)


def consolidation(u, v, a: Anatomy, sub: np.ndarray, rng) -> np.ndarray:
    """An ill-defined airspace opacity filling a lobe (right lower, left lower, right upper)."""
    cu, cv = _positions(sub, [(-0.36, 0.25), (0.42, 0.25), (-0.33, -0.3)], 0.04, rng)
    size = col(around(0.2, 0.012, len(sub), rng))
    lungs = np.maximum(lung(u, v, a, RIGHT), lung(u, v, a, LEFT))
    return 0.95 * col(a.lung_air) * lungs * ellipse(u, v, cu, cv, 1.1 * size, size, 2.0, 0.07)


def atelectasis(u, v, a: Anatomy, sub: np.ndarray, rng) -> np.ndarray:
    """A plate-like band at the right base, or a left lower lobe collapse (wedge behind the heart)."""
    dv = col(0.04 * rng.standard_normal(len(sub)))
    plate = segment(u, v, -0.6, 0.14 + dv, -0.14, 0.26 + dv, 0.06) * lung(u, v, a, RIGHT)
    wedge = soft(u - 0.1 - 0.6 * (v + 0.05)) * soft(-0.05 - v) * lung(u, v, a, LEFT)
    return col(a.lung_air) * (_table(sub, 1, 0) * plate + _table(sub, 0, 1) * wedge)


def pneumothorax(u, v, a: Anatomy, sub: np.ndarray, rng) -> np.ndarray:
    """Pleural air without lung markings: apical right, apical left, or a large right crescent.

    The collapsed lung is the lung's outline shrunk away from the apex (apical) or from the
    lateral wall (large); the air between is darker than lung.
    """
    side = np.where(sub == 1, LEFT, RIGHT)
    cx, cy, ax, by = lung_geometry(a, side)
    power = col(a.lung_power)
    drop = col(around(0.4, 0.025, len(sub), rng))  # how far the apex falls (apical)
    large = _table(sub, 0, 0, 1)
    collapsed = lung_shape(
        u,
        v,
        cx - col(side) * large * 0.35 * ax,
        cy + (1 - large) * drop / 2,
        ax * (1 - 0.45 * large),
        by - (1 - large) * drop / 2 - large * 0.1,
        power,
    )
    pleural_air = lung_shape(u, v, cx, cy, ax, by, power) * (1 - collapsed)
    return -(0.6 * col(a.lung_air) + 0.08 * hila(u, v)) * pleural_air


def mass(u, v, a: Anatomy, sub: np.ndarray, rng) -> np.ndarray:
    """A large lobulated opacity: right hilar, left upper zone or right lower zone."""
    cu, cv = _positions(sub, [(-0.22, 0.0), (0.38, -0.3), (-0.42, 0.3)], 0.03, rng)
    n = len(sub)
    r0, phase = col(around(0.185, 0.01, n, rng)), col(rng.uniform(0, 2 * np.pi, n))
    r = r0 * (1 + 0.15 * np.cos(3 * np.arctan2(v - cv, u - cu) + phase))
    return 0.4 * soft(np.hypot(u - cu, v - cv) - r)


def emphysema(a: Anatomy, sub: np.ndarray, rng) -> Anatomy:
    """Hyperinflation: diffuse (tall dark lungs, flat diaphragms, narrow heart) or upper-lobe."""
    diffuse = (sub == 0).astype(np.float32)
    upper = 1 - diffuse
    return replace(
        a,
        lung_h=a.lung_h * (1 + 0.12 * diffuse + 0.04 * upper),
        lung_power=a.lung_power + 1.2 * diffuse,
        lung_air=a.lung_air * (1 + 0.3 * diffuse),
        apex_air=a.apex_air + 0.2 * upper,
        heart_w=a.heart_w * (1 - 0.15 * diffuse),
    )


def pneumomediastinum(u, v, a: Anatomy, sub: np.ndarray, rng) -> np.ndarray:
    """Lucent streaks outlining the left heart border, or running up the mediastinum to the neck."""
    hu, hv, hw, hh = heart_geometry(a)
    r = np.sqrt(((u - hu) / hw) ** 2 + ((v - hv) / hh) ** 2) - 1
    border = soft(np.abs(r) * hw - 0.04) * soft(hu - u + 0.05) * soft(v - hv - 0.1)
    streaks = soft(np.abs(np.abs(u) - 0.08) - 0.035) * soft(v - 0.05)
    return -0.35 * (border + _table(sub, 0, 1) * streaks)


@dataclass(frozen=True)
class Subtype:
    """One hidden subtype: its share of the class and how it leans the acquisition.

    `ap_lean` shifts P(AP) by `confounding * ap_lean` from BASE_AP (sicker patients get
    portable AP films); `scanner` is the scanner this subtype is more often imaged on.
    """

    name: str
    weight: float
    ap_lean: float
    scanner: int


@dataclass(frozen=True)
class Finding:
    """A class: its subtypes (most frequent first) and how it changes the phantom."""

    name: str
    subtypes: tuple[Subtype, ...]
    adjust: Callable | None = None  # (Anatomy, sub, rng) -> Anatomy
    overlay: Callable | None = None  # (u, v, Anatomy, sub, rng) -> density (n, S, S)

    @property
    def weights(self) -> np.ndarray:
        """Subtype probabilities, summing to 1, largest first."""
        w = np.array([s.weight for s in self.subtypes], dtype=float)
        return w / w.sum()


S = Subtype  # (name, weight, ap_lean, preferred scanner)
CATALOGUE: tuple[Finding, ...] = (
    Finding("No Finding", (S("normal", 1.0, -0.1, 0),)),
    Finding(
        "Effusion",
        (
            S("right", 0.5, 0.0, 0),
            S("left", 0.28, -0.2, 3),
            S("bilateral", 0.14, 0.4, 2),
            S("loculated right", 0.08, -0.3, 1),
        ),
        overlay=effusion,
    ),
    Finding(
        "Cardiomegaly", (S("global", 0.7, 0.3, 2), S("left ventricular", 0.3, -0.3, 0)), adjust=cardiomegaly
    ),
    Finding(
        "Nodule", (S("right upper zone", 0.7, -0.3, 0), S("left lower zone", 0.3, 0.1, 1)), overlay=nodule
    ),
    Finding(
        "Consolidation",
        (
            S("right lower lobe", 0.55, 0.2, 2),
            S("left lower lobe", 0.3, -0.1, 3),
            S("right upper lobe", 0.15, -0.3, 1),
        ),
        overlay=consolidation,
    ),
    Finding(
        "Atelectasis",
        (S("right basal plate", 0.7, 0.3, 2), S("left lower lobe collapse", 0.3, -0.2, 0)),
        overlay=atelectasis,
    ),
    Finding(
        "Pneumothorax",
        (S("right apical", 0.5, -0.2, 0), S("left apical", 0.3, 0.0, 3), S("large right", 0.2, 0.4, 2)),
        overlay=pneumothorax,
    ),
    Finding(
        "Mass",
        (
            S("right hilar", 0.5, -0.2, 1),
            S("left upper zone", 0.3, 0.1, 0),
            S("right lower zone", 0.2, 0.3, 3),
        ),
        overlay=mass,
    ),
    Finding("Emphysema", (S("diffuse", 0.7, -0.2, 0), S("upper lobe", 0.3, 0.1, 1)), adjust=emphysema),
    Finding(
        "Pneumomediastinum",
        (S("mediastinal", 0.7, 0.3, 2), S("cervical extension", 0.3, -0.2, 3)),
        overlay=pneumomediastinum,
    ),
)
del S


# -- acquisition ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scanner:
    """A detector's transfer curve offset + contrast * density ** gamma, and its noise level."""

    name: str
    share: float  # how common it is when no finding leans towards a scanner
    gamma: float
    contrast: float
    offset: float
    noise: float


# Scanners differ mostly in noise; their curves only by a few percent. A whole-image brightness
# step between scanners outweighs a small finding summed over all pixels, and a mixture model
# on the pixels then splits a class by scanner instead of by subtype.
SCANNERS: tuple[Scanner, ...] = (
    Scanner("DR-Aurora", 0.4, 1.0, 1.0, 0.0, 0.012),
    Scanner("CR-Borealis", 0.25, 0.97, 0.99, 0.005, 0.025),
    Scanner("Portable-Cirrus", 0.2, 1.03, 0.98, 0.005, 0.035),
    Scanner("DR-Delta", 0.15, 0.98, 1.01, 0.0, 0.018),
)


def acquisition_probabilities(finding: Finding, confounding: float) -> tuple[np.ndarray, np.ndarray]:
    """Per subtype: P(AP) (K,) and P(scanner) (K, n_scanners), leaning by `confounding` in [0, 1].

    confounding = 0 makes view and scanner independent of the subtype; larger values mix each
    subtype's preferred scanner into the base shares (at 1 it is always that scanner) and move
    P(AP) by confounding * ap_lean.
    """
    share = np.array([s.share for s in SCANNERS])
    p_ap = np.clip([BASE_AP + confounding * s.ap_lean for s in finding.subtypes], 0.02, 0.98)
    p_scanner = np.stack(
        [(1 - confounding) * share + confounding * np.eye(len(SCANNERS))[s.scanner] for s in finding.subtypes]
    )
    return p_ap, p_scanner


def acquire(
    density: np.ndarray, scanner: np.ndarray, exposure: np.ndarray, noise_scale: float, rng
) -> np.ndarray:
    """Pixel intensities in [0, 1]: density scaled by each image's `exposure` (n,), passed
    through its scanner's transfer curve, plus the scanner's Gaussian noise times `noise_scale`.

    `rng` draws only the noise, so the caller can give it a stream of its own.
    """
    table = np.array([(s.offset, s.contrast, s.gamma, s.noise) for s in SCANNERS], dtype=np.float32)
    offset, contrast, gamma, noise = (col(table[scanner, j]) for j in range(4))
    x = offset + contrast * np.clip(density * col(exposure), 0.0, 1.0) ** gamma
    x = x + noise_scale * noise * rng.standard_normal(density.shape, dtype=np.float32)
    return np.clip(x, 0.0, 1.0).astype(np.float32)
