"""ReduNet (Chan, Yu, You, Qi, Wright, Ma): a network constructed layer by layer, no backprop.

Each layer is one projected gradient-ascent step on the MCR^2 rate reduction
of the features it receives, with operators computed in closed form from
those features. Samples are ROWS: Z (N, d), labels (N,) in [0, J). With
a = d / (N eps^2), and for class j with N_j members Z_j, a_j = d / (N_j eps^2),
gamma_j = N_j / N:

    Delta R(Z) = R(Z) - Rc(Z | labels)     (= -whitebox.rate.mcr2_loss)
    dR/dZ      = Z E,              E   = a   (I_d + a   Z^T Z)^{-1}       expansion
    dRc/dZ_j   = gamma_j Z_j C_j,  C_j = a_j (I_d + a_j Z_j^T Z_j)^{-1}   compression, class j

(the papers write E Z and C_j Z with samples as columns). One layer maps

    z -> normalize( z + eta (z E - sum_j gamma_j pi_j(z) z C_j) ),

with pi_j(z) = 1[label = j] while constructing on labelled data, and for a
new sample the paper's soft estimate of its class from how little C_j
moves it (C_j shrinks the directions class j occupies):

    pi_j(z) = softmax_j( -temperature * ||z C_j|| ).

The operators are the exact gradient of Delta R at the layer's input, so a
small enough step raises Delta R; ``eps`` is the papers' epsilon (the
official code's ``eps`` is epsilon squared).
"""
from ..backend import get_array_module, to_numpy
from ..functional import softmax_forward
from ..functional._checks import (check_array, check_class_labels, check_finite, check_ids,
                                  check_positive_int, check_real)
from ..rate import mcr2_loss
from ..rate.gram import factor, spd_inverse


def _inverse_scaled_gram(Z, a, eps):
    """a (I_d + a Z^T Z)^{-1} for Z (n, d): a symmetric positive definite (d, d) matrix.

    Factored under the precision rule of whitebox.rate.gram (float32 promoted to
    float64 where it cannot hold the inverse; refused, naming eps, where float64
    cannot either); returned in Z's dtype.
    """
    _, _, L, _ = factor(Z, a, "cols", eps=eps)
    return (a * spd_inverse(L)).astype(Z.dtype, copy=False)        # (d, d)


def expansion_operator(Z, eps):
    """E = a (I + a Z^T Z)^{-1}, a = d/(N eps^2): dR/dZ = Z E. Z (N, d) -> E (d, d)."""
    N, d = Z.shape
    return _inverse_scaled_gram(Z, d / (N * eps ** 2), eps)


def compression_operators(Z, labels, eps, num_classes):
    """C_j = a_j (I + a_j Z_j^T Z_j)^{-1} and gamma_j = N_j / N for every class.

    Inputs: Z (N, d); labels (N,) ints in [0, num_classes); eps; num_classes J.
    Returns: C (J, d, d), gamma (J,). dRc/dZ_j = gamma_j Z_j C_j. A class with
    no member gets C_j = 0 and gamma_j = 0.
    """
    xp = get_array_module(Z)
    N, d = Z.shape
    C = xp.zeros((num_classes, d, d), dtype=Z.dtype)
    gamma = xp.zeros(num_classes, dtype=Z.dtype)
    for j in range(num_classes):
        Z_j = Z[labels == j]                                   # (N_j, d)
        if len(Z_j):
            C[j] = _inverse_scaled_gram(Z_j, d / (len(Z_j) * eps ** 2), eps)
            gamma[j] = len(Z_j) / N
    return C, gamma


def rate_reduction_gradient(Z, E, C, gamma, membership):
    """The layer's ascent direction: Z E - sum_j gamma_j membership[:, j] * (Z C_j).

    Inputs: Z (N, d); E (d, d); C (J, d, d); gamma (J,); membership (N, J),
    rows summing to one (one-hot labels or soft estimates). Returns: (N, d).
    With one-hot labels this is d(R - Rc)/dZ at the Z the operators came from.
    """
    compressed = Z @ C                                         # (J, N, d)   Z C_j
    weights = (gamma[None, :] * membership).T[:, :, None]      # (J, N, 1)
    return Z @ E - (weights * compressed).sum(axis=0)          # (N, d)


def soft_membership(Z, C, temperature):
    """pi_j(z) = softmax_j(-temperature ||z C_j||): the estimated class of each row. (N, J)."""
    xp = get_array_module(Z)
    norms = xp.linalg.norm(Z @ C, axis=-1).T                   # (N, J)   ||z C_j||
    logits = -temperature * norms                              # (N, J)
    check_finite("-temperature * ||z C_j|| (temperature too large for these features)", logits)
    return softmax_forward(logits)[0]


def _normalize_rows(Z):
    """Z / ||z|| per row, the norm taken after scaling by the row's largest entry (no overflow)."""
    xp = get_array_module(Z)
    Z = Z / xp.maximum(xp.abs(Z).max(axis=1, keepdims=True), xp.finfo(Z.dtype).tiny)
    return Z / xp.maximum(xp.linalg.norm(Z, axis=1, keepdims=True), 1e-12)


