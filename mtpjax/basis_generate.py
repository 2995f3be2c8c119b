"""Generate the MTP moment-tensor basis of a given level (MLIP-2's templates, from the formula).

A scalar basis function is a full contraction of a product of moment tensors
M_{μ,ν} = Σ_j f_μ(r_j) û_j^{⊗ν}, i.e. a multigraph whose nodes are tensors (degree ν) and whose
edges are contracted index pairs, without self-loops (traces are redundant: û·û = 1). Its level
is Σ (2 + 4μ + ν). MLIP-2's templates (levels 2…28) hold exactly the graphs with

- level ≤ L,
- at most 4 tensors in total (also across the factors of a product of scalars),
- μ ≤ 5 and ν ≤ 10 for every tensor,

connected graphs and products of connected graphs alike, cycles included (e.g. tr M₀₂³).
The counts of scalars and basic moments agree with every template; see docs/basis.md.

Flattened form. An intermediate (partial contraction) has free indices in *blocks*, one per
graph node with uncontracted legs; a block is symmetric, so a component is a tuple of exponent
triples (one per block) and every component is one moment, as in MLIP. Moments with the same
set of product rows are merged, so an intermediate reached twice is stored once.

Contraction plan (MLIP's, decoded from its templates; see :func:`_plan`): two tensors are
contracted directly; three: the pair sharing most indices first, then the third; four: the
smallest tensor (by (ν, μ)) last, either as a chain (pair, +1 tensor, +1 tensor) or as a
contraction of two pairs. A product of scalars is (one connected factor) × (the product of the
others). With this plan the moment and product counts equal MLIP's at every level 2…28
(docs/basis.md).
"""

from __future__ import annotations

import itertools
from functools import cache, lru_cache
from math import factorial

import numpy as np

from mtpjax.basis import BasisSpec

MAX_LEVEL = 28
MAX_TENSORS = 4
MAX_MU = 5
MAX_NU = 10

Type = tuple[int, int]  # (μ, ν)


def tensor_level(mu: int, nu: int) -> int:
    """Level of M_{μ,ν}: 2 + 4μ + ν."""
    return 2 + 4 * mu + nu


@cache
def sym_exponents(n: int) -> tuple[tuple[int, int, int], ...]:
    """Exponents (a, b, c), a+b+c = n, in MLIP's order (a descending, then b descending)."""
    return tuple((a, b, n - a - b) for a in range(n, -1, -1) for b in range(n - a, -1, -1))


@cache
def _multinomial(e: tuple[int, int, int]) -> int:
    return factorial(sum(e)) // (factorial(e[0]) * factorial(e[1]) * factorial(e[2]))


def _add(x: tuple[int, int, int], y: tuple[int, int, int]) -> tuple[int, int, int]:
    return (x[0] + y[0], x[1] + y[1], x[2] + y[2])


# ---------------------------------------------------------------------------- graphs
# A connected graph: (types, edges); types sorted, edges ((i, j, multiplicity), ...) with i < j,
# in the canonical (lexicographically smallest) labelling among permutations of equal types.
Graph = tuple[tuple[Type, ...], tuple[tuple[int, int, int], ...]]


def _type_multisets(level: int) -> list[tuple[Type, ...]]:
    types = sorted(
        (mu, nu)
        for mu in range(MAX_MU + 1)
        for nu in range(MAX_NU + 1)
        if tensor_level(mu, nu) <= level
    )
    out = []

    def rec(start: int, current: list[Type], total: int) -> None:
        if current and sum(nu for _, nu in current) % 2 == 0:
            out.append(tuple(current))
        if len(current) == MAX_TENSORS:
            return
        for i in range(start, len(types)):
            t = types[i]
            if total + tensor_level(*t) <= level:
                current.append(t)
                rec(i, current, total + tensor_level(*t))
                current.pop()

    rec(0, [], 0)
    return out


