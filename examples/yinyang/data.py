"""The Yin-Yang dataset (Kriener et al. 2021, github.com/lkriener/yin_yang_data_set), generated in code.

Points (x, y) uniform in the disc of radius R = 0.5 centred at (R, R), labelled by the geometry of the
yin-yang sign (0 and 1: the two halves, 2: the two small dots), with the classes balanced. As in the paper and in jaxsnn, a
sample is presented as five input spikes: x, y, 1 - x, 1 - y at times value * t_late, and a bias spike at
time `bias_time`.
"""

from __future__ import annotations

import numpy as np

R_BIG, R_SMALL = 0.5, 0.1
CLASSES = ("yin", "yang", "dot")  # names of labels 0, 1, 2 in Kriener's reference code


def label(x, y, r_big: float = R_BIG, r_small: float = R_SMALL) -> np.ndarray:
    """The label of points inside the big circle: 2 inside either small dot, else 1 where the half with the
    upper-right arc holds (Kriener's `is_yin`), else 0."""
    d_right = np.hypot(x - 1.5 * r_big, y - r_big)
    d_left = np.hypot(x - 0.5 * r_big, y - r_big)
    yin = (d_right <= r_small) | ((d_left > r_small) & (d_left <= 0.5 * r_big)) | ((y > r_big) & (d_right > 0.5 * r_big))
    dots = (d_right < r_small) | (d_left < r_small)
    return np.where(dots, 2, yin.astype(int))


def yinyang(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` points [n, 2] and labels [n], classes as balanced as n allows (n // 3 each, the rest dots),
    in random order. Rejection sampling: draws uniformly in the square, keeps points inside the circle."""
    rng = np.random.default_rng(seed)
    want = [n // 3, n // 3, n - 2 * (n // 3)]
    kept: list[list[np.ndarray]] = [[], [], []]
    have = [0, 0, 0]
    while any(h < w for h, w in zip(have, want)):
        xy = rng.uniform(0.0, 2 * R_BIG, (4 * n + 64, 2))
        xy = xy[np.hypot(xy[:, 0] - R_BIG, xy[:, 1] - R_BIG) <= R_BIG]
        cls = label(xy[:, 0], xy[:, 1])
        for c in range(3):
            take = xy[cls == c][: want[c] - have[c]]
            kept[c].append(take)
            have[c] += len(take)
    points = np.concatenate([np.concatenate(k) for k in kept])
    labels = np.repeat(np.arange(3), want)
    order = rng.permutation(n)
    return points[order], labels[order]


def encode(points: np.ndarray, t_late: float, bias_time: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Spike times [n, 5] and input indices [5] of samples: x, y, 1 - x, 1 - y at value * t_late, then the bias
    spike at bias_time (each input neuron fires once)."""
    values = np.concatenate([points, 1.0 - points], axis=1) * t_late
    times = np.concatenate([values, np.full((len(points), 1), bias_time)], axis=1)
    return times, np.arange(times.shape[1])
