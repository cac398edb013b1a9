"""E²VPT prompt pruning: importance scores, budgets, frozen masks, rewinding, and the instant-pruning sweep.

Only the visual prompts are pruned (key-value prompts never are). Prompt k of every layer is gated by the token mask
γ_k and its 16 strided channel segments by Γ_{k,r} (see :meth:`~e2vpt_viz.model.PromptedViT.mask_matrix`):

    P̃[k, j] = P[k, j] · γ_k · Γ_{k, j mod 16}

1. :func:`importance_scores`: S_k = mean over batches of ∂L/∂γ_k and S_{k,r} = mean of ∂L/∂Γ_{k,r} (model in eval
   mode, no optimizer step, one pass).
2. :func:`token_budgets` / :func:`segment_budgets`: the candidate numbers of pruned tokens / segments per token.
3. :func:`pruning_masks`: greedy, lowest score first; segments are chosen per kept token, the same count for each.
4. :func:`prune_and_rewind`: retrain a fresh model under each pair of frozen masks, keep the best on validation.
5. :func:`pruning_sweep`: instant pruning (no retraining) at several ratios, cached for a slider.
6. :func:`remove_pruned_tokens`: drop fully pruned tokens from the sequence (E²VPT keeps them as zero vectors).
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Literal, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .checkpoint import write_json
from .checks import plain_scalar, positive_int
from .methods import count_parameters
from .model import NUM_SEGMENTS, PromptedViT
from .training import TrainConfig, evaluate, fit, seed_epoch

PERCENTS = tuple(range(10, 100, 10))  # the official candidate percentages 10, 20, ..., 90
MIN_KEPT_TOKENS = 1
MIN_KEPT_SEGMENTS = 4


class PruningError(ValueError):
    """A model or setting that cannot be pruned; the message says what to change."""


def _check_prunable(model: PromptedViT) -> None:
    if getattr(model, "token_mask", None) is None:
        raise PruningError(
            "This model has no visual-prompt masks to prune. Build it with E2VPTConfig(num_prompts=P, masks=True) "
            "(the default), e.g. apply_prompts(backbone, E2VPTConfig(), num_classes).")


def check_ratio(ratio: float) -> float:
    """``ratio`` as a Python float (numpy and torch scalars accepted); :class:`PruningError` unless in [0, 1)."""
    ratio = plain_scalar(ratio)
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio < 1.0:
        raise PruningError(f"A pruning ratio must be a number in [0, 1), got {ratio!r}.")
    return float(ratio)


@dataclass
class ImportanceScores:
    """Importance of each visual prompt token (P,) and of each of its segments (P, 16); low = pruned first."""

    token: torch.Tensor
    segment: torch.Tensor
    score: str = "signed"

    def to_dict(self) -> dict:
        return {"token": self.token.tolist(), "segment": self.segment.tolist(), "score": self.score}

    @classmethod
    def from_dict(cls, data: dict) -> "ImportanceScores":
        return cls(torch.tensor(data["token"]), torch.tensor(data["segment"]), data.get("score", "signed"))


SCORE_KINDS = ("signed", "abs")


def importance_scores(model: PromptedViT, loader: DataLoader, score: Literal["signed", "abs"] = "signed",
                      device: Union[str, torch.device, None] = None, progress: bool = False,
                      seed: int = 0) -> ImportanceScores:
    """Token scores S_k (P,) and segment scores S_{k,r} (P, 16): the mean over ``loader``'s batches of ∂L_b/∂γ_k
    and ∂L_b/∂Γ_{k,r}, where L_b is the batch's mean cross-entropy.

    The model runs in eval mode (prompt dropout off); nothing is updated, the masks keep their current (trained)
    values. Because the masks are shared by all layers, each gradient sums the contributions of every layer's copy
    of prompt k.

    ``score="signed"`` is what the official code computes: the signed mean gradient, so a very negative score (the
    loss would *rise* if the gate closed) is pruned first. ``score="abs"`` is the paper's formula E|∂L/∂γ|: the
    absolute value of each batch's gradient, averaged; with batch size 1 this is exactly the per-image expectation.

    The pass is seeded (data order and augmentation, as one training epoch with ``seed``), so the scores do not depend
    on what ran before: a resumed protocol or a re-run notebook cell gets the same scores.
    """
    return importance_score_kinds(model, loader, (score,), device, progress, seed)[score]


def importance_score_kinds(model: PromptedViT, loader: DataLoader, kinds: Sequence[str] = SCORE_KINDS,
                           device: Union[str, torch.device, None] = None, progress: bool = False,
                           seed: int = 0) -> dict[str, ImportanceScores]:
    """:func:`importance_scores` of several kinds (``"signed"``, ``"abs"``) from one pass over ``loader``: the same
    per-batch gradients, summed signed and summed absolute. ``{kind: ImportanceScores}``."""
    _check_prunable(model)
    unknown = [k for k in kinds if k not in SCORE_KINDS]
    if unknown or not kinds:
        raise PruningError(f"score must be 'signed' (official code) or 'abs' (paper formula), got "
                           f"{(unknown[0] if unknown else tuple(kinds))!r}.")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    masks = (model.token_mask, model.segment_mask)
    needs_grad = [m.requires_grad for m in masks]
    for m in masks:
        m.requires_grad_(True)
    sums = {k: (torch.zeros_like(model.token_mask), torch.zeros_like(model.segment_mask)) for k in kinds}
    batches = 0
    seed_epoch(loader, seed, 0)
    try:
        with model.evaluating():
            for images, labels in tqdm(loader, disable=not progress, desc="importance"):
                images, labels = images.to(device), labels.to(device)
                loss = F.cross_entropy(model(images), labels)
                grads = torch.autograd.grad(loss, masks)
                for kind, (token_sum, segment_sum) in sums.items():
                    token_grad, segment_grad = (g.abs() for g in grads) if kind == "abs" else grads
                    token_sum += token_grad
                    segment_sum += segment_grad
                batches += 1
    finally:
        for m, flag in zip(masks, needs_grad):
            m.requires_grad_(flag)
    if batches == 0:
        raise PruningError("importance_scores() got an empty loader; pass the training loader.")
    return {k: ImportanceScores((t / batches).cpu(), (s / batches).cpu(), k) for k, (t, s) in sums.items()}


def _budgets(total: int, percents: Sequence[int], min_kept: int) -> list[int]:
    """int(total·pct/100) for each percentage, capped at total − min_kept; stops once the cap is reached."""
    cap = total - min_kept
    budgets: list[int] = []
    for pct in percents:
        n = min(int(total * pct / 100), cap)
        if n not in budgets:
            budgets.append(n)
        if n == cap:
            break
    return budgets


def token_budgets(num_prompts: int, percents: Sequence[int] = PERCENTS, min_kept: int = MIN_KEPT_TOKENS) -> list[int]:
    """Candidate numbers of pruned tokens: P=5 → [0, 1, 2, 3, 4]; P=10 → [1, …, 9]."""
    return _budgets(positive_int("num_prompts", num_prompts), percents, min_kept)


def segment_budgets(num_segments: int = NUM_SEGMENTS, percents: Sequence[int] = PERCENTS,
                    min_kept: int = MIN_KEPT_SEGMENTS) -> list[int]:
    """Candidate numbers of pruned segments per kept token: 16 segments → [1, 3, 4, 6, 8, 9, 11, 12]."""
    return _budgets(positive_int("num_segments", num_segments), percents, min_kept)


def pruning_masks(scores: ImportanceScores, num_tokens: int, num_segments: int) -> tuple[torch.Tensor, torch.Tensor]:
    """0/1 masks that prune the ``num_tokens`` lowest-scored tokens (P,) and, in every kept token, its
    ``num_segments`` lowest-scored segments (P, 16). Ties go to the lower index (stable sort)."""
    P, R = scores.segment.shape
    if not 0 <= num_tokens < P:
        raise PruningError(f"num_tokens must be in [0, {P - 1}] (at least one prompt stays), got {num_tokens}.")
    if not 0 <= num_segments < R:
        raise PruningError(f"num_segments must be in [0, {R - 1}], got {num_segments}.")
    token_mask = torch.ones(P)
    token_mask[torch.argsort(scores.token, stable=True)[:num_tokens]] = 0.0
    segment_mask = torch.ones(P, R)
    lowest = torch.argsort(scores.segment, dim=1, stable=True)[:, :num_segments]
    segment_mask.scatter_(1, lowest, 0.0)
    segment_mask[token_mask == 0] = 1.0  # a pruned token is gone whole; its segments stay at 1 (no effect)
    return token_mask, segment_mask


def ratio_budgets(ratio: float, num_prompts: int) -> tuple[int, int]:
    """One slider value → (pruned tokens, pruned segments per kept token): int(ratio·P) tokens and int(ratio·16)
    segments, capped like the official candidates (at least 1 token and 4 segments are kept)."""
    ratio = check_ratio(ratio)
    return (min(int(ratio * num_prompts), num_prompts - MIN_KEPT_TOKENS),
            min(int(ratio * NUM_SEGMENTS), NUM_SEGMENTS - MIN_KEPT_SEGMENTS))


def set_masks(model: PromptedViT, token_mask: torch.Tensor, segment_mask: torch.Tensor, frozen: bool = True) -> None:
    """Write masks into ``model`` (values, not references) and freeze them: pruning is fixed from now on."""
    _check_prunable(model)
    with torch.no_grad():
        model.token_mask.copy_(token_mask)
        model.segment_mask.copy_(segment_mask)
    model.token_mask.requires_grad_(not frozen)
    model.segment_mask.requires_grad_(not frozen)


@contextmanager
def instantly_pruned(model: PromptedViT, token_mask: torch.Tensor, segment_mask: torch.Tensor) -> Iterator[PromptedViT]:
    """Temporarily multiply 0/1 masks into the model's (trained) masks, frozen; everything is restored on exit."""
    _check_prunable(model)
    saved = [(m.detach().clone(), m.requires_grad) for m in (model.token_mask, model.segment_mask)]
    device = model.token_mask.device
    try:
        set_masks(model, saved[0][0] * token_mask.to(device), saved[1][0] * segment_mask.to(device), frozen=True)
        yield model
    finally:
        for m, (value, flag) in zip((model.token_mask, model.segment_mask), saved):
            with torch.no_grad():
                m.copy_(value)
            m.requires_grad_(flag)