def _graphs_of(types: tuple[Type, ...]) -> list[Graph]:
    """All connected multigraphs without self-loops whose node i has degree types[i][1]."""
    n = len(types)
    if n == 1:
        return [(types, ())] if types[0][1] == 0 else []
    degree = [nu for _, nu in types]
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    groups: dict[Type, list[int]] = {}
    for i, t in enumerate(types):
        groups.setdefault(t, []).append(i)
    perms = []
    for combo in itertools.product(*(itertools.permutations(g) for g in groups.values())):
        perm = [0] * n
        for g, image in zip(groups.values(), combo, strict=True):
            for src, dst in zip(g, image, strict=True):
                perm[src] = dst
        perms.append(perm)
    found: set[tuple] = set()
    remaining = degree[:]
    mult = [0] * len(pairs)

    def connected() -> bool:
        seen, stack = {0}, [0]
        while stack:
            v = stack.pop()
            for (i, j), m in zip(pairs, mult, strict=True):
                if m and v in (i, j):
                    w = j if v == i else i
                    if w not in seen:
                        seen.add(w)
                        stack.append(w)
        return len(seen) == n

    def rec(k: int) -> None:
        if k == len(pairs):
            if not any(remaining) and connected():
                edges = [(i, j, m) for (i, j), m in zip(pairs, mult, strict=True) if m]
                found.add(
                    min(
                        tuple(sorted((min(p[i], p[j]), max(p[i], p[j]), m) for i, j, m in edges))
                        for p in perms
                    )
                )
            return
        i, j = pairs[k]
        for m in range(min(remaining[i], remaining[j]) + 1):
            remaining[i] -= m
            remaining[j] -= m
            mult[k] = m
            # the last pair of node i: its degree must be used up
            if j < n - 1 or remaining[i] == 0:
                rec(k + 1)
            remaining[i] += m
            remaining[j] += m
        mult[k] = 0

    rec(0)
    return [(types, edges) for edges in sorted(found)]


def graph_level(graph: Graph) -> int:
    return sum(tensor_level(*t) for t in graph[0])


@cache
def connected_contractions(level: int) -> tuple[Graph, ...]:
    """Connected scalar contractions (≤ 4 tensors, μ ≤ 5, ν ≤ 10) of level ≤ ``level``."""
    graphs = []
    for types in _type_multisets(level):
        graphs.extend(_graphs_of(types))
    return tuple(graphs)


@cache
def scalar_contractions(level: int) -> tuple[tuple[Graph, ...], ...]:
    """All scalar basis functions: multisets of connected graphs (sorted tuples).

    Total level ≤ ``level`` and at most 4 tensors in total.
    """
    conn = sorted(connected_contractions(level), key=lambda g: (graph_level(g), g))
    out = []

    def rec(start: int, current: list[Graph], lev: int, n_nodes: int) -> None:
        if current:
            out.append(tuple(current))
        for i in range(start, len(conn)):
            g = conn[i]
            gl, gn = graph_level(g), len(g[0])
            if lev + gl <= level and n_nodes + gn <= MAX_TENSORS:
                current.append(g)
                rec(i, current, lev + gl, n_nodes + gn)
                current.pop()

    rec(0, [], 0, 0)
    return tuple(out)


# ---------------------------------------------------------------------------- builder
class _Tensor:
    """An intermediate: block sizes and a map component (tuple of exponents) → moment."""

    __slots__ = ("blocks", "comp")

    def __init__(self, blocks: tuple[int, ...], comp: dict):
        self.blocks = blocks
        self.comp = comp


