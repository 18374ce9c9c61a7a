"""Near-duplicates: the same drawing resized, recompressed, slightly cropped or recoloured.

Two stages, so that thousands of drawings compare in seconds and drawings that merely share a
pose are never taken for copies:

1. Candidates, all pairs at once in blocks of rows (numpy): a 64-bit perceptual hash (pHash:
   the signs of the 8x8 lowest DCT frequencies of a 32x32 grey image against their median)
   within `prepare.near_duplicate_distance` bits, and a colour layout (16x16, blurred by one
   cell so that a crop of a few percent moves little, each channel standardised so that
   brightness and contrast do not count) within LAYOUT_DISTANCE (RMS). Among thousands of
   drawings of one template this leaves a few per drawing.
2. Confirmation: one 128x128 thumbnail aligned onto the other (OpenCV's ECC on 64x64 grey, an
   affine warp whose linear part stays within MAX_SCALE of the identity, one frame nested inside
   the other: a crop is a small scale up and a shift of at most that), one gain and offset for
   all three channels fitted and clipped (brightness, contrast), then two checks of what stays
   apart, the cheap one first: `coarse` (blur 3 px, beyond COARSE_TOLERANCE) on at most
   COARSE_AREA, which catches a pastel background or hair of a close colour; `fine` (blur 1
   px, each 3x3 patch's best match within a pixel, beyond PIXEL_TOLERANCE) on at most
   CHANGED_AREA of the overlap, which catches another eye colour, even a 3-px iris. A grey
   hash alone cannot tell a character from the same character with other hair or eyes, nor a
   drawing from the same figure drawn in another style; these do. A hue shift is not
   confirmed: other hair or another background is, to these checks, a hue shift of part of
   the drawing.

Pairs join into groups through union-find; each group keeps one drawing (see `kept_first`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from kshd.config.schema import PrepareSettings

log = logging.getLogger(__name__)

HASH_SIDE = 32  # grey image the DCT runs on
THUMB_SIDE = 128  # colour thumbnail the confirmation aligns (kept PNG-encoded in memory)
LAYOUT_SIDE = 16  # colour layout of the candidate filter
LAYOUT_BLUR = 1.0  # its Gaussian sigma, in layout cells
LAYOUT_DISTANCE = 0.14  # RMS of the standardised layouts' difference (copies: up to 0.12)
PIXEL_TOLERANCE = 0.12  # RMS RGB distance (0..1 per channel) a fitted 3x3 patch may stay apart
CHANGED_AREA = 0.0005  # share of the overlap allowed beyond PIXEL_TOLERANCE (8 of 128x128)
COARSE_BLUR = 3.0  # the coarse check's blur: only regions of some size remain
COARSE_TOLERANCE = 0.05  # RGB distance a blurred, fitted pixel may stay apart
COARSE_AREA = 0.02  # share of the overlap allowed beyond COARSE_TOLERANCE
FRAME_SLACK = 1.5  # thumbnail pixels a nested frame may overhang
MAX_SCALE = 0.045  # largest change of the warp's linear part: a 3% crop (0.037 measured)
BLUR = 1.0  # Gaussian sigma (thumbnail pixels) before the pixels compare
_CHUNK = 512  # rows of the all-pairs distances computed at once


@dataclass(frozen=True)
class NearDuplicateRules:
    """What prepare does about near-duplicates: `report` them or `drop` all but one of each
    group; candidates within `distance` pHash bits. No defaults: conf/'s `prepare` group."""

    action: str
    distance: int

    @classmethod
    def from_settings(cls, prepare: PrepareSettings) -> NearDuplicateRules:
        return cls(prepare.near_duplicates, prepare.near_duplicate_distance)


@dataclass(frozen=True)
class Fingerprint:
    """What the comparison needs of a drawing; the decoded image need not stay in memory."""

    phash: np.uint64
    layout: np.ndarray  # (LAYOUT_SIDE**2 * 3,) float32, channels standardised, unit RMS
    png: bytes  # the (THUMB_SIDE, THUMB_SIDE) RGB thumbnail, PNG-encoded: a few KB each
    pixels: int  # width * height of the drawing as decoded

    @property
    def thumb(self) -> np.ndarray:
        return cv2.imdecode(np.frombuffer(self.png, np.uint8), cv2.IMREAD_UNCHANGED)


