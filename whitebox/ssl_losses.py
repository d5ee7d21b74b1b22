"""Self-supervised losses between a student's views and a teacher's: SimDINO's and DINO's.

Both take the outputs of a student network on every crop of a batch and of a
teacher network on the two global crops, crop-major:

    student (n_crops * m, p): rows [v * m, (v + 1) * m) are crop v of the m images,
                              the two global crops first (v = 0, 1);
    teacher (2 * m, p):       the teacher's two global crops, a constant (no gradient).

and return the loss and its gradient with respect to ``student`` only, as the
official code does (its teacher runs without gradients).

SimDINO (Wu et al., "Simplifying DINO via Coding Rate Regularization"):

    loss = -coeff * compression - expansion
    compression = 1/(2 n_crops - 2) sum_{t in {0,1}} sum_{s != t} mean_i cos(T_{t,i}, S_{s,i})
    expansion   = gamma mean_{v in {0,1}} 1/2 logdet(I_p + p/(m eps) Z_v^T Z_v),
    gamma = (p + m) / (p m),

with Z_v the student's global crop v (``expansion="student"``) or the mean of
the student's and the teacher's (``"mean"``, the official default). Their
``eps`` is epsilon^2 of :mod:`whitebox.rate`: 1/2 logdet(...) is the coding rate
R(Z_v) at epsilon = sqrt(eps), computed (value, gradient, precision rule) by
:func:`whitebox.rate.coding_rate_forward`.

DINO (Caron et al.): a cross-entropy between the teacher's centred and
sharpened softmax and the student's softmax at a higher temperature, over
every pair of a teacher global crop and a different student crop.
"""
import math

import numpy as np

from .backend import backend_name, get_array_module, to_device
from .functional._checks import check_array, check_finite, check_positive_int, check_real, is_int
from .functional.l2_normalize import l2_normalize_backward, l2_normalize_forward
from .rate.coding import coding_rate_backward, coding_rate_forward

EXPANSIONS = ("mean", "student")
COSINE_EPS = 1e-8      # the norm floor of torch.nn.functional.cosine_similarity


def _check_views(student, teacher, n_crops):
    """Shapes (n_crops m, p) and (2 m, p) on one backend; returns (xp, m)."""
    xp = check_array("student", student, ndim=2)
    check_array("teacher", teacher, ndim=2)
    n_crops = check_positive_int("n_crops", n_crops)
    if n_crops < 2:
        raise ValueError(f"n_crops must count the 2 global crops and any local ones (>= 2), "
                         f"got {n_crops}")
    if get_array_module(teacher) is not xp:
        raise TypeError(f"teacher lives on {backend_name(teacher)} but student on "
                        f"{backend_name(student)}; move one with whitebox.to_device")
    rows, p = student.shape
    if rows == 0 or rows % n_crops:
        raise ValueError(f"student must have n_crops * m rows (n_crops = {n_crops}, m >= 1), "
                         f"got shape {tuple(student.shape)}")
    m = rows // n_crops
    if tuple(teacher.shape) != (2 * m, p):
        raise ValueError(f"teacher must have shape (2 * m, p) = {(2 * m, p)} for a student of "
                         f"shape {tuple(student.shape)} and n_crops = {n_crops}, got "
                         f"{tuple(teacher.shape)}")
    check_finite("student", student)
    check_finite("teacher", teacher)
    return xp, m