class _Builder:
    """Collects basic moments, product rows and intermediates (deduplicated)."""

    def __init__(self, basic_types: list[Type]):
        self.basic: list[tuple[int, int, int, int]] = []
        self.tensors: dict = {}
        for mu, nu in sorted(basic_types):
            comp = {}
            for e in sym_exponents(nu):
                comp[(e,)] = len(self.basic)
                self.basic.append((mu, *e))
            self.tensors[("B", mu, nu)] = _Tensor((nu,), comp)
        self.n_moments = len(self.basic)
        self.times: list[tuple[int, int, int, int]] = []
        self.by_rows: dict[tuple, int] = {}

    def _moment(self, rows: dict[tuple[int, int], int]) -> int:
        key = tuple(sorted((min(p, q), max(p, q), w) for (p, q), w in rows.items()))
        k = self.by_rows.get(key)
        if k is None:
            k = self.n_moments
            self.n_moments += 1
            self.by_rows[key] = k
            self.times.extend((p, q, w, k) for (p, q), w in rows.items())
        return k

    def contract(self, x_key, y_key, pairing: tuple[tuple[int, ...], ...]):
        """Contract tensors x and y: ``pairing[i][j]`` index pairs between their blocks i, j.

        The result's blocks are x's remaining blocks, then y's (empty ones dropped).
        """
        key = ("C", x_key, y_key, pairing)
        if key in self.tensors:
            return key
        x, y = self.tensors[x_key], self.tensors[y_key]
        free_x = [s - sum(row) for s, row in zip(x.blocks, pairing, strict=True)]
        free_y = [s - sum(row[j] for row in pairing) for j, s in enumerate(y.blocks)]
        blocks = tuple(s for s in free_x + free_y if s)
        groups = [(i, j, n) for i, row in enumerate(pairing) for j, n in enumerate(row) if n]
        choices = list(itertools.product(*(sym_exponents(n) for _, _, n in groups)))
        weights = [int(np.prod([_multinomial(e) for e in es])) for es in choices]
        zero = (0, 0, 0)
        comp = {}
        for res in itertools.product(*(sym_exponents(s) for s in blocks)):
            it = iter(res)
            fx = [next(it) if s else zero for s in free_x]
            fy = [next(it) if s else zero for s in free_y]
            rows: dict[tuple[int, int], int] = {}
            for es, w in zip(choices, weights, strict=True):
                xe, ye = list(fx), list(fy)
                for (i, j, _), e in zip(groups, es, strict=True):
                    xe[i] = _add(xe[i], e)
                    ye[j] = _add(ye[j], e)
                p, q = x.comp[tuple(xe)], y.comp[tuple(ye)]
                pq = (p, q) if p <= q or x_key != y_key else (q, p)  # m_p m_q = m_q m_p
                rows[pq] = rows.get(pq, 0) + w
            comp[res] = self._moment(rows)
        self.tensors[key] = _Tensor(blocks, comp)
        return key

    def product(self, p: int, q: int) -> int:
        return self._moment({(p, q): 1})


def _labelled(graph: Graph) -> tuple[list[Type], np.ndarray]:
    """Node types and multiplicity matrix [n, n] in the labelling used for the plan.

    Among the labellings with nodes sorted by (μ, ν), the one whose edge vector
    (m₁₂, m₁₃, …, m₃₄) is lexicographically smallest is taken (this fixes the order of equal
    types); the nodes are then stably re-sorted by (ν, μ).
    """
    types, edges = graph
    n = len(types)
    mult = np.zeros((n, n), dtype=np.int64)
    for i, j, m in edges:
        mult[i, j] = mult[j, i] = m
    order = sorted(range(n), key=lambda i: types[i])
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    best = None
    for perm in itertools.permutations(order):
        if any(types[perm[i]] != types[order[i]] for i in range(n)):
            continue
        vec = tuple(int(mult[perm[i], perm[j]]) for i, j in pairs)
        if best is None or vec < best[0]:
            best = (vec, perm)
    perm = sorted(best[1], key=lambda i: (types[i][1], types[i][0]))
    return [types[p] for p in perm], mult[np.ix_(perm, perm)]


def _plan(graph: Graph):
    """How a connected graph (≥ 2 nodes) is contracted, following MLIP's choices.

    Returns ("chain", types, mult, [v1, v2, …]) — contract v1 with v2, then add the other
    nodes one by one — or ("pairs", types, mult, (a, b), (c, d)) — contract the pairs
    (a, b) and (c, d), then the two intermediates with each other.
    """
    types, mult = _labelled(graph)
    n = len(types)
    if n == 2:
        return "chain", types, mult, [0, 1]
    # the inner pair: most shared indices, then highest level, then the last such pair
    inner = list(range(n)) if n == 3 else [1, 2, 3]
    def score(pair):
        a, b = pair
        return (mult[a, b], tensor_level(*types[a]) + tensor_level(*types[b]))
    cands = list(itertools.combinations(inner, 2))
    top = max(score(p) for p in cands)
    a, b = [p for p in cands if score(p) == top][-1]
    (c,) = [v for v in inner if v not in (a, b)]
    if n == 3:
        return "chain", types, mult, [a, b, c]
    if mult[0, c] > mult[a, c] + mult[b, c]:
        return "pairs", types, mult, (a, b), (0, c)
    return "chain", types, mult, [a, b, c, 0]


