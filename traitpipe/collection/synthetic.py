"""A synthetic specimen collection with known answers.

Insect-like specimens (head, thorax, abdomen, two forewings, two hindwings) are
drawn on a plain light background with pose, scale, colour and lighting jitter.
Colours and wing patterns evolve by Brownian motion down a random ultrametric
tree, so close species look alike; every species also carries one small mark
(its discriminative trait: a spot of one colour at one place on one part) that
tells it from its sister species. In cryptic pairs (``cryptic``: a share of the
sister-species pairs) the two sisters share one look, their parent's, and differ
ONLY by their marks: there the mark is the one thing a classifier can use, which
is what Finer-CAM claims to find. Every image comes with its true part labels
and its true trait mask, so each method can be scored against the truth.

Drawing is pure NumPy (:func:`render_specimen`); :func:`synthesize` writes files.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from traitpipe.collection.tree import groups_at, random_ultrametric, to_newick

#: Label values of the parts, 0 is background.
PARTS = {
    1: "head",
    2: "thorax",
    3: "abdomen",
    4: "left_forewing",
    5: "right_forewing",
    6: "left_hindwing",
    7: "right_hindwing",
}
#: Parts that can carry a species' mark; wings carry it on both sides.
MARK_PARTS = ("forewing", "hindwing", "thorax", "abdomen")
#: Relative distances from the root that define the family and genus columns.
RANK_DISTANCES = {"family": 0.33, "genus": 0.5}
GENERATOR_VERSION = 5

_SYLLABLES = ("ar", "be", "ca", "do", "ly", "mi", "no", "pha", "ra", "si", "te", "tho", "xe", "zo")
_EPITHETS = (
    "alba", "aurea", "borealis", "caerulea", "decora", "elegans", "flava", "gracilis",
    "hirta", "insignis", "lata", "maculata", "nigra", "ornata", "picta", "rubra",
    "signata", "tenuis", "undulata", "varia", "vittata", "viridis", "minor", "major",
)

# Part geometry in body units (specimen half-length L), head up (y grows downwards).
# name: (centre or wing base, semi-axis along, semi-axis across, direction in degrees)
_BODY = {
    "head": ((0.0, -0.62), 0.10, 0.11, 90.0),
    "thorax": ((0.0, -0.38), 0.17, 0.14, 90.0),
}
_FOREWING_BASE, _FOREWING_ANGLE = (-0.06, -0.42), 200.0  # outwards and up
_HINDWING_BASE, _HINDWING_ANGLE = (-0.06, -0.28), 150.0  # outwards and down
_MARK_RADIUS = 0.065


@dataclass(frozen=True)
class SpeciesLook:
    """Everything that fixes how one species is drawn (values in [0, 1] colour space).

    Colours are RGB triples; lengths are in body units.
    """

    body: tuple[float, float, float]
    forewing: tuple[float, float, float]
    hindwing: tuple[float, float, float]
    band: tuple[float, float, float]
    spot: tuple[float, float, float]
    stripe: tuple[float, float, float]
    abdomen_length: float
    abdomen_width: float
    forewing_length: float
    forewing_width: float
    hindwing_length: float
    band_position: float
    band_width: float
    spot_radius: float
    stripes: float
    mark_part: str
    mark_s: float
    mark_t: float
    mark_colour: tuple[float, float, float]


_COLOURS = ("body", "forewing", "hindwing", "band", "spot", "stripe")
_SHAPES = {  # name: (low, high)
    "abdomen_length": (0.30, 0.45),
    "abdomen_width": (0.08, 0.14),
    "forewing_length": (0.36, 0.48),
    "forewing_width": (0.15, 0.22),
    "hindwing_length": (0.26, 0.36),
    "band_position": (-0.3, 0.5),
    "band_width": (0.15, 0.45),
    "spot_radius": (0.15, 0.35),
    "stripes": (2.0, 5.0),
}
_N_TRAITS = 3 * len(_COLOURS) + len(_SHAPES)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _look_from_traits(z: np.ndarray, mark: tuple) -> SpeciesLook:
    """Map a latent trait vector (n_traits,) and a mark to a :class:`SpeciesLook`."""
    colour = 0.1 + 0.8 * _sigmoid(z[: 3 * len(_COLOURS)])
    shape = _sigmoid(z[3 * len(_COLOURS):])
    values = {name: tuple(float(c) for c in colour[3 * i: 3 * i + 3]) for i, name in enumerate(_COLOURS)}
    for (name, (low, high)), u in zip(_SHAPES.items(), shape):
        values[name] = float(low + (high - low) * u)
    part, s, t, rgb = mark
    return SpeciesLook(**values, mark_part=part, mark_s=s, mark_t=t, mark_colour=rgb)


def _ellipse(x, y, centre, along, across, degrees):
    """Part coordinates of points in an ellipse frame.

    Returns (s, t): s along the main axis, t across it, both scaled so that the
    ellipse is s**2 + t**2 <= 1. Arrays keep the shape of x and y.
    """
    a = math.radians(degrees)
    dx, dy = x - centre[0], y - centre[1]
    s = (dx * math.cos(a) + dy * math.sin(a)) / along
    t = (-dx * math.sin(a) + dy * math.cos(a)) / across
    return s, t


def _wing_centre(base, length, degrees):
    a = math.radians(degrees)
    return (base[0] + length * math.cos(a), base[1] + length * math.sin(a))


def _part_frames(look: SpeciesLook):
    """Ellipse frames of every part: label -> (centre, along, across, degrees, mirrored)."""
    abdomen_centre = (0.0, -0.22 + look.abdomen_length)
    forewing = (_wing_centre(_FOREWING_BASE, look.forewing_length, _FOREWING_ANGLE),
                look.forewing_length, look.forewing_width, _FOREWING_ANGLE)
    hindwing = (_wing_centre(_HINDWING_BASE, look.hindwing_length, _HINDWING_ANGLE),
                look.hindwing_length, 0.55 * look.hindwing_length, _HINDWING_ANGLE)
    return {
        1: (*_BODY["head"], False),
        2: (*_BODY["thorax"], False),
        3: (abdomen_centre, look.abdomen_length, look.abdomen_width, 90.0, False),
        4: (*forewing, False),
        5: (*forewing, True),
        6: (*hindwing, False),
        7: (*hindwing, True),
    }


_PAINT_ORDER = (6, 7, 4, 5, 3, 2, 1)  # later parts cover earlier ones
_MARK_LABELS = {"forewing": (4, 5), "hindwing": (6, 7), "thorax": (2,), "abdomen": (3,)}


def render_specimen(look: SpeciesLook, size: int, rng: np.random.Generator | None = None,
                    damage: tuple[int, str] | None = None):
    """Draw one specimen of a species.

    Parameters
    ----------
    look : SpeciesLook
        The species' appearance.
    size : int
        Side of the square image in pixels.
    rng : numpy.random.Generator or None
        Source of the specimen's pose, colour, lighting and noise jitter.
        ``None`` draws the canonical specimen (no jitter, no noise).
    damage : (int, str) or None
        A part label and what happened to it: ``"absent"`` (not drawn) or ``"damaged"`` (its outer two thirds,
        away from where it joins the body, torn off). The pose and colours are those of the intact specimen.

    Returns
    -------
    image : numpy.ndarray of uint8, shape (size, size, 3)
    labels : numpy.ndarray of uint8, shape (size, size)
        0 = background, keys of :data:`PARTS` otherwise.
    trait : numpy.ndarray of bool, shape (size, size)
        The visible pixels of the species' mark.
    """
    jitter = rng is not None
    angle = math.radians(rng.uniform(-25, 25)) if jitter else 0.0
    scale = rng.uniform(0.85, 1.08) if jitter else 1.0
    shift = rng.uniform(-0.06, 0.06, size=2) * size if jitter else np.zeros(2)
    if jitter:  # individual variation around the species' look
        look = SpeciesLook(**{
            k: (tuple(np.clip(np.asarray(v) + rng.normal(0, 0.03, 3), 0, 1)) if k in _COLOURS
                else v * rng.uniform(0.97, 1.03) if k in _SHAPES else v)
            for k, v in asdict(look).items()
        })

    half_length = 0.42 * size * scale
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    dx, dy = xx - size / 2 - shift[0], yy - size / 2 - shift[1]
    x = (math.cos(angle) * dx + math.sin(angle) * dy) / half_length
    y = (-math.sin(angle) * dx + math.cos(angle) * dy) / half_length

    background = np.array([0.92, 0.91, 0.88]) + (rng.normal(0, 0.01, 3) if jitter else 0.0)
    rgb = np.broadcast_to(background, (size, size, 3)).copy()
    labels = np.zeros((size, size), np.uint8)
    mark_area = np.zeros((size, size), bool)
    frames = _part_frames(look)
    for label in _PAINT_ORDER:
        centre, along, across, degrees, mirrored = frames[label]
        s, t = _ellipse(-x if mirrored else x, y, centre, along, across, degrees)
        r2 = s**2 + t**2
        inside = r2 <= 1.0
        if damage is not None and label == damage[0]:
            inside &= (s < -0.25) if damage[1] == "damaged" else False  # damaged: about its base third is left
        colour = _part_colour(label, look, s, t, r2)
        if label in _MARK_LABELS[look.mark_part]:
            a = math.radians(degrees)
            mx = centre[0] + along * look.mark_s * math.cos(a) - across * look.mark_t * math.sin(a)
            my = centre[1] + along * look.mark_s * math.sin(a) + across * look.mark_t * math.cos(a)
            spot = ((-x if mirrored else x) - mx) ** 2 + (y - my) ** 2 <= _MARK_RADIUS**2
            colour = np.where(spot[..., None], np.asarray(look.mark_colour), colour)
            mark_area |= spot & inside
        rgb = np.where(inside[..., None], colour, rgb)
        labels[inside] = label
    trait = mark_area & np.isin(labels, _MARK_LABELS[look.mark_part])

    if jitter:
        brightness = rng.uniform(0.88, 1.12)
        light = rng.uniform(0, 2 * math.pi)
        gx, gy = (xx / size) * 2 - 1, (yy / size) * 2 - 1
        gradient = 1.0 + 0.10 * (math.cos(light) * gx + math.sin(light) * gy)
        rgb = rgb * brightness * gradient[..., None] + rng.normal(0, 0.01, rgb.shape)
    image = np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)
    return image, labels, trait


def _part_colour(label: int, look: SpeciesLook, s, t, r2) -> np.ndarray:
    """Colour (H, W, 3) of a part's pattern at part coordinates (s, t)."""
    shade = (1.0 - 0.18 * np.clip(r2, 0, 1))[..., None]
    if label == 1:
        base = np.asarray(look.body) * 0.7
        return base * shade
    if label == 2:
        return np.asarray(look.body) * shade
    if label == 3:
        phase = ((s + 1) / 2 * look.stripes) % 1.0
        return np.where((phase < 0.35)[..., None], np.asarray(look.stripe), np.asarray(look.body)) * shade
    if label in (4, 5):
        band = np.abs(s - look.band_position) < look.band_width / 2
        colour = np.where(band[..., None], np.asarray(look.band), np.asarray(look.forewing))
        return np.where((r2 > 0.8)[..., None], colour * 0.55, colour)
    spot = (s - 0.35) ** 2 + t**2
    colour = np.where((spot < look.spot_radius**2)[..., None], np.asarray(look.spot), np.asarray(look.hindwing))
    return np.where((spot < (0.4 * look.spot_radius) ** 2)[..., None], 0.1, colour)


