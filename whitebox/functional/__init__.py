"""Pure forward/backward pairs: the source of truth for every operator.

Each ``<op>_forward(...)`` returns ``(out, cache)`` and each
``<op>_backward(dout, cache)`` returns the input gradients. They take their
array module from the inputs, so they run on NumPy and CuPy alike.
"""
from .activation import gelu_backward, gelu_forward, relu_backward, relu_forward
from .dropout import dropout_backward, dropout_forward
from .embedding import embedding_backward, embedding_forward
from .layernorm import layernorm_backward, layernorm_forward
from .linear import linear_backward, linear_forward
from .patches import (patchify_backward, patchify_forward, unpatchify,
                      unpatchify_backward, unpatchify_forward)
from .shifted_patches import shifted_patches_backward, shifted_patches_forward
from .softmax import (causal_mask, softmax_backward, softmax_fast_backward,
                      softmax_fast_forward, softmax_forward)
from .ista import ista_backward, ista_forward
from .mssa import mssa_backward, mssa_fast_backward, mssa_fast_forward, mssa_forward
from .mssa_decode import mssa_decode
from .mssa_variants import mssa_variant_backward, mssa_variant_forward
from .overcomplete_ista import overcomplete_ista_backward, overcomplete_ista_forward
from .token_cross_entropy import (token_cross_entropy, token_cross_entropy_backward,
                                  token_cross_entropy_forward)
from .l2_normalize import l2_normalize_backward, l2_normalize_forward
from .weight_norm import weight_norm_backward, weight_norm_forward
from .batch_norm import (batch_norm_backward, batch_norm_eval_backward,
                         batch_norm_eval_forward, batch_norm_forward)
from .pos_interp import interpolate_pos_embed_backward, interpolate_pos_embed_forward
from .attention import (attention_backward, attention_forward, sdpa_backward,
                        sdpa_fast_backward, sdpa_fast_forward, sdpa_forward)