def _chain(b: _Builder, types: list[Type], mult: np.ndarray, nodes: list[int]):
    """Contract graph nodes[0], nodes[1], … in turn (each new basic tensor into the last).

    Returns the tensor key and the graph node that owns each of its blocks.
    """
    key = ("B", *types[nodes[0]])
    owners = [nodes[0]]
    free = {nodes[0]: types[nodes[0]][1]}
    for v in nodes[1:]:
        row = tuple(int(mult[v, u]) for u in owners)
        key = b.contract(("B", *types[v]), key, (row,))
        for u, n in zip(owners, row, strict=True):
            free[u] -= n
        free[v] = types[v][1] - sum(row)
        owners = ([v] if free[v] else []) + [u for u in owners if free[u]]
    return key, owners


def _build_connected(b: _Builder, graph: Graph) -> int:
    """Moment index of a connected scalar contraction."""
    types = graph[0]
    if len(types) == 1:
        return b.tensors[("B", *types[0])].comp[((0, 0, 0),)]
    kind, types, mult, *parts = _plan(graph)
    if kind == "chain":
        key, _ = _chain(b, types, mult, parts[0])
    else:
        x_key, x_owners = _chain(b, types, mult, list(parts[0]))
        y_key, y_owners = _chain(b, types, mult, list(parts[1]))
        pairing = tuple(tuple(int(mult[u, v]) for v in y_owners) for u in x_owners)
        key = b.contract(x_key, y_key, pairing)
    return b.tensors[key].comp[()]


@lru_cache(maxsize=32)
def generate_basis(level: int) -> BasisSpec:
    """The MTP basis of ``level`` (even, 2…28) in MLIP's flattened form.

    Returns a :class:`BasisSpec` with ``alpha_index_basic`` [B, 4], ``alpha_index_times``
    [P, 4] and ``alpha_moment_mapping`` [S]; the scalars are sorted by level.
    """
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)):
        raise ValueError(f"level must be an even integer in 2..{MAX_LEVEL}, got {level!r}")
    level = int(level)
    if level < 2 or level > MAX_LEVEL or level % 2:
        raise ValueError(f"level must be an even integer in 2..{MAX_LEVEL}, got {level}")
    scalars = scalar_contractions(level)
    conn = sorted(connected_contractions(level), key=lambda g: (len(g[0]), graph_level(g), g))
    basic_types = sorted({t for g in conn for t in g[0]})
    b = _Builder(basic_types)

    # connected scalars (fewest tensors first), then products of them
    value = {g: _build_connected(b, g) for g in conn}

    # a product is (smallest factor) × (product of the others); factors ordered by number of
    # tensors, then type, as MLIP does (M₁₀·(M₂₀·(M₀₁·M₀₁)))
    def factors(s):
        return tuple(sorted(s, key=lambda g: (len(g[0]), g)))

    prod_value: dict[tuple[Graph, ...], int] = {}
    for s in sorted(scalars, key=len):
        f = factors(s)
        if len(f) == 1:
            prod_value[f] = value[f[0]]
        else:
            prod_value[f] = b.product(value[f[0]], prod_value[f[1:]])

    order = sorted(scalars, key=lambda s: (sum(graph_level(g) for g in s), len(s),
                                           sum(len(g[0]) for g in s), s))
    mapping = [prod_value[factors(s)] for s in order]
    return BasisSpec(
        alpha_index_basic=np.asarray(b.basic, dtype=np.int64).reshape(-1, 4),
        alpha_index_times=np.asarray(b.times, dtype=np.int64).reshape(-1, 4),
        alpha_moment_mapping=np.asarray(mapping, dtype=np.int64),
        alpha_moments_count=b.n_moments,
        level=level,
    )