# ---------------------------------------------------------------------------------------------- instant sweep

@dataclass
class PruningSweep:
    """Instant-pruning results per ratio, ready for a slider: :meth:`at` is a dictionary read.

    ``results[ratio]`` holds acc, loss, per_class_acc, parameters (:func:`count_parameters`), pruned_tokens (list of
    prompt indices) and pruned_segments (P × 16 list of 0/1, 1 = pruned).
    """

    ratios: list[float]
    results: dict[float, dict] = field(default_factory=dict)
    scores: Optional[dict] = None

    def at(self, ratio: float) -> dict:
        """The cached result of the sweep ratio nearest to ``ratio``."""
        return self.results[min(self.ratios, key=lambda r: abs(r - ratio))]

    def save(self, path: Union[str, Path]) -> Path:
        data = {"ratios": self.ratios, "scores": self.scores,
                "results": [self.results[r] for r in self.ratios]}
        return write_json(path, data, indent=None)

    @classmethod
    def load(cls, path: Union[str, Path]) -> "PruningSweep":
        data = json.loads(Path(path).read_text())
        return cls(data["ratios"], dict(zip(data["ratios"], data["results"])), data.get("scores"))


def pruning_sweep(model: PromptedViT, loader: DataLoader,
                  ratios: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), *,
                  scores: ImportanceScores, device: Union[str, torch.device, None] = None,
                  progress: bool = False, unpruned: Optional[dict] = None) -> PruningSweep:
    """Evaluate instant pruning (no retraining) at every ratio: one batched evaluation pass per ratio.

    Ratio r prunes :func:`ratio_budgets` (r, P) with :func:`pruning_masks`; ratio 0 is the unpruned model.
    ``unpruned``: :func:`~e2vpt_viz.training.evaluate`'s result for this model on ``loader`` when it was just computed
    (a lesson evaluates the run first); ratio 0 then reuses it instead of a second identical pass.
    """
    _check_prunable(model)
    ratios = [check_ratio(r) for r in ratios]
    sweep = PruningSweep(sorted(set(ratios)), scores=scores.to_dict())
    for ratio in tqdm(sweep.ratios, disable=not progress, desc="pruning sweep"):
        num_tokens, num_segments = ratio_budgets(ratio, model.num_prompts)
        token_mask, segment_mask = pruning_masks(scores, num_tokens, num_segments)
        with instantly_pruned(model, token_mask, segment_mask):
            reuse = ratio == 0 and unpruned is not None
            metrics = unpruned if reuse else evaluate(model, loader, device)
            params = count_parameters(model)
        sweep.results[ratio] = {
            "ratio": ratio, "pruned_token_count": num_tokens, "pruned_segment_count": num_segments,
            "acc": metrics["acc"], "loss": metrics["loss"], "per_class_acc": metrics["per_class_acc"],
            "parameters": params, "pruned_tokens": torch.nonzero(token_mask == 0).flatten().tolist(),
            "pruned_segments": (segment_mask == 0).int().tolist()}
    return sweep