def _draw_mark(rng: np.random.Generator, z: np.ndarray, taken: list) -> tuple:
    """Draw a species' mark: (part, s, t, rgb), well visible and unlike the other species' marks."""
    for _ in range(1000):
        part = MARK_PARTS[int(rng.integers(len(MARK_PARTS)))]
        reach = 0.55 if part.endswith("wing") else 0.35
        r, a = reach * math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi)
        s, t = r * math.cos(a), r * math.sin(a)
        rgb = tuple(float(c) for c in _hsv_to_rgb(rng.uniform(), 0.9, 0.95))
        look = _look_from_traits(z, (part, s, t, rgb))
        image, labels, trait = render_specimen(look, 128)
        disc = math.pi * (_MARK_RADIUS * 0.42 * 128) ** 2
        if trait.sum() < 0.8 * disc:
            continue  # partly hidden under another part or off the part's edge
        ring = np.isin(labels, _MARK_LABELS[part]) & ~trait
        contrast = np.abs(image[ring].mean(0) / 255 - np.asarray(rgb)).sum()
        unlike = all(p != part or abs(h - _hue(rgb)) > 0.08 or math.hypot(s - s2, t - t2) > 0.3
                     for p, s2, t2, h in taken)
        if contrast > 0.6 and unlike:
            taken.append((part, s, t, _hue(rgb)))
            return part, s, t, rgb
    raise RuntimeError("could not place a distinct visible mark; use fewer species")


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    return v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)


