"""SetFit-style few-shot training: contrastive fine-tuning of a mean-pooled encoder, then a head on its embeddings.

Stage 1 trains the encoder on sentence pairs (same label: cosine 1, different: 0) with SetFit's
CosineSimilarityLoss; stage 2 fits the classifier on the frozen embeddings of the labelled texts.
Unlike SetFit, the number of pairs has one bound, ``max_pairs``: pairs are drawn, never enumerated,
so a large labelled set neither explodes in memory nor needs a ``num_iterations`` to be tuned.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from landing.models.fewshot.params import ContrastiveParams
from landing.models.fewshot.pooled_classifier import MeanPooledClassifier
from landing.models.params import TrainingParams

WARMUP_RATIO = 0.1  # SetFit's default warmup_proportion
Pair = tuple[int, int, float]


def sample_pairs(label_ids: Sequence[int], max_pairs: int, seed: int, positive_fraction: float = 0.5) -> list[Pair]:
    """Up to ``max_pairs`` distinct unordered pairs ``(i, j, 1.0 same label | 0.0 different)``, ``i != j``.

    ``positive_fraction`` of them positive where enough positives exist, the other kind filling the rest.
    Algorithm: number each kind's pairs in label-sorted row order, draw distinct numbers with Floyd's
    algorithm and decode each by a prefix sum over rows, so memory is O(rows + max_pairs), never O(rows²).
    """
    labels = np.asarray(label_ids, dtype=np.int64)
    n = len(labels)
    order = np.argsort(labels, kind="stable")
    ends = np.searchsorted(labels[order], labels[order], side="right")  # end of each sorted row's class
    position = np.arange(n)
    later_same, later_other = ends - position - 1, n - ends  # pairs (p, q > p) of each kind starting at p
    positives, negatives = int(later_same.sum()), int(later_other.sum())
    total = min(max_pairs, positives + negatives)
    n_pos = min(positives, max(total - negatives, round(total * positive_fraction)))
    rng = random.Random(seed)
    pos = _decode(_floyd(positives, n_pos, rng), later_same, position + 1, order)
    neg = _decode(_floyd(negatives, total - n_pos, rng), later_other, ends, order)
    pairs = [(i, j, 1.0) for i, j in pos] + [(i, j, 0.0) for i, j in neg]
    rng.shuffle(pairs)
    return pairs


def _floyd(population: int, k: int, rng: random.Random) -> list[int]:
    """``k`` distinct integers from ``range(population)``, uniformly, in O(k) memory (Floyd's algorithm)."""
    chosen: set[int] = set()
    for top in range(population - k, population):
        t = rng.randint(0, top)
        chosen.add(top if t in chosen else t)
    return sorted(chosen)


def _decode(numbers: list[int], counts: np.ndarray, first_partner: np.ndarray, order: np.ndarray) -> list:
    """Pair number -> rows: the sorted row ``p`` owns ``counts[p]`` consecutive numbers, partners from
    ``first_partner[p]`` on (the rest of its class for positives, the later classes for negatives)."""
    if not numbers:
        return []
    starts = np.cumsum(counts) - counts
    numbers_arr = np.asarray(numbers, dtype=np.int64)
    p = np.searchsorted(starts, numbers_arr, side="right") - 1
    q = first_partner[p] + numbers_arr - starts[p]
    return list(zip(order[p].tolist(), order[q].tolist()))


def _tokenize(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int) -> dict:
    return dict(tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"))


def train_contrastive(
    model: MeanPooledClassifier,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    label_ids: Sequence[int],
    params: ContrastiveParams,
    training: TrainingParams,
    *,
    seed: int,
    progress: bool = True,
) -> dict:
    """Both stages on ``model``, in place; deterministic given ``seed``. Returns the run's statistics.

    A plain torch loop: sentence-transformers' trainer needs ``datasets``, which is not a dependency.
    """
    labels = _check_labels(model, texts, label_ids)
    started = time.perf_counter()
    torch.manual_seed(seed)
    pairs = sample_pairs(labels, params.max_pairs, seed, params.positive_fraction)
    steps, final_loss = _train_encoder(model, tokenizer, texts, pairs, training, seed, progress)
    embeddings = embed_texts(model, tokenizer, texts, training.batch_size, training.max_seq_length)
    fit_head = _fit_logistic_head if params.head == "logistic" else _fit_linear_head
    fit_head(model, embeddings, torch.tensor(labels), params, training.batch_size, seed)
    model.eval()
    return {"pairs": len(pairs), "positives": sum(1 for p in pairs if p[2] == 1.0), "steps": steps,
            "final_loss": final_loss, "head": params.head, "seconds": time.perf_counter() - started}  # fmt: skip


def _check_labels(model, texts: Sequence[str], label_ids: Sequence[int]) -> list[int]:
    """Every label of the model needs an example: a head cannot be fitted for a class it never sees."""
    labels = [int(y) for y in label_ids]
    if len(labels) != len(texts) or len(texts) < 2:
        raise ValueError(f"texts ({len(texts)}) and label_ids ({len(labels)}) must be the same length, at least 2")
    seen, expected = set(labels), set(range(model.config.num_labels))
    if seen != expected:
        raise ValueError(f"label_ids: {sorted(seen)} must be exactly the model's label ids {sorted(expected)}, "
                         "each with at least one text")  # fmt: skip
    return labels


def _train_encoder(model, tokenizer, texts, pairs: list[Pair], params: TrainingParams, seed: int,
                   progress: bool) -> tuple[int, float]:  # fmt: skip
    """Stage 1: MSE between cos(u, v) and each pair's 0/1 target (SetFit's CosineSimilarityLoss)."""
    from tqdm.auto import tqdm

    if not pairs:
        return 0, float("nan")
    batches_per_epoch = math.ceil(len(pairs) / params.batch_size)
    total = max(1, math.ceil(params.epochs * batches_per_epoch))
    encoder = [p for p in model.sentence_encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(encoder, lr=params.learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(WARMUP_RATIO * total), total)
    order_rng = torch.Generator().manual_seed(seed)
    model.train()
    step, loss = 0, torch.tensor(float("nan"))
    with tqdm(total=total, desc="contrastive pairs", unit="step", disable=not progress) as bar:
        while step < total:
            for rows in torch.randperm(len(pairs), generator=order_rng).split(params.batch_size):
                if step >= total:
                    break
                batch = [pairs[r] for r in rows.tolist()]
                # One forward for both sides: half the calls, identical embeddings.
                inputs = _tokenize(tokenizer, [texts[i] for i, _, _ in batch] + [texts[j] for _, j, _ in batch],
                                   params.max_seq_length)  # fmt: skip
                u, v = model.embed(**inputs).chunk(2)
                loss = F.mse_loss(F.cosine_similarity(u, v), torch.tensor([t for _, _, t in batch]))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(encoder, 1.0)
                optimizer.step()
                scheduler.step()
                step += 1
                bar.update()
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
    model.eval()
    return step, float(loss.detach())


@torch.no_grad()
def embed_texts(model: MeanPooledClassifier, tokenizer: PreTrainedTokenizerBase,
                texts: Sequence[str], batch_size: int = 64, max_length: int = 128) -> torch.Tensor:  # fmt: skip
    """The model's sentence embeddings of ``texts`` (eval mode), in order."""
    model.eval()
    chunks = [model.embed(**_tokenize(tokenizer, texts[i : i + batch_size], max_length))
              for i in range(0, len(texts), batch_size)]  # fmt: skip
    return torch.cat(chunks)


def _fit_logistic_head(model, embeddings: torch.Tensor, labels: torch.Tensor, params, batch_size: int, seed: int) -> None:
    """sklearn's LogisticRegression (SetFit's default head), copied exactly into ``model.classifier``.

    Binary: sklearn's one score z becomes the logits [-z/2, z/2], whose argmax is its prediction.
    """
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(random_state=seed).fit(embeddings.double().numpy(), labels.numpy())
    coef, intercept = torch.from_numpy(clf.coef_), torch.from_numpy(clf.intercept_)
    if coef.shape[0] == 1:
        coef, intercept = torch.cat([-coef, coef]) / 2, torch.cat([-intercept, intercept]) / 2
    with torch.no_grad():
        model.classifier.weight.copy_(coef)
        model.classifier.bias.copy_(intercept)


def _fit_linear_head(model, embeddings: torch.Tensor, labels: torch.Tensor, params: ContrastiveParams,
                     batch_size: int, seed: int) -> None:  # fmt: skip
    """``model.classifier`` trained with cross-entropy on the frozen embeddings (AdamW, shuffled batches)."""
    head = model.classifier
    optimizer = torch.optim.AdamW(head.parameters(), lr=params.head_learning_rate)
    order_rng = torch.Generator().manual_seed(seed)
    for _ in range(params.head_epochs):
        for rows in torch.randperm(len(labels), generator=order_rng).split(batch_size):
            loss = F.cross_entropy(head(embeddings[rows]), labels[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