@dataclass(frozen=True)
class Group:
    """Drawings found to be one picture: the one kept and the copies (names as given)."""

    kept: str
    copies: list[str]
    distance: int  # the largest pHash distance of a confirmed pair in the group

    def to_dict(self) -> dict:
        return {"kept": self.kept, "copies": self.copies, "distance": self.distance}


def fingerprint(img: Image.Image) -> Fingerprint:
    """The hash, colour layout and thumbnail of an RGB drawing."""
    rgb = np.asarray(img.convert("RGB"))
    thumb = cv2.resize(rgb, (THUMB_SIDE, THUMB_SIDE), interpolation=cv2.INTER_AREA)
    png = cv2.imencode(".png", thumb)[1].tobytes()  # channel order kept as is: RGB in, RGB out
    return Fingerprint(phash(rgb), _layout(thumb), png, img.width * img.height)


def phash(rgb: np.ndarray) -> np.uint64:
    """The 64-bit DCT hash of an RGB array: bit set where a low frequency exceeds their median."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    small = cv2.resize(grey, (HASH_SIDE, HASH_SIDE), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:8, :8].flatten()
    bits = low > np.median(low[1:])  # the DC term (mean brightness) left out of the median
    return np.packbits(bits).view(">u8")[0].astype(np.uint64)


def _layout(thumb: np.ndarray) -> np.ndarray:
    small = cv2.resize(thumb, (LAYOUT_SIDE, LAYOUT_SIDE), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small.astype(np.float32), (0, 0), LAYOUT_BLUR)
    x = small.reshape(-1, 3)
    x = (x - x.mean(0)) / (x.std(0) + 8.0)  # +8: a flat channel stays flat, not noise blown up
    return x.flatten() / np.sqrt(x.size)  # unit RMS: the Euclidean distance is the RMS one


@dataclass
class Funnel:
    """How many pairs each stage let through (logged, and measured by the bench)."""

    pairs: int = 0  # all pairs
    hashed: int = 0  # within the pHash distance
    laid_out: int = 0  # and within LAYOUT_DISTANCE: the candidates
    aligned: int = 0  # a small warp nests one frame in the other
    coarse: int = 0  # and the coarse check passed
    confirmed: int = 0  # and the fine one: the same picture


def candidate_pairs(
    prints: list[Fingerprint], distance: int, funnel: Funnel | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, bits) of every pair i < j within `distance` pHash bits and LAYOUT_DISTANCE, all
    pairs in blocks of _CHUNK rows (memory stays _CHUNK x n); counts go to `funnel`."""
    funnel = funnel if funnel is not None else Funnel()
    n = len(prints)
    h = np.array([p.phash for p in prints], np.uint64)
    lay = np.stack([p.layout for p in prints]) if prints else np.zeros((0, 1), np.float32)
    norms = (lay**2).sum(axis=1)
    found = [(np.zeros(0, np.intp),) * 2 + (np.zeros(0, np.uint8),)]
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        bits = np.bitwise_count(h[start:stop, None] ^ h[None, :])
        upper = np.arange(n)[None, :] > np.arange(start, stop)[:, None]
        near = (bits <= distance) & upper
        funnel.hashed += int(near.sum())
        squared = norms[start:stop, None] + norms[None, :] - 2 * lay[start:stop] @ lay.T
        rows, cols = np.nonzero(near & (squared <= LAYOUT_DISTANCE**2))
        found.append((rows + start, cols, bits[rows, cols]))
    i, j, b = (np.concatenate(parts) for parts in zip(*found, strict=True))
    funnel.pairs += n * (n - 1) // 2
    funnel.laid_out += len(i)
    return i, j, b


@dataclass(frozen=True)
class Change:
    """How much of two aligned thumbnails differs: `fine` (small regions such as eyes, edges
    forgiven) and `coarse` (large regions of a slightly different colour, such as a pastel
    background), each a share of the overlap; 1.0 when no small warp aligns them, and `fine`
    1.0 where `coarse` already tells them apart (not measured)."""

    fine: float
    coarse: float

    @property
    def same_picture(self) -> bool:
        return self.fine <= CHANGED_AREA and self.coarse <= COARSE_AREA