def _hue(rgb) -> float:
    r, g, b = rgb
    return (math.atan2(math.sqrt(3) * (g - b), 2 * r - g - b) / (2 * math.pi)) % 1.0


#: Hue (0..1) upper bounds of the colour names a mark's concept uses.
_HUE_NAMES = ((0.04, "red"), (0.11, "orange"), (0.19, "yellow"), (0.45, "green"), (0.54, "cyan"), (0.70, "blue"),
              (0.81, "purple"), (0.93, "pink"), (1.0, "red"))


def mark_concept(look: SpeciesLook) -> str:
    """The species' mark in words, as a trait concept prompt: its colour's name and its part.

    Examples
    --------
    >>> look = _look_from_traits(np.zeros(40), ("forewing", 0.1, 0.1, (0.95, 0.1, 0.1)))
    >>> mark_concept(look)
    'a red spot on the forewings'
    """
    hue = _hue(look.mark_colour)
    colour = next(name for bound, name in _HUE_NAMES if hue < bound)
    part = f"{look.mark_part}s" if look.mark_part.endswith("wing") else look.mark_part
    article = "an" if colour[0] in "aeiou" else "a"
    return f"{article} {colour} spot on the {part}"


def _latin_names(rng: np.random.Generator, count: int, suffix: str = "") -> list[str]:
    names: list[str] = []
    while len(names) < count:
        n = int(rng.integers(2, 4))
        word = "".join(_SYLLABLES[int(i)] for i in rng.integers(len(_SYLLABLES), size=n)).capitalize() + suffix
        if word not in names:
            names.append(word)
    return names


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG", optimize=False)


