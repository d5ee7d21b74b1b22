"""Rate reduction, the objective CRATE is derived from, with exact hand-written gradients.

Tokens are ROWS: Z has shape (N, d), or (B, N, d) for a batch (one value per
item). ``eps`` is the papers' epsilon, a distortion; the official codes'
``eps`` is epsilon squared (convert with ``eps = math.sqrt(their_eps)``).

    coding_rate(Z, eps)                R  = 1/2 logdet(I + d/(N eps^2) Z^T Z)
    compression_rate(Z, U, eps)        Rc = sum_k 1/2 logdet(I + p/(N eps^2) (Z U_k)^T Z U_k)
    rate_reduction(Z, U, eps)          R - Rc
    sparse_rate_reduction(Z, U, eps, lam)   R - Rc - lam ||Z||_1
    mcr2_loss(Z, labels, eps)          (-R + sum_j N_j/(2N) logdet(...), dZ)
    compression_step(Z, U, eps, kappa) Z - kappa dRc/dZ
    measure_compression(Z, U, eps2)    the official per-layer measurement

Gradients: ``coding_rate_grad``, ``compression_rate_grad(..., wrt="Z" | "U" |
"both")``, ``rate_reduction_grad``, ``sparse_rate_reduction_grad``, and the
``*_forward`` / ``*_backward`` pairs underneath them; ``mcr2_loss`` returns its
own. Log-determinants go through Cholesky of the smaller Gram matrix (N x N
or d x d), and gradients apply the inverse of that same small matrix.

Precision, one rule for all of them (:mod:`whitebox.rate.gram`): a result is
never silently wrong and never a computable answer refused. float32 input is
computed in float32 where an upper bound on the condition number of I + a G
(Gershgorin, tightened by tr(M^{-1}) from the Cholesky factor when needed)
says float32 holds the answer to 0.1%, and redone in float64 where it does not (``accumulate='float32'`` refuses instead,
``accumulate='float64'`` always uses float64). An eps too small even for float64
is refused with the smallest usable eps; empty token sets (N = 0 or d = 0) are
refused, an empty batch (B = 0) gives an empty result.
"""
from .coding import coding_rate, coding_rate_backward, coding_rate_forward, coding_rate_grad
from .compression import (compression_rate, compression_rate_backward,
                          compression_rate_forward, compression_rate_grad, compression_step,
                          project_heads, stack_bases)
from .gram import gram_logdet_backward, gram_logdet_forward, gram_side
from .mcr2 import (class_compression_backward, class_compression_forward,
                   class_compression_rate, mcr2_loss)
from .measure import bases_from_qkv, layer_measures, measure_compression
from .reduction import (rate_reduction, rate_reduction_grad, sparse_rate_reduction,
                        sparse_rate_reduction_grad)

__all__ = ["coding_rate", "coding_rate_grad", "coding_rate_forward", "coding_rate_backward",
           "compression_rate", "compression_rate_grad", "compression_rate_forward",
           "compression_rate_backward", "compression_step", "project_heads", "stack_bases",
           "rate_reduction", "rate_reduction_grad", "sparse_rate_reduction",
           "sparse_rate_reduction_grad", "mcr2_loss", "class_compression_rate",
           "class_compression_forward", "class_compression_backward", "measure_compression",
           "bases_from_qkv", "gram_logdet_forward", "gram_logdet_backward", "gram_side"]