def changed_area(a: np.ndarray, b: np.ndarray) -> Change:
    """How much of thumbnail a stays apart once b is aligned onto it and its brightness and
    contrast fitted (`Change`)."""
    warp = _align(a, b)
    if warp is None:
        return Change(1.0, 1.0)
    side = (THUMB_SIDE, THUMB_SIDE)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    moved = cv2.warpAffine(b.astype(np.float32) / 255, warp, side, flags=flags)
    inside = cv2.warpAffine(np.ones(side, np.float32), warp, side, flags=flags) > 0.999
    target = a.astype(np.float32) / 255
    moved = np.where(inside[..., None], moved, target)  # blurs spread no black in from outside
    inside = cv2.erode(inside.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    coarse = _apart(target, moved, inside, COARSE_BLUR, nearest=False) > COARSE_TOLERANCE
    coarse_area = float(coarse[inside].mean())
    if coarse_area > COARSE_AREA:  # already apart: the fine check (the dearer) is not run
        return Change(1.0, coarse_area)
    fine = _apart(target, moved, inside, BLUR, nearest=True) > PIXEL_TOLERANCE
    return Change(float(fine[inside].mean()), coarse_area)


def _apart(
    target: np.ndarray, moved: np.ndarray, inside: np.ndarray, sigma: float, nearest: bool
) -> np.ndarray:
    """Per pixel, the RGB distance between target and moved once moved's brightness and
    contrast are fitted to target's (one gain and offset for all channels, clipped as an editor
    clips: not a new background or hair colour) and both are blurred by sigma (a thin line
    spreads alike at any offset). With `nearest`, each 3x3 patch's best match within one pixel
    (a sub-pixel misalignment moves edges, not the colour of a region; a patch moves whole, so
    a small iris of another colour finds no pixel of its colour nearby to match)."""
    usable = inside & (np.maximum(target, moved).max(axis=2) < 0.99)
    usable &= np.minimum(target, moved).min(axis=2) > 0.01
    gain, offset = _fit(moved[usable].ravel(), target[usable].ravel())
    if gain < 1:  # predict the brighter from the darker: what brightening clipped stays clipped
        target, moved = moved, target
        gain, offset = _fit(moved[usable].ravel(), target[usable].ravel())
    fitted = np.clip(gain * moved + offset, 0.0, 1.0)  # clipped, then blurred, as the copy was
    target, fitted = (cv2.GaussianBlur(x, (0, 0), sigma) for x in (target, fitted))
    if not nearest:
        return np.linalg.norm(fitted - target, axis=2)
    best = np.full(target.shape[:2], np.inf, np.float32)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            squared = ((np.roll(fitted, (dy, dx), axis=(0, 1)) - target) ** 2).sum(axis=2)
            best = np.minimum(best, cv2.blur(squared, (3, 3)))
    return np.sqrt(best)


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Gain and offset taking x to y by least squares (none when x is flat or nearly empty)."""
    if len(x) < 4 or x.std() < 1e-3:
        return 1.0, float((y - x).mean()) if len(x) else 0.0
    mx, my = float(x.mean()), float(y.mean())
    gain = float(np.dot(x - mx, y - my) / np.dot(x - mx, x - mx))
    return gain, my - gain * mx


def _align(a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """The affine warp taking a's thumbnail coordinates to b's (found by ECC on halved grey
    thumbnails), or None when ECC fails, or the warp is more than a small scale (MAX_SCALE),
    or neither frame lies inside the other (a crop lies inside its original)."""
    half = THUMB_SIDE // 2
    ga, gb = (
        cv2.resize(cv2.cvtColor(t, cv2.COLOR_RGB2GRAY), (half, half), interpolation=cv2.INTER_AREA)
        for t in (a, b)
    )
    warp = np.eye(2, 3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-4)
    try:
        _, warp = cv2.findTransformECC(
            ga.astype(np.float32), gb.astype(np.float32), warp, cv2.MOTION_AFFINE, criteria, None, 3
        )
    except cv2.error:  # flat images, or no convergence
        return None
    warp[:, 2] *= 2  # the shift in full thumbnail pixels
    if np.abs(warp[:, :2] - np.eye(2)).max() > MAX_SCALE:
        return None
    return warp if _nested(warp) else None  # nested: the shift is at most the scale's margin


def _nested(warp: np.ndarray) -> bool:
    """Whether one thumbnail's frame maps inside the other's (give or take FRAME_SLACK px)."""
    s, lo, hi = THUMB_SIDE, -FRAME_SLACK, THUMB_SIDE + FRAME_SLACK
    corners = np.array([[0, 0], [s, 0], [0, s], [s, s]], np.float64)
    full = np.vstack([warp.astype(np.float64), [0, 0, 1]])
    a_in_b = corners @ full[:2, :2].T + full[:2, 2]
    inverse = np.linalg.inv(full)
    b_in_a = corners @ inverse[:2, :2].T + inverse[:2, 2]
    return any(((pts >= lo) & (pts <= hi)).all() for pts in (a_in_b, b_in_a))


def compare(big: Fingerprint, small: Fingerprint) -> Change:
    """How far apart two drawings stay, the smaller aligned onto the larger (a crop lies
    inside its original)."""
    if small.pixels > big.pixels:
        big, small = small, big
    return changed_area(big.thumb, small.thumb)


def confirmed_pairs(
    prints: list[Fingerprint], distance: int, funnel: Funnel | None = None
) -> list[tuple[int, int, int]]:
    """(i, j, bits) of every candidate pair the aligned thumbnails confirm; counts to `funnel`."""
    funnel = funnel if funnel is not None else Funnel()
    i, j, bits = candidate_pairs(prints, distance, funnel)
    pairs = []
    for a, b, d in zip(i.tolist(), j.tolist(), bits.tolist(), strict=True):
        change = compare(prints[a], prints[b])
        funnel.aligned += change.coarse < 1.0
        funnel.coarse += change.coarse <= COARSE_AREA
        if change.same_picture:
            pairs.append((a, b, d))
    funnel.confirmed += len(pairs)
    return pairs


def kept_first(names: list[str], pixels: list[int]) -> list[int]:
    """Indices in the order a group keeps them: the most pixels first (the least resized or
    cropped copy keeps the most of the drawing), then the earliest name (stable, reproducible)."""
    return sorted(range(len(names)), key=lambda k: (-pixels[k], names[k]))


def group_pairs(
    names: list[str], pixels: list[int], pairs: list[tuple[int, int, int]]
) -> list[Group]:
    """Union-find over the confirmed pairs: one Group per connected set, in name order."""
    parent = list(range(len(names)))

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for a, b, _ in pairs:
        parent[root(a)] = root(b)
    members: dict[int, list[int]] = {}
    for k in range(len(names)):
        members.setdefault(root(k), []).append(k)
    worst: dict[int, int] = {}
    for a, _, d in pairs:
        worst[root(a)] = max(worst.get(root(a), 0), d)
    groups = []
    for r, ks in members.items():
        if len(ks) < 2:
            continue
        order = kept_first([names[k] for k in ks], [pixels[k] for k in ks])
        ranked = [names[ks[o]] for o in order]
        groups.append(Group(ranked[0], ranked[1:], worst[r]))
    return sorted(groups, key=lambda g: g.kept)


def find_groups(names: list[str], prints: list[Fingerprint], distance: int) -> list[Group]:
    """The near-duplicate groups among named drawings, pHash candidates within `distance` bits."""
    funnel = Funnel()
    pairs = confirmed_pairs(prints, distance, funnel)
    log.info(
        "near-duplicates: %d pairs, %d within %d pHash bits, %d of close colour layout, %d "
        "aligned, %d alike in the large, %d confirmed",
        funnel.pairs, funnel.hashed, distance, funnel.laid_out, funnel.aligned, funnel.coarse,
        funnel.confirmed,
    )  # fmt: skip
    return group_pairs(names, [p.pixels for p in prints], pairs)
