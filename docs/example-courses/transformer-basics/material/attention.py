"""Scaled dot-product attention in plain Python (no numpy), to read line by line.

Run it:  python3 attention.py
"""

import math


def softmax(scores):
    """Positive weights summing to 1; subtracting the max avoids overflow."""
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


def attention(queries, keys, values, mask=None):
    """softmax(Q K^T / sqrt(d)) V, one query (row) at a time."""
    d = len(keys[0])
    out = []
    for i, q in enumerate(queries):
        scores = [sum(a * b for a, b in zip(q, k, strict=True)) / math.sqrt(d) for k in keys]
        if mask is not None:  # mask[i][j] False: query i may not look at position j
            scores = [s if mask[i][j] else -math.inf for j, s in enumerate(scores)]
        weights = softmax(scores)
        width = len(values[0])
        out.append(
            [sum(w * v[c] for w, v in zip(weights, values, strict=True)) for c in range(width)]
        )
    return out


def multi_head(x, heads):
    """Split the features into `heads` equal slices, attend within each, concatenate."""
    size = len(x[0]) // heads
    parts = [[row[h * size : (h + 1) * size] for row in x] for h in range(heads)]
    outs = [attention(p, p, p) for p in parts]  # real layers use learned projections here
    return [[v for o in outs for v in o[i]] for i in range(len(x))]


if __name__ == "__main__":
    x = [[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0]]
    causal = [[j <= i for j in range(len(x))] for i in range(len(x))]
    print("self-attention:", [[round(v, 3) for v in row] for row in attention(x, x, x)])
    print("causal:        ", [[round(v, 3) for v in row] for row in attention(x, x, x, causal)])
    print("two heads:     ", [[round(v, 3) for v in row] for row in multi_head(x, 2)])
