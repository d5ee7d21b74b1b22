"""Masked language modelling's data: which token ids a BERT-style model must fill in.

``mask_tokens`` draws, on the host, the positions a masked model is trained
to recover and what it sees there; CRATE-BERT (whitebox.models.CRATEBERT)
reads the inputs and whitebox.functional's token cross-entropy scores the
targets (every other position is ``ignore_index``).
"""
import numpy as np

from ..backend import backend_name, to_device, to_numpy
from ..functional._checks import check_ids, check_ignore_index, check_real, is_int


def check_mask_id(mask_id, vocab_size):
    """mask_id as an int, or ValueError naming it: an id in [0, vocab_size)."""
    if not is_int(mask_id) or not 0 <= mask_id < vocab_size:
        raise ValueError(f"mask_id must be an integer in [0, {vocab_size}), got {mask_id!r}")
    return int(mask_id)


def mask_tokens(idx, mask_id, vocab_size, rng, mask_prob=0.15, ignore_index=-1):
    """BERT's masking rule: returns (inputs, targets), both (B, T), on idx's backend.

    In every row round(mask_prob T) positions (at least one) are chosen
    uniformly without replacement; of the chosen, 80% become ``mask_id``,
    10% a random token other than mask_id, 10% stay as they are. targets
    hold the original id at chosen positions and ``ignore_index`` elsewhere,
    so the loss counts the chosen positions only. Draws come from ``rng``
    (a numpy Generator, saved with the checkpoint) on the CPU.
    """
    mask_prob = check_real("mask_prob", mask_prob, 0.0, 1.0, low_open=True)
    if not is_int(vocab_size) or vocab_size < 2:
        raise ValueError(f"vocab_size must be an integer >= 2 (the mask and one other token), "
                         f"got {vocab_size!r}")
    mask_id = check_mask_id(mask_id, vocab_size)
    check_ignore_index(ignore_index, vocab_size)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator, got {type(rng).__name__}")
    ids = to_numpy(idx)
    check_ids("idx", ids, vocab_size)
    if ids.ndim != 2:
        raise ValueError(f"idx must be 2-dimensional (B, T), got shape {ids.shape}")
    B, T = ids.shape
    k = max(1, int(round(mask_prob * T)))
    order = np.argsort(rng.random((B, T)), axis=1)
    chosen = np.zeros((B, T), dtype=bool)
    np.put_along_axis(chosen, order[:, :k], True, axis=1)
    u = rng.random((B, T))
    inputs = ids.copy()
    inputs[chosen & (u < 0.8)] = mask_id
    swap = chosen & (u >= 0.8) & (u < 0.9)
    # a random token other than the mask: draw from vocab_size - 1 ids and skip mask_id
    rand = rng.integers(0, vocab_size - 1, size=(B, T))
    rand += rand >= mask_id
    inputs[swap] = rand[swap]
    targets = np.where(chosen, ids, ignore_index)
    where = backend_name(idx)
    return to_device(inputs, where), to_device(targets, where)