# ---------------------------------------------------------------------------------------------- rewinding

@dataclass
class RewindRun:
    """One rewound candidate: its budgets, last-epoch validation accuracy, tunable parameter count and, when a test
    loader was given, test accuracy."""

    num_tokens: int
    num_segments: int
    val_acc: Optional[float]
    tunable: int
    test_acc: Optional[float] = None


def _select(runs: Sequence[RewindRun]) -> RewindRun:
    """Best last-epoch validation accuracy; ties go to more pruned tokens, then more pruned segments."""
    return max(runs, key=lambda r: (r.val_acc, r.num_tokens, r.num_segments))


def prune_and_rewind(make_model: Callable[[], PromptedViT], train_loader: DataLoader, val_loader: Optional[DataLoader],
                     config: TrainConfig, scores: ImportanceScores, out_dir: Union[str, Path],
                     num_tokens: Optional[Sequence[int]] = None, num_segments: Optional[Sequence[int]] = None,
                     test_loader: Optional[DataLoader] = None, progress: bool = False) -> dict:
    """Rewinding: for every (token budget, segment budget) pair, train a *fresh* model (new prompt, KV and head
    initialisation from ``make_model``) under the frozen masks, and select by last-epoch validation accuracy.

    Args:
        make_model: builds a new, untrained model each call (e.g. ``lambda: build_model(cfg, num_classes)``).
        num_tokens / num_segments: candidate budgets; default :func:`token_budgets` (P) and :func:`segment_budgets`.
        test_loader: if given, each candidate's test accuracy is recorded too (never used for selection).
        val_loader: selects the candidate; None only for one candidate (a final run with the chosen budgets on
            VTAB-1k's train800val200, which leaves no validation split), recorded with ``val_acc`` None.
        out_dir: each candidate trains in ``out_dir/t{n}_s{m}`` (resumable); the summary goes to ``rewind.json``
            after every candidate, so an interrupted search continues where it stopped.

    Returns:
        ``{"runs": [RewindRun as dict, ...], "best": {...}}``; the best candidate's prompts are in its folder.
    """
    out_dir = Path(out_dir)
    P = scores.token.numel()
    num_tokens = list(num_tokens) if num_tokens is not None else token_budgets(P)
    num_segments = list(num_segments) if num_segments is not None else segment_budgets(scores.segment.shape[1])
    summary_path = out_dir / "rewind.json"
    done = {}
    if summary_path.exists():
        previous = json.loads(summary_path.read_text())
        if previous.get("scores") != scores.to_dict():
            raise PruningError(f"{summary_path} was made with other importance scores; use another out_dir.")
        done = {(r["num_tokens"], r["num_segments"]): RewindRun(**r) for r in previous["runs"]}
    runs = []
    pairs = [(t, s) for t in num_tokens for s in num_segments]
    if val_loader is None and len(pairs) > 1:
        raise PruningError(f"{len(pairs)} rewinding candidates need a validation loader to choose among them; pass "
                           "val_loader, or one token budget and one segment budget.")
    for t, s in tqdm(pairs, disable=not progress, desc="rewinding"):
        if (t, s) not in done:
            model = make_model()
            if model.num_prompts != P:
                raise PruningError(f"make_model() builds {model.num_prompts} prompts but the scores are for {P}.")
            set_masks(model, *pruning_masks(scores, t, s), frozen=True)
            history = fit(model, train_loader, val_loader, config, out_dir / f"t{t}_s{s}")
            test_acc = evaluate(model, test_loader)["acc"] if test_loader is not None else None
            done[(t, s)] = RewindRun(t, s, history[-1].get("val_acc"), count_parameters(model)["tunable"], test_acc)
        runs.append(done[(t, s)])
        summary = {"scores": scores.to_dict(), "runs": [asdict(r) for r in runs]}
        write_json(summary_path, summary)
    best = _select(runs)
    return {"runs": [asdict(r) for r in runs], "best": asdict(best), "best_dir": str(out_dir / f"t{best.num_tokens}_s{best.num_segments}")}