def simdino_loss(student, teacher, n_crops, eps=0.5, coeff=1.0, expansion="mean",
                 terms=False):
    """SimDINO's loss, -coeff * compression - expansion (see the module docstring).

    Inputs: student (n_crops m, p) and teacher (2 m, p), crop-major with the two
    global crops first (SimDINO feeds L2-normalised head outputs); n_crops >= 2
    the number of crops (2 global + the local ones); eps > 0 the official
    ``eps`` (epsilon^2 of whitebox.rate); coeff >= 0 the weight of the
    compression term; expansion "mean" (Z = (student + teacher)/2 on the global
    crops, the official expa_type=1) or "student" (Z = the student's, expa_type=0);
    terms: also return the two terms.
    Returns: loss (0-d array), dstudent (n_crops m, p) in student's dtype, and
    with ``terms`` a dict {"compression": 0-d, "expansion": 0-d}.
    """
    xp, m = _check_views(student, teacher, n_crops)
    eps = check_real("eps", eps, 0.0, low_open=True)
    coeff = check_real("coeff", coeff, 0.0)
    if expansion not in EXPANSIONS:
        raise ValueError(f"expansion must be one of {EXPANSIONS}, got {expansion!r}")
    p = student.shape[1]
    S = student.reshape(n_crops, m, p)                     # (n_crops, m, p)
    T = teacher.reshape(2, m, p)                           # (2, m, p)

    # compression: cosines of each teacher view with every other student view
    Sn, s_cache = l2_normalize_forward(S, COSINE_EPS)      # (n_crops, m, p)
    Tn, _ = l2_normalize_forward(T, COSINE_EPS)            # (2, m, p)
    n_terms = 2 * n_crops - 2
    # a student crop s meets teacher views {0, 1} minus itself: (T_0 + T_1 - T_s [s < 2])
    partner = xp.broadcast_to(Tn.sum(axis=0), Sn.shape).copy()   # (n_crops, m, p)
    partner[:2] -= Tn
    compression = (Sn * partner).sum() / (m * n_terms)

    # expansion: gamma * mean over the two global views of the coding rate
    Z = S[:2] if expansion == "student" else (S[:2] + T) / 2     # (2, m, p)
    try:
        R, r_cache = coding_rate_forward(Z, math.sqrt(eps))       # (2,)
    except ValueError as err:
        raise ValueError(f"simdino_loss: eps = {eps!r} (epsilon^2; the coding rate's epsilon "
                         f"is sqrt(eps) = {math.sqrt(eps):.4g}): {err}") from err
    gamma = (p + m) / (p * m)
    expa = gamma * R.mean()
    loss = -coeff * compression - expa

    dS = l2_normalize_backward(partner * (-coeff / (m * n_terms)), s_cache)   # (n_crops, m, p)
    dZ = coding_rate_backward(xp.full((2,), -gamma / 2, dtype=R.dtype), r_cache)
    dS[:2] += dZ if expansion == "student" else dZ / 2
    dstudent = dS.reshape(student.shape).astype(student.dtype, copy=False)
    if terms:
        return loss, dstudent, {"compression": compression, "expansion": expa}
    return loss, dstudent


def teacher_temperatures(warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs,
                         n_epochs):
    """DINO's teacher temperature per epoch: linear from warmup to teacher_temp over the
    warm-up epochs (np.linspace, both ends included), then constant. Returns (n_epochs,)."""
    return np.concatenate([np.linspace(warmup_teacher_temp, teacher_temp,
                                       warmup_teacher_temp_epochs),
                           np.full(n_epochs - warmup_teacher_temp_epochs, teacher_temp)])