def _one_hot(labels, num_classes, like):
    xp = get_array_module(like)
    out = xp.zeros((len(labels), num_classes), dtype=like.dtype)
    out[xp.arange(len(labels)), labels] = 1
    return out


class ReduNet:
    """A ReduNet constructed from labelled data, then applied to new samples.

        net = ReduNet(depth=20, eps=0.5, eta=0.5, temperature=100)
        Z_train_out = net.construct(Z_train, labels)     # builds the layers (no backprop)
        Z_test_out = net.transform(Z_test)               # soft class estimates per layer
        net.history                                      # Delta R of the features per layer

    Features are scaled to unit rows first and after every layer (the sphere
    MCR^2 lives on). Each layer stores (E, C, gamma), computed from the
    features entering it.
    """

    def __init__(self, depth, eps=0.5, eta=0.5, temperature=100.0):
        self.depth = check_positive_int("depth", depth)
        self.eps = check_real("eps", eps, 0.0, low_open=True)
        self.eta = check_real("eta", eta, 0.0, low_open=True)
        self.temperature = check_real("temperature", temperature, 0.0, low_open=True)
        self.layers = []            # one (E, C, gamma) per layer
        self.history = []           # Delta R of the training features, input then each layer
        self.num_classes = None

    def _check(self, Z, labels=None, num_classes=None, d=None):
        """Z (N, d) floating and finite, N >= 1 (d as constructed, when given); labels (N,)
        integers in [0, num_classes) when given."""
        check_array("Z", Z, ndim=2)
        if not Z.size:
            raise ValueError(f"Z must be a non-empty (N, d) array (samples as rows), got shape "
                             f"{tuple(Z.shape)}")
        if d is not None and Z.shape[1] != d:
            raise ValueError(f"Z has d = {Z.shape[1]} features; the network was constructed "
                             f"on d = {d}")
        check_finite("Z", Z)
        if labels is not None:
            check_class_labels("labels", labels, Z.shape[0])
            if num_classes is not None:
                check_ids("labels", labels, num_classes)

    def rate_reduction(self, Z, labels):
        """Delta R = R(Z) - Rc(Z | labels) of features Z (the MCR^2 objective, maximised)."""
        return -mcr2_loss(Z, labels, self.eps)[0]

    def construct(self, Z, labels, num_classes=None):
        """Build ``depth`` layers from labelled features; return the transformed features.

        Inputs: Z (N, d) floating; labels (N,) ints; num_classes (default
        max(labels) + 1). Each layer computes E and C_j from the features it
        receives and moves them one step along the exact gradient of Delta R
        (memberships = the true labels). Returns: Z after the last layer,
        (N, d) unit rows. Sets ``layers`` and ``history``.
        """
        if labels is None:
            raise TypeError("construct needs labels (N,) ints: ReduNet builds each layer "
                            "from the classes of its training features")
        if num_classes is not None:
            check_positive_int("num_classes", num_classes)
        self._check(Z, labels, num_classes)
        self.num_classes = int(to_numpy(labels).max()) + 1 if num_classes is None \
            else int(num_classes)
        Z = _normalize_rows(Z)
        membership = _one_hot(labels, self.num_classes, Z)
        self.layers, self.history = [], [self.rate_reduction(Z, labels)]
        for _ in range(self.depth):
            E = expansion_operator(Z, self.eps)
            C, gamma = compression_operators(Z, labels, self.eps, self.num_classes)
            self.layers.append((E, C, gamma))
            Z = _normalize_rows(Z + self.eta * rate_reduction_gradient(Z, E, C, gamma,
                                                                       membership))
            self.history.append(self.rate_reduction(Z, labels))
        return Z

    def transform(self, Z, labels=None, return_all=False):
        """Apply the constructed layers to new samples.

        Inputs: Z (N, d); labels None (estimate each sample's class per layer
        with ``soft_membership`` at ``temperature``) or (N,) ints (use them,
        as during construction); return_all to get the features after every
        layer. Returns: Z after the last layer (N, d), or the list of the
        input and every layer's output.
        """
        if not self.layers:
            raise RuntimeError("ReduNet.transform called before construct: build the "
                               "layers from labelled data first")
        self._check(Z, labels, self.num_classes, d=self.layers[0][0].shape[0])
        Z = _normalize_rows(Z)
        features = [Z]
        for E, C, gamma in self.layers:
            membership = soft_membership(Z, C, self.temperature) if labels is None \
                else _one_hot(labels, self.num_classes, Z)
            Z = _normalize_rows(Z + self.eta * rate_reduction_gradient(Z, E, C, gamma,
                                                                       membership))
            features.append(Z)
        return features if return_all else Z

    def predict(self, Z):
        """Class estimates of new samples: the argmax of the last layer's soft membership."""
        Z = self.transform(Z)
        E, C, gamma = self.layers[-1]
        return soft_membership(Z, C, self.temperature).argmax(axis=1)


__all__ = ["ReduNet", "expansion_operator", "compression_operators", "rate_reduction_gradient",
           "soft_membership"]
