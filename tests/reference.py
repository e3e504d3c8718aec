"""Independent brute-force formulas, in float64 NumPy, written from the papers' definitions.

Nothing here calls decorr_lite, and nothing here is clever: explicit matrices and Python loops,
so that a bug in the library's vectorised code cannot hide in a shared helper.
"""

from __future__ import annotations

import math

import numpy as np


def invariance(z1, z2):
    n, d = z1.shape
    return sum((z1[a, i] - z2[a, i]) ** 2 for a in range(n) for i in range(d)) / (n * d)


def variance(z, gamma=1.0, eps=1e-4):
    n, d = z.shape
    total = 0.0
    for i in range(d):
        mean = sum(z[:, i]) / n
        var = sum((z[a, i] - mean) ** 2 for a in range(n)) / (n - 1)  # unbiased
        total += max(0.0, gamma - math.sqrt(var + eps))
    return total / d


def covariance_matrix(z):
    return np.cov(z, rowvar=False, ddof=1).reshape(z.shape[1], z.shape[1])


def covariance_exact(z, q=2):
    k = covariance_matrix(z)
    d = z.shape[1]
    return sum(abs(k[i, j]) ** q for i in range(d) for j in range(d) if i != j) / d


def standardize(z, eps=1e-5):
    return (z - z.mean(axis=0)) / np.sqrt(z.var(axis=0) + eps)  # biased variance, as BatchNorm


def cross_correlation(z1, z2):
    return standardize(z1).T @ standardize(z2) / z1.shape[0]


def barlow_exact(z1, z2, lambd=0.0051, q=2):
    c = cross_correlation(z1, z2)
    d = c.shape[0]
    on = sum((1 - c[i, i]) ** 2 for i in range(d))
    off = sum(abs(c[i, j]) ** q for i in range(d) for j in range(d) if i != j)
    return on + lambd * off


def circular(z1, z2, b):
    """s[u, v, k] = sum_i M[u*b + i, v*b + (i + k) % b] with M = z1.T @ z2, zero-padded."""
    n, d = z1.shape
    g = -(-d // b)
    m = np.zeros((g * b, g * b))
    m[:d, :d] = z1.T @ z2
    s = np.zeros((g, g, b))
    for u in range(g):
        for v in range(g):
            for k in range(b):
                s[u, v, k] = sum(m[u * b + i, v * b + (i + k) % b] for i in range(b))
    return s


def barlow_relaxed(z1, z2, lambd=0.0051, q=2, b=None, perm=None):
    n, d = z1.shape
    b = d if b is None else b
    a, bb = standardize(z1), standardize(z2)
    c = a.T @ bb / n
    on = sum((1 - c[i, i]) ** 2 for i in range(d))
    if perm is not None:
        a, bb = a[:, perm], bb[:, perm]
    s = circular(a, bb, b) / n
    g = s.shape[0]
    off = 0.0
    for u in range(g):
        for v in range(g):
            for k in range(b):
                if u == v and k == 0:
                    continue
                off += abs(s[u, v, k]) ** q
    return on + lambd * off


def covariance_relaxed(z, q=2, b=None, perm=None):
    n, d = z.shape
    b = d if b is None else b
    zc = z - z.mean(axis=0)
    if perm is not None:
        zc = zc[:, perm]
    s = circular(zc, zc, b) / (n - 1)
    g = s.shape[0]
    size = [b] * (g - 1) + [d - (g - 1) * b]
    diag = [sum(abs(s[u, u, k] / size[u]) ** q for k in range(1, b)) for u in range(g)]
    total = sum(diag) / g
    pairs = [
        sum(abs(s[u, v, k] / min(size[u], size[v])) ** q for k in range(b)) for u in range(g) for v in range(u + 1, g)
    ]
    if pairs:
        total += 2 * sum(pairs) / len(pairs)
    return total


def vicreg(z1, z2, sim=25.0, std=25.0, cov=1.0, q=2, b=None, perm=None, relaxed=False):
    penalty = (lambda z: covariance_relaxed(z, q, b, perm)) if relaxed else (lambda z: covariance_exact(z, q))
    return sim * invariance(z1, z2) + std * (variance(z1) + variance(z2)) / 2 + cov * (penalty(z1) + penalty(z2))