class DINOLoss:
    """DINO's loss with its centre, a running mean of the teacher's outputs.

        q_t = softmax((teacher_t - center) / temp[epoch])          teacher global crop t
        loss = 1/P sum_{t in {0,1}} sum_{v != t} mean_i sum_k -q_{t,ik} log softmax(s_v / tau_s)_ik
        center <- mu center + (1 - mu) mean_rows(teacher)           after each call

    P = 2 n_crops - 2 the number of pairs. The gradient with respect to the
    student's crop v (teacher constant) is, since each q row sums to one,

        dloss/ds_v = 1/(P m tau_s) sum_{t != v} (softmax(s_v / tau_s) - q_t).

    ``center`` is a (1, out_dim) array on the backend of the last call's
    teacher; ``state_dict()`` / ``load_state_dict()`` carry it in checkpoints.
    """

    def __init__(self, out_dim, n_crops, warmup_teacher_temp, teacher_temp,
                 warmup_teacher_temp_epochs, n_epochs, student_temp=0.1,
                 center_momentum=0.9, dtype="float32"):
        self.out_dim = check_positive_int("out_dim", out_dim)
        self.n_crops = check_positive_int("n_crops", n_crops)
        if self.n_crops < 2:
            raise ValueError(f"n_crops must count the 2 global crops and any local ones (>= 2),"
                             f" got {n_crops}")
        warmup_teacher_temp = check_real("warmup_teacher_temp", warmup_teacher_temp, 0.0,
                                         low_open=True)
        teacher_temp = check_real("teacher_temp", teacher_temp, 0.0, low_open=True)
        self.n_epochs = check_positive_int("n_epochs", n_epochs)
        if (not is_int(warmup_teacher_temp_epochs)
                or not 0 <= warmup_teacher_temp_epochs <= self.n_epochs):
            raise ValueError(f"warmup_teacher_temp_epochs must be an integer in [0, n_epochs = "
                             f"{self.n_epochs}], got {warmup_teacher_temp_epochs!r}")
        self.student_temp = check_real("student_temp", student_temp, 0.0, low_open=True)
        self.center_momentum = check_real("center_momentum", center_momentum, 0.0, 1.0)
        self.teacher_temp_schedule = teacher_temperatures(
            warmup_teacher_temp, teacher_temp, int(warmup_teacher_temp_epochs), self.n_epochs)
        self.center = np.zeros((1, self.out_dim), dtype=np.dtype(dtype))

    def __call__(self, student, teacher, epoch):
        """Inputs: student (n_crops m, out_dim), teacher (2 m, out_dim); epoch in [0, n_epochs).
        Returns: loss (0-d array), dstudent (n_crops m, out_dim). Updates ``center``."""
        xp, m = _check_views(student, teacher, self.n_crops)
        if student.shape[1] != self.out_dim:
            raise ValueError(f"student must have out_dim = {self.out_dim} columns, got shape "
                             f"{tuple(student.shape)}")
        if not is_int(epoch) or not 0 <= epoch < self.n_epochs:
            raise ValueError(f"epoch must be an integer in [0, n_epochs = {self.n_epochs}), "
                             f"got {epoch!r}")
        if get_array_module(self.center) is not xp:
            self.center = to_device(self.center, backend_name(teacher))
        temp = float(self.teacher_temp_schedule[epoch])
        K = self.out_dim
        q = teacher - self.center.astype(teacher.dtype, copy=False)
        q = xp.exp((q - q.max(axis=-1, keepdims=True)) / temp)
        q = (q / q.sum(axis=-1, keepdims=True)).reshape(2, m, K)          # (2, m, K)
        s = student.reshape(self.n_crops, m, K) / self.student_temp         # (n_crops, m, K)
        s = s - s.max(axis=-1, keepdims=True)
        logz = xp.log(xp.exp(s).sum(axis=-1, keepdims=True))
        logp = s - logz                                                     # (n_crops, m, K)
        n_pairs = 2 * self.n_crops - 2
        # each student crop v meets the teacher crops t != v: their q summed
        partner = xp.broadcast_to(q.sum(axis=0), logp.shape).copy()        # (n_crops, m, K)
        partner[:2] -= q
        loss = -(partner * logp).sum() / (m * n_pairs)
        meets = xp.full((self.n_crops, 1, 1), 2.0, dtype=student.dtype)
        meets[:2] = 1.0
        dstudent = (meets * xp.exp(logp) - partner) / (m * n_pairs * self.student_temp)
        self.update_center(teacher)
        return loss, dstudent.reshape(student.shape).astype(student.dtype, copy=False)

    def update_center(self, teacher):
        """center <- mu center + (1 - mu) mean over the rows of teacher."""
        batch_center = teacher.sum(axis=0, keepdims=True) / teacher.shape[0]
        mu = self.center_momentum
        self.center = (self.center * mu + batch_center * (1 - mu)).astype(self.center.dtype,
                                                                          copy=False)

    def state_dict(self):
        return {"center": self.center}

    def load_state_dict(self, state):
        center = state["center"]
        if tuple(center.shape) != (1, self.out_dim):
            raise ValueError(f"load_state_dict: center has shape {tuple(center.shape)}, "
                             f"expected {(1, self.out_dim)}")
        self.center = center.astype(self.center.dtype).copy()