def sister_pairs(nodes) -> list[tuple[int, int]]:
    """The tip pairs (a, b), a < b, whose parent has no other descendant, in preorder of their parents.

    Examples
    --------
    >>> from traitpipe.collection.tree import Node
    >>> nodes = [Node(1.0, -1, [1, 2], -1), Node(0.0, 0, [], 0), Node(0.5, 0, [3, 4], -1),
    ...          Node(0.0, 2, [], 1), Node(0.0, 2, [], 2)]
    >>> sister_pairs(nodes)
    [(1, 2)]
    """
    pairs = []
    for node in nodes:
        tips = [nodes[c].tip for c in node.children]
        if len(tips) == 2 and min(tips) >= 0:
            pairs.append((min(tips), max(tips)))
    return pairs


def synthesize(out_dir, *, n_species: int = 8, per_species: int = 12, size: int = 128, seed: int = 0,
               cryptic: float = 1.0, damaged: int = 0, damaged_part: str = "left_forewing") -> Path:
    """Write a synthetic collection with known answers.

    Parameters
    ----------
    out_dir : str or Path
        Folder to write into (created if missing; files of a previous call are overwritten).
    n_species : int
        Number of species, 2..24.
    per_species : int
        Specimens per species, >= 2 (the first one is the labelled reference).
    size : int
        Image side in pixels, >= 32.
    seed : int
        The same seed gives byte-identical files.
    cryptic : float
        Share of the sister-species pairs (0..1) that are cryptic: both sisters take their parent's look
        and differ only by their marks. The others keep their own looks (Brownian motion to each tip).
    damaged : int
        Specimens per species, the last ones, whose ``damaged_part`` is absent or damaged (alternately, absent
        first): the images a part's retrieval score should rank below the intact ones.
    damaged_part : str
        A name in :data:`PARTS`.

    Returns
    -------
    Path
        ``out_dir``, holding ``manifest.csv`` (path, species, family, genus,
        specimen_id, mask, parts_truth, trait_truth, damage: "" or "<part> absent|damaged"), ``phylogeny.nwk``,
        ``images/``, ``masks/`` (one labelled reference mask per species and
        ``parts.json``), ``truth/`` (part labels and trait mask of every image,
        ``species.json``), ``concepts.json`` (each species' mark in words, :func:`mark_concept`: the trait
        concept prompts of a CLIP) and ``collection.json`` (the parameters, the cryptic pairs and each species'
        trait parts, written last).
    """
    if not 2 <= n_species <= len(_EPITHETS):
        raise ValueError(f"n_species must be in 2..{len(_EPITHETS)}, got {n_species}")
    if per_species < 2:
        raise ValueError(f"per_species must be >= 2 (one reference and a query), got {per_species}")
    if size < 32:
        raise ValueError(f"size must be >= 32 pixels, got {size}")
    if not 0 <= cryptic <= 1:
        raise ValueError(f"cryptic is a share of the sister-species pairs, in 0..1; got {cryptic}")
    if not 0 <= damaged < per_species or damaged_part not in PARTS.values():
        raise ValueError(f"damaged must be in 0..per_species - 1 (the reference stays intact), got {damaged}; "
                         f"damaged_part one of {sorted(PARTS.values())}, got {damaged_part!r}")
    damaged_label = {name: label for label, name in PARTS.items()}[damaged_part]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 0])
    nodes = random_ultrametric(n_species, rng)

    # Brownian motion of the latent traits down the tree (nodes are in preorder).
    z = np.zeros((len(nodes), _N_TRAITS))
    for i, node in enumerate(nodes):
        if node.parent < 0:
            z[i] = rng.normal(0, 1.0, _N_TRAITS)
        else:
            branch = nodes[node.parent].height - node.height
            z[i] = z[node.parent] + rng.normal(0, 1.6 * math.sqrt(branch), _N_TRAITS)
    tip_z = {node.tip: z[i] for i, node in enumerate(nodes) if node.tip >= 0}
    sisters = sister_pairs(nodes)
    chosen = np.random.default_rng([seed, 2]).permutation(len(sisters))[:round(cryptic * len(sisters))]
    cryptic_tips = [sisters[i] for i in sorted(chosen)]
    parent_z = {node.tip: z[node.parent] for node in nodes if node.tip >= 0}
    for a, b in cryptic_tips:  # one look, their parent's: only the marks tell them apart
        tip_z[a] = tip_z[b] = parent_z[a]

    ranks = {rank: groups_at(nodes, d) for rank, d in RANK_DISTANCES.items()}
    families = _latin_names(rng, int(ranks["family"].max()) + 1, suffix="idae")
    genera = _latin_names(rng, int(ranks["genus"].max()) + 1)
    epithets = [_EPITHETS[int(i)] for i in rng.permutation(len(_EPITHETS))[:n_species]]
    names = [f"{genera[ranks['genus'][k]]} {epithets[k]}" for k in range(n_species)]
    (out / "phylogeny.nwk").write_text(to_newick(nodes, names))

    taken: list = []
    looks = [_look_from_traits(tip_z[k], _draw_mark(rng, tip_z[k], taken)) for k in range(n_species)]
    rows, species_truth = [], {}
    for k, look in enumerate(looks):
        slug = names[k].lower().replace(" ", "_")
        species_truth[names[k]] = {"family": families[ranks["family"][k]],
                                   "genus": genera[ranks["genus"][k]], **asdict(look)}
        for i in range(per_species):
            specimen = f"{genera[ranks['genus'][k]][:3].upper()}{k:02d}-{i:03d}"
            hurt = ("absent", "damaged")[(per_species - 1 - i) % 2] if i >= per_species - damaged else None
            image, labels, trait = render_specimen(look, size, np.random.default_rng([seed, 1, k, i]),
                                                   (damaged_label, hurt) if hurt else None)
            paths = {key: f"{key}/{slug}/{specimen}.png" for key in ("images", "truth/parts", "truth/trait")}
            _write_png(out / paths["images"], image)
            _write_png(out / paths["truth/parts"], labels)
            _write_png(out / paths["truth/trait"], trait.astype(np.uint8) * 255)
            mask = ""
            if i == 0:  # the first specimen is the species' labelled reference
                mask = f"masks/{slug}.png"
                _write_png(out / mask, labels)
            rows.append({"path": paths["images"], "species": names[k],
                         "family": species_truth[names[k]]["family"], "genus": species_truth[names[k]]["genus"],
                         "specimen_id": specimen, "mask": mask,
                         "parts_truth": paths["truth/parts"], "trait_truth": paths["truth/trait"],
                         "damage": f"{damaged_part} {hurt}" if hurt else ""})

    (out / "masks" / "parts.json").write_text(json.dumps({str(k): v for k, v in PARTS.items()}, indent=1) + "\n")
    (out / "truth" / "species.json").write_text(json.dumps(species_truth, indent=1, sort_keys=True) + "\n")
    concepts = {name: mark_concept(look) for name, look in zip(names, looks)}
    (out / "concepts.json").write_text(json.dumps(concepts, indent=1, sort_keys=True) + "\n")
    with open(out / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    params = {"generator": "traitpipe.collection.synthesize", "version": GENERATOR_VERSION,
              "n_species": n_species, "per_species": per_species, "size": size, "seed": seed, "cryptic": cryptic,
              "damaged": damaged, "damaged_part": damaged_part,
              "cryptic_pairs": [[names[a], names[b]] for a, b in cryptic_tips],
              "trait_parts": {name: [PARTS[label] for label in _MARK_LABELS[look.mark_part]]
                              for name, look in zip(names, looks)}}
    (out / "collection.json").write_text(json.dumps(params, indent=1) + "\n")
    return out


def truth_videos(root: str | Path) -> dict[str, tuple[list[np.ndarray], list[np.ndarray]]]:
    """A synthetic collection's specimens and true part labels, by species (in manifest order): what a
    SAM 2 trains on (``traitpipe.segment.train.train_sam2``).

    Returns
    -------
    dict
        species -> (images, labels): uint8 (H, W, 3) images and their (H, W) part labels.
    """
    import pandas as pd
    from PIL import Image

    root = Path(root)
    videos: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    for row in pd.read_csv(root / "manifest.csv", keep_default_na=False).itertuples():
        images, labels = videos.setdefault(row.species, ([], []))
        images.append(np.array(Image.open(root / row.path).convert("RGB")))
        labels.append(np.array(Image.open(root / row.parts_truth)))
    return videos