# ---------------------------------------------------------------------------------------------- physical removal

def remove_pruned_tokens(model: PromptedViT) -> PromptedViT:
    """A model without the visual prompts whose token mask is 0: the sequence gets shorter.

    The kept prompts carry their mask product baked in (frozen), and the new model has no masks; its key-value
    prompts and head are copies of ``model``'s. This is *not* the same model as the zeroed one: a zeroed prompt
    becomes LayerNorm's bias β after ``norm1``, so it still has the key W_k·β + b_k and the value W_v·β + b_v and
    takes a share of every softmax. Removal equals zeroing plus excluding the token from attention. The backbone is
    shared with ``model`` (not copied).
    """
    _check_prunable(model)
    keep = torch.nonzero(model.token_mask.detach() != 0).flatten()
    layout = replace(model.layout, num_prompts=len(keep), masks=False)
    with torch.random.fork_rng(devices=[]):  # the constructor's random init is overwritten: leave the RNG as it was
        compact = PromptedViT(model.backbone, model.num_classes, layout, model.options, model.method_config,
                              model.backbone_train_mode)
    compact.to(model.visual_prompts.device).train(model.training)
    with torch.no_grad():
        compact.visual_prompts.copy_(model.masked_prompts()[:, keep])
        for name in ("kv_prompts", "value_prompts"):
            if getattr(model, name) is not None:
                getattr(compact, name).copy_(getattr(model, name))
                getattr(compact, name).requires_grad_(getattr(model, name).requires_grad)
        compact.head.load_state_dict(model.head.state_dict())
    compact.visual_prompts.requires_grad_(False)
    return compact
