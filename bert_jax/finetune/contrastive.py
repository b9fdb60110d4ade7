"""The objective of sentence-embedding training (`config.task="embedding"`), as summed
losses and counts like every objective (`train.step`), so the shared step applies.

- `mnrl`: sentence-transformers' `MultipleNegativesRankingLoss` (InfoNCE with in-batch
  negatives): each anchor's cosine similarities to every positive of the batch (and to
  every hard negative, extra columns), times `scale`, under a cross-entropy whose target
  is its own positive. `symmetric` averages it with the positives -> anchors direction
  (`directions=("query_to_doc", "doc_to_query")`, `partition_mode="per_direction"`).
- `triplet`: sentence-transformers' `TripletLoss` (euclidean): relu(|a - p| - |a - n| +
  margin) on (anchor, positive, hard negative) triplets.

Under gradient accumulation (`config.train.accum_steps` > 1) the in-batch negatives of an
anchor are the other pairs of its micro-batch (batch_size / accum_steps pairs), not of the
whole batch: the loss is the mean of the micro-batches' losses, as if each were a batch.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bert_jax.model.embedding import normalize

LOSSES = ("mnrl", "triplet")
SIDES = ("anchor", "positive", "negative")


def side_keys(side: str) -> tuple[str, str]:
  """The batch keys of one side of the pairs: (input ids, attention mask)."""
  return f"{side}_input_ids", f"{side}_attention_mask"


def mnrl_losses(anchors, positives, negatives=None, *, scale=20.0, symmetric=False):
  """Per-anchor losses of in-batch negatives ranking, and whether each ranks its positive first.

  Args:
    anchors, positives: (batch, embed) embeddings; row i of each is a pair.
    negatives: (batch, embed) hard negatives (extra candidates for every anchor), or None.
    scale: the cosine similarities are multiplied by it (1 / temperature).
    symmetric: average with the positives -> anchors cross-entropy.

  Returns:
    ((batch,) float32 losses, (batch,) float32 1.0 where the anchor's own positive has
    the highest score among the candidates).
  """
  a, p = normalize(anchors.astype(jnp.float32)), normalize(positives.astype(jnp.float32))
  candidates = p if negatives is None else jnp.concatenate([p, normalize(negatives)])
  scores = scale * a @ candidates.T  # (batch, batch [+ batch])
  targets = jnp.arange(a.shape[0])
  losses = optax.softmax_cross_entropy_with_integer_labels(scores, targets)
  if symmetric:  # each positive against every anchor
    backward = optax.softmax_cross_entropy_with_integer_labels(scale * p @ a.T, targets)
    losses = (losses + backward) / 2
  hits = (scores.argmax(-1) == targets).astype(jnp.float32)
  return losses, hits


def triplet_losses(anchors, positives, negatives, *, margin=5.0):
  """Per-triplet relu(|a - p| - |a - n| + margin) (euclidean), and whether |a - p| < |a - n|."""

  def distance(x, y):  # the square root's gradient stays finite at 0
    return jnp.sqrt(jnp.maximum(((x - y) ** 2).sum(-1), 1e-12))

  a, p, n = (x.astype(jnp.float32) for x in (anchors, positives, negatives))
  to_positive, to_negative = distance(a, p), distance(a, n)
  losses = jax.nn.relu(to_positive - to_negative + margin)
  return losses, (to_positive < to_negative).astype(jnp.float32)


def embed_sides(model: nn.Module, params, batch: dict, deterministic=True, rng=None) -> dict:
  """{side: (batch, embed)} of the sides in `batch`, in one forward pass of the model."""
  sides = [s for s in SIDES if side_keys(s)[0] in batch]
  ids = jnp.concatenate([batch[side_keys(s)[0]] for s in sides])
  mask = jnp.concatenate([batch[side_keys(s)[1]] for s in sides])
  rngs = None if rng is None else {"dropout": rng}
  vectors = model.apply(
    {"params": params}, ids, jnp.zeros_like(ids), mask, deterministic=deterministic, rngs=rngs
  )
  return dict(zip(sides, jnp.split(vectors, len(sides))))


@dataclasses.dataclass(frozen=True)
class Contrastive:
  """The mean `mnrl` or `triplet` loss over the batch's pairs; "accuracy": the share of
  anchors whose positive ranks first (triplet: is nearer than the negative).
  """

  model: nn.Module
  loss_name: str = "mnrl"
  scale: float = 20.0
  symmetric: bool = False
  margin: float = 5.0
  sum_keys = ("loss", "correct", "count")

  def sums(self, params, batch, rng=None, deterministic=False):
    vectors = embed_sides(self.model, params, batch, deterministic, rng)
    if self.loss_name == "triplet":
      losses, hits = triplet_losses(
        vectors["anchor"], vectors["positive"], vectors["negative"], margin=self.margin
      )
    else:
      losses, hits = mnrl_losses(
        vectors["anchor"],
        vectors["positive"],
        vectors.get("negative"),
        scale=self.scale,
        symmetric=self.symmetric,
      )
    count = jnp.float32(losses.shape[0])
    return {"loss": losses.sum(), "correct": hits.sum(), "count": count}

  def totals(self, batch):
    return {"count": jnp.float32(batch[side_keys("anchor")[0]].shape[0])}

  def loss(self, sums, totals):
    return sums["loss"] / totals["count"]

  def summarize(self, sums):
    count = jnp.maximum(sums["count"], 1.0)
    return {"loss": sums["loss"] / count, "accuracy": sums["correct"] / count}


def objective(model: nn.Module, config) -> Contrastive:
  """The objective of `config.embedding` for `model` (a `SentenceEmbedder`)."""
  e = config.embedding
  return Contrastive(model, e.loss, float(e.scale), bool(e.symmetric), float(e.margin))
