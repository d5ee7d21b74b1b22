"""PyTorch float64 twins of the self-supervised losses and heads, written from their
definitions (SimDINO's MCRLoss, DINO's DINOLoss and DINOHead) for agreement tests.
Importing this module needs torch; tests import it after pytest.importorskip("torch")."""
import numpy as np
import torch
import torch.nn.functional as F


def simdino_loss_torch(student, teacher, n_crops, eps=0.5, coeff=1.0, expansion="mean"):
    """Returns (loss, compression, expansion) as torch scalars; student may require grad."""
    p = student.shape[-1]
    S = student.view(n_crops, -1, p)
    T = teacher.view(2, -1, p)
    m = S.shape[1]
    sim = F.cosine_similarity(T.unsqueeze(1), S.unsqueeze(0), dim=-1)   # (2, n_crops, m)
    keep = torch.ones(2, n_crops, 1, dtype=sim.dtype)
    keep[0, 0] = keep[1, 1] = 0
    comp = (sim * keep).mean(dim=2).sum() / (2 * n_crops - 2)
    Z = S[:2] if expansion == "student" else (S[:2] + T) / 2
    eye = torch.eye(p, dtype=student.dtype)
    expa = 0
    for v in range(2):
        L = torch.linalg.cholesky(eye + p / (m * eps) * Z[v].T @ Z[v])
        expa = expa + L.diagonal().log().sum()
    expa = expa / 2 * (p + m) / (p * m)
    return -coeff * comp - expa, comp, expa


class DINOLossTorch:
    def __init__(self, out_dim, n_crops, warmup_teacher_temp, teacher_temp,
                 warmup_teacher_temp_epochs, n_epochs, student_temp=0.1, center_momentum=0.9):
        self.n_crops, self.student_temp, self.mu = n_crops, student_temp, center_momentum
        self.center = torch.zeros(1, out_dim, dtype=torch.float64)
        self.temps = np.concatenate([
            np.linspace(warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs),
            np.ones(n_epochs - warmup_teacher_temp_epochs) * teacher_temp])

    def __call__(self, student, teacher, epoch):
        s = (student / self.student_temp).chunk(self.n_crops)
        q = F.softmax((teacher - self.center) / self.temps[epoch], dim=-1).detach().chunk(2)
        total, n = 0, 0
        for t in range(2):
            for v in range(self.n_crops):
                if v != t:
                    total = total + (-q[t] * F.log_softmax(s[v], dim=-1)).sum(dim=-1).mean()
                    n += 1
        with torch.no_grad():
            self.center = self.center * self.mu + teacher.mean(dim=0, keepdim=True) * (1 - self.mu)
        return total / n


class DINOHeadTorch(torch.nn.Module):
    """MLP (Linear-GELU-Linear-GELU-Linear; with use_bn a BatchNorm1d after each hidden
    Linear), L2 normalisation, then (prototypes) a weight-normalised bias-free Linear with
    its gain fixed to 1."""

    def __init__(self, in_dim, out_dim, hidden_dim, bottleneck_dim, prototypes=True,
                 use_bn=False):
        super().__init__()

        def hidden(i):
            return [torch.nn.Linear(i, hidden_dim)] + \
                ([torch.nn.BatchNorm1d(hidden_dim)] if use_bn else []) + [torch.nn.GELU()]
        self.mlp = torch.nn.Sequential(*hidden(in_dim), *hidden(hidden_dim),
                                       torch.nn.Linear(hidden_dim, bottleneck_dim)).double()
        self.prototypes = prototypes
        if prototypes:
            self.last_layer = torch.nn.utils.parametrizations.weight_norm(
                torch.nn.Linear(bottleneck_dim, out_dim, bias=False).double())
            self.last_layer.parametrizations.weight.original0.data.fill_(1)
            self.last_layer.parametrizations.weight.original0.requires_grad = False

    def forward(self, x):
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x) if self.prototypes else x
