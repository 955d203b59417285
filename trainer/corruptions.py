"""Point-cloud corruptions for robustness evaluation, in the style of nuScenes-C and cross-sensor tests.

Each takes points [N, 5] (x, y, z, intensity, ring) and a numpy Generator, and returns the indices of
the points kept (so labels and features follow) and the points, possibly moved:

- ``beams_missing(fraction)``: whole rings dropped at random (a failing laser);
- ``sparser_sensor(keep_every)``: only rings r with r % keep_every == 0 kept (a 16- or 8-beam sensor);
- ``jitter(sigma)``: Gaussian noise of std sigma metres on x, y, z;
- ``fog(density)``: each point dropped with probability 1 - exp(-density * range), as in fog whose
  attenuation grows with distance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Corruption:
    kind: str
    severity: float

    KINDS = ("beams_missing", "sparser_sensor", "jitter", "fog")

    def __post_init__(self):
        if self.kind not in self.KINDS:
            raise ValueError(f"corruption {self.kind!r}: choose one of {self.KINDS}")

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.severity:g}"

    def __call__(self, points: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return _APPLY[self.kind](points, rng, self.severity)


def parse(text: str) -> Corruption:
    """'fog:0.02' -> Corruption('fog', 0.02)."""
    kind, _, value = text.partition(":")
    try:
        return Corruption(kind, float(value))
    except ValueError:
        raise ValueError(f"corruption {text!r}: write KIND:SEVERITY with KIND in {Corruption.KINDS}") from None


def beams_missing(points, rng, fraction: float):
    rings = np.unique(points[:, 4].astype(int))
    n_drop = int(round(fraction * len(rings)))
    dropped = rng.choice(rings, size=n_drop, replace=False)
    keep = np.nonzero(~np.isin(points[:, 4].astype(int), dropped))[0]
    return keep, points[keep]


def sparser_sensor(points, rng, keep_every: float):
    keep = np.nonzero(points[:, 4].astype(int) % int(keep_every) == 0)[0]
    return keep, points[keep]


def jitter(points, rng, sigma: float):
    out = points.copy()
    out[:, :3] += rng.normal(0.0, sigma, (len(points), 3)).astype(points.dtype)
    return np.arange(len(points)), out


def fog(points, rng, density: float):
    rng_m = np.linalg.norm(points[:, :3], axis=1)
    keep = np.nonzero(rng.random(len(points)) < np.exp(-density * rng_m))[0]
    return keep, points[keep]


_APPLY = {"beams_missing": beams_missing, "sparser_sensor": sparser_sensor, "jitter": jitter, "fog": fog}
