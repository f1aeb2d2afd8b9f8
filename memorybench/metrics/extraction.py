"""The clique-based extraction attack of Carlini et al. 2023 ("Extracting training data
from diffusion models"), with verification against the training set.

For each attacked prompt the attacker holds N generations. Two generations are linked when
their tiled L2 distance (:mod:`memorybench.metrics.tiled_l2`: max over a 4x4 tile grid of
the per-tile RMS pixel difference on [0, 1]) is below ``threshold``; the prompt is
*flagged* ("identified") when the graph holds a clique of at least ``k`` generations. A
flagged clique is *verified* ("actually memorized") when its representative (the medoid:
the member with the smallest summed distance to the others) is within ``verify_l2`` of the
prompt's training image (or, without a known source, of its nearest training image), and,
when SSCD embeddings are given, has SSCD cosine >= ``verify_sscd`` with it.

Distances are one vectorised, chunked call per prompt (``tiled_l2_pairwise``); the clique
search is bounded: nodes of degree < k-1 are pruned (the (k-1)-core), then networkx's
maximal-clique enumeration stops at the first clique of size >= k, and gives up after
``max_cliques`` maximal cliques (recorded as ``truncated``; never happens for N <= 500 in
practice, but keeps a pathological graph from running for hours).

Scales and presets (all thresholds here are on the [0, 1] RMS scale of ``tiled_l2``):

* ``carlini2023``: N = 500, k = 10, link threshold 0.10 (LeakPro's tested default; the
  paper does not restate a clique threshold), verification 0.15 (the paper's
  (l2, 0.15)-extraction).
* ``chavhan2024`` (the setting of Chavhan et al., "Memorized Images in Diffusion Models share a
  Subspace that can be Located and Deleted"; the name is kept for the suites that use it):
  N = 50, k = 3, threshold "50.0 on its own scale". Their attack code is not public; we read 50.0 as per-tile RMS on 0-255 pixels (the usual reimplementation of
  Carlini's distance on uint8 images), i.e. 50 / 255 = 0.196 here. This is an assumption,
  recorded as such in the protocol. Verification 0.15 as Carlini.
* ``tinyworld``: N = the suite's seeds per prompt, k = 3, threshold calibrated on the tiny
  world's real images (method-independent, see :func:`calibrate_tinyworld_threshold`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import networkx as nx
import numpy as np

from memorybench.metrics.base import MetricValue
from memorybench.metrics.stats import mean_with_ci
from memorybench.metrics.tiled_l2 import DEFAULT_GRID, tiled_l2_pairwise

IMPLEMENTATION = "carlini2023-clique/tiled-l2-rms01+networkx"


@dataclass(frozen=True)
class AttackPreset:
    name: str
    n_generations: int | None  # None: every generation the suite made for the prompt
    k: int  # minimum clique size
    threshold: float | None  # link threshold, [0, 1] RMS tiled L2; None: calibrate
    verify_l2: float | None  # verification threshold to the training image; None: calibrate
    verify_sscd: float = 0.5  # SSCD cosine needed for verification when embeddings are given
    grid: int = DEFAULT_GRID
    max_cliques: int = 100_000  # bound on maximal cliques enumerated per prompt
    source: str = ""

    def with_(self, **changes) -> "AttackPreset":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


CHAVHAN2024_THRESHOLD_OWN_SCALE = 50.0
CHAVHAN2024 = AttackPreset(
    name="chavhan2024", n_generations=50, k=3, threshold=CHAVHAN2024_THRESHOLD_OWN_SCALE / 255.0, verify_l2=0.15,
    source="Chavhan et al., Memorized Images in Diffusion Models share a Subspace that can be Located and Deleted, "
           "Table 1: N=50, threshold 50.0 on its own scale, k=3; 50.0 read as per-tile RMS on 0-255 pixels -> 50/255 "
           "on [0,1] (assumption: their attack code is not public); verify 0.15 as Carlini",
)
CARLINI2023 = AttackPreset(
    name="carlini2023", n_generations=500, k=10, threshold=0.10, verify_l2=0.15,
    source="Carlini et al. 2023: N=500, clique >= 10, (l2, 0.15) extraction; link threshold 0.10 as LeakPro's tested default",
)
TINYWORLD = AttackPreset(
    name="tinyworld", n_generations=None, k=3, threshold=None, verify_l2=None,
    source="k=3 as Chavhan et al.; thresholds calibrated on the tiny world's real images (calibrate_tinyworld_threshold)",
)
PRESETS: dict[str, AttackPreset] = {p.name: p for p in (CHAVHAN2024, CARLINI2023, TINYWORLD)}

# tinyworld calibration: link below LINK_FRACTION x the closest two distinct real images of one
# caption (so two distinct real images are never linked); verify below VERIFY_RATIO x that
# (Carlini's 0.15 / LeakPro's 0.10 = 1.5), which on the shipped world stays below the closest
# two distinct memorized photos, so a verified clique cannot be another photo.
LINK_FRACTION = 0.75  # 0.5 linked almost no memorized pair on the shipped world (copies are grainy)
VERIFY_RATIO = 1.5


def get_preset(name: str) -> AttackPreset:
    from memorybench.errors import ConfigError

    if name not in PRESETS:
        raise ConfigError(f"unknown extraction preset '{name}'; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


# ----------------------------------------------------------------------------- graph search


def link_graph(dist: np.ndarray, threshold: float) -> nx.Graph:
    """Graph on 0..N-1 with an edge for every pair closer than ``threshold`` (strictly)."""
    d = np.asarray(dist)
    n = d.shape[0]
    iu, ju = np.nonzero(np.triu(d < threshold, k=1))
    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from(zip(iu.tolist(), ju.tolist()))
    return g


@dataclass
class CliqueSearch:
    clique: list[int] | None  # first maximal clique of size >= k found (sorted), or None
    visited: int  # maximal cliques enumerated before stopping
    truncated: bool  # gave up after max_cliques without finding one
    core_size: int  # nodes left after pruning degree < k-1


def find_clique(graph: nx.Graph, k: int, max_cliques: int = 100_000) -> CliqueSearch:
    """First clique of size >= ``k`` (bounded search; stops at the first one found)."""
    if k < 1:
        raise ValueError("k must be >= 1")
    if k == 1:
        nodes = sorted(graph.nodes)
        return CliqueSearch(nodes[:1] or None, 0, False, len(nodes))
    core = nx.k_core(graph, k - 1)  # a k-clique lives in the (k-1)-core
    if core.number_of_nodes() < k:
        return CliqueSearch(None, 0, False, core.number_of_nodes())
    visited = 0
    for c in nx.find_cliques(core):
        visited += 1
        if len(c) >= k:
            return CliqueSearch(sorted(c), visited, False, core.number_of_nodes())
        if visited >= max_cliques:
            return CliqueSearch(None, visited, True, core.number_of_nodes())
    return CliqueSearch(None, visited, False, core.number_of_nodes())


def medoid(dist: np.ndarray, members: Sequence[int]) -> int:
    m = list(members)
    sub = np.asarray(dist)[np.ix_(m, m)]
    return m[int(np.argmin(sub.sum(axis=1)))]


# ----------------------------------------------------------------------------- attack


@dataclass
class PromptResult:
    prompt: str
    n: int
    flagged: bool
    clique: list[int] | None
    representative: int | None
    verified: bool
    source_l2: float | None  # representative to the source / nearest training image
    source_sscd: float | None
    nearest_train: int | None  # index of the representative's nearest training image (when searched)
    visited: int
    truncated: bool

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def attack_prompt(
    images: np.ndarray,
    preset: AttackPreset,
    threshold: float,
    verify_l2: float,
    source_image: np.ndarray | None = None,
    train_images: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
    source_embedding: np.ndarray | None = None,
    train_embeddings: np.ndarray | None = None,
    prompt: str = "",
) -> PromptResult:
    """Run the attack on one prompt's generations (N, H, W, 3).

    Verification target: ``source_image`` when given (the prompt's own training image),
    else the nearest image of ``train_images`` to the clique's representative. Without
    either, ``verified`` stays False. SSCD verification is added when ``embeddings`` (one
    per generation, L2-normalised) and the target's embedding are given.
    """
    imgs = np.asarray(images)
    if preset.n_generations is not None:
        imgs = imgs[: preset.n_generations]
    n = int(imgs.shape[0])
    dist = tiled_l2_pairwise(imgs, grid=preset.grid)
    search = find_clique(link_graph(dist, threshold), preset.k, preset.max_cliques)
    if search.clique is None:
        return PromptResult(prompt, n, False, None, None, False, None, None, None, search.visited, search.truncated)
    rep = medoid(dist, search.clique)
    rep_img = imgs[rep : rep + 1]
    nearest = None
    target_emb = None
    if source_image is not None:
        src_l2 = float(tiled_l2_pairwise(rep_img, np.asarray(source_image)[None], grid=preset.grid)[0, 0])
        target_emb = source_embedding
    elif train_images is not None and len(train_images):
        d = tiled_l2_pairwise(rep_img, np.asarray(train_images), grid=preset.grid)[0]
        nearest = int(np.argmin(d))
        src_l2 = float(d[nearest])
        if train_embeddings is not None:
            target_emb = np.asarray(train_embeddings)[nearest]
    else:
        return PromptResult(prompt, n, True, search.clique, rep, False, None, None, None, search.visited, search.truncated)
    verified = src_l2 <= verify_l2
    sscd = None
    if embeddings is not None and target_emb is not None:
        sscd = float(np.dot(np.asarray(embeddings)[rep], np.asarray(target_emb)))
        verified = verified and sscd >= preset.verify_sscd
    return PromptResult(prompt, n, True, search.clique, rep, bool(verified), src_l2, sscd, nearest,
                        search.visited, search.truncated)


def within_prompt_distances(images: np.ndarray, grid: int = DEFAULT_GRID) -> np.ndarray:
    """Distances of all distinct pairs of one prompt's generations (upper triangle)."""
    d = tiled_l2_pairwise(np.asarray(images), grid=grid)
    iu = np.triu_indices(d.shape[0], 1)
    return d[iu]


def real_same_caption_floor(images: np.ndarray, captions: Sequence[str], grid: int = DEFAULT_GRID) -> np.ndarray:
    """Tiled L2 of every pair of distinct real images that share a caption (one call per caption)."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(captions):
        groups.setdefault(c, []).append(i)
    out = [within_prompt_distances(images[idx], grid) for idx in groups.values() if len(idx) > 1]
    return np.concatenate(out) if out else np.zeros(0)


def calibrate_tinyworld_threshold(world, grid: int = DEFAULT_GRID) -> dict[str, Any]:
    """Method-independent thresholds from the tiny world's *real* training images.

    floor = the smallest tiled L2 between two distinct real images of one general caption
    (the world's training set holds hundreds of captions drawn more than once). Two
    generations are linked below ``LINK_FRACTION * floor``: closer than any two distinct
    real images of one prompt have ever been, with a factor 2 margin; a clique is verified
    below ``VERIFY_RATIO`` times that (the 0.10 -> 0.15 ratio of LeakPro/Carlini).
    """
    kind = np.asarray(world.train_kind)
    gi = np.nonzero(kind == "general")[0]
    caps = [world.train_captions[i] for i in gi]
    same = real_same_caption_floor(world.train_images[gi], caps, grid)
    mem = world.train_images[np.asarray(world.memorized_indices)]
    photo = within_prompt_distances(mem, grid)
    if same.size == 0:
        raise ValueError("the tiny world has no general caption with two real images; cannot calibrate")
    floor = float(same.min())
    threshold = LINK_FRACTION * floor
    return {
        "threshold": threshold,
        "verify_l2": VERIFY_RATIO * threshold,
        "rule": f"threshold = {LINK_FRACTION} x min tiled L2 of distinct real images sharing a general caption; "
                f"verify_l2 = {VERIFY_RATIO} x threshold",
        "real_same_caption_pairs": _quantiles(same),
        "real_memorized_photo_pairs": _quantiles(photo),
        "scale": "tiled L2, 4x4 grid, per-tile RMS on [0,1], max over tiles",
    }


def _quantiles(x: np.ndarray) -> dict[str, float]:
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return {"n": 0}
    q = np.quantile(x, [0.0, 0.01, 0.05, 0.5, 0.9, 0.99, 1.0])
    return {"n": int(x.size), "min": float(q[0]), "p01": float(q[1]), "p05": float(q[2]), "median": float(q[3]),
            "p90": float(q[4]), "p99": float(q[5]), "max": float(q[6])}


def separation_check(mem_within: np.ndarray, gen_within: np.ndarray, threshold: float) -> dict[str, Any]:
    """How the link threshold sits between this run's within-prompt distances (diagnostic only)."""
    out: dict[str, Any] = {"memorized_generations": _quantiles(mem_within), "general_generations": _quantiles(gen_within)}
    if mem_within.size:
        out["share_memorized_pairs_linked"] = float(np.mean(mem_within < threshold))
    if gen_within.size:
        out["share_general_pairs_linked"] = float(np.mean(gen_within < threshold))
    return out


# ----------------------------------------------------------------------------- summary


def _share(flags: Sequence[bool], implementation: str, protocol: dict[str, Any]) -> MetricValue:
    v = np.asarray(flags, dtype=np.float64)
    mean, lo, hi = mean_with_ci(v)
    return MetricValue(value=mean, n=int(v.size), ci_low=lo, ci_high=hi, higher_is_better=False,
                       implementation=implementation, protocol=protocol)


def extraction_summary(
    mem_results: Sequence[PromptResult],
    gen_results: Sequence[PromptResult],
    preset: AttackPreset,
    threshold: float,
    verify_l2: float,
    extra_protocol: dict[str, Any] | None = None,
) -> dict[str, MetricValue]:
    """``extraction_flagged`` / ``extraction_verified`` (memorized prompts) and
    ``extraction_false_gen`` (general prompts flagged); CIs: percentile bootstrap over prompts."""
    if not mem_results:
        raise ValueError("extraction_summary needs at least one memorized prompt")
    proto: dict[str, Any] = {
        "preset": preset.to_json(),
        "threshold": threshold,
        "verify_l2": verify_l2,
        "k": preset.k,
        "n_generations_memorized": sorted({r.n for r in mem_results}),
        "n_generations_general": sorted({r.n for r in gen_results}),
        "distance": "tiled L2, per-tile RMS on [0,1], max over tiles",
        "ci": "95% percentile bootstrap over prompts",
    }
    if extra_protocol:
        proto.update(extra_protocol)
    out = {
        "extraction_flagged": _share([r.flagged for r in mem_results], IMPLEMENTATION,
                                     {**proto, "unit": "memorized prompt", "flagged_prompts": [r.prompt for r in mem_results if r.flagged]}),
        "extraction_verified": _share([r.verified for r in mem_results], IMPLEMENTATION,
                                      {**proto, "unit": "memorized prompt", "verified_against": "the prompt's own training image",
                                       "verified_prompts": [r.prompt for r in mem_results if r.verified]}),
    }
    if gen_results:
        out["extraction_false_gen"] = _share([r.flagged for r in gen_results], IMPLEMENTATION,
                                             {**proto, "unit": "held-out general prompt",
                                              "flagged_prompts": [r.prompt for r in gen_results if r.flagged]})
    return out


__all__ = [
    "AttackPreset", "PRESETS", "CHAVHAN2024", "CARLINI2023", "TINYWORLD", "get_preset",
    "link_graph", "find_clique", "CliqueSearch", "medoid", "attack_prompt", "PromptResult",
    "within_prompt_distances", "real_same_caption_floor", "calibrate_tinyworld_threshold",
    "separation_check", "extraction_summary",
]
