"""Several steps of DINO training, whitebox against a PyTorch twin in float64.

The one-step finite-difference check (tests/test_ssl_parts.py) cannot see what
happens between steps: the teacher's EMA (its direction and the momentum of each
step), the centre carried from step to step, the teacher temperature by epoch,
the optimizer (AdamW, which parameters decay) and the step count the task's
``train_step`` keeps. Here the task's own ``train_step`` and ``_sync_teacher``
run on a tiny CRATE + DINOHead, and a PyTorch twin written from DINO's
definitions (autograd student, ``torch.no_grad`` teacher moved by
``t <- m t + (1 - m) s`` after each optimizer step, centre EMA of the teacher's
global-crop outputs) takes the same steps on the same crops from the same weights;
losses, centres and every teacher and student parameter must agree at each step.
With the head's batch norm (DINO's use_bn_in_head) both teachers run in training
mode (batch statistics) and keep their own running statistics (DINO's EMA moves
parameters, not buffers).
"""
import copy
import types

import numpy as np
import pytest

from whitebox.data.multicrop import MultiCrop
from whitebox.losses import DINOLoss
from whitebox.models import CRATE
from whitebox.models.class_token_features import CRATEFeatures
from whitebox.nn import DINOHead
from whitebox.optim import AdamW
from whitebox.optim.optimizer import decay_mask
from whitebox.ssl import MultiCropNetwork, cosine_momentum
from whitebox.tasks.ssl import SSL, SSLModel

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

OUT_DIM, N_LOCAL, BATCH, EPOCHS, STEPS = 16, 2, 6, 3, 2


def _whitebox_run(crit_args, momentum, views_per_step, lr, wd, use_bn):
    crate = CRATE(image_size=8, patch_size=2, num_classes=3, dim=8, depth=1, heads=2,
                  dim_head=4, channels=1, dtype="float64", seed=0)
    head = DINOHead(8, OUT_DIM, 12, 6, dtype="float64", seed=1, use_bn=use_bn)
    model = SSLModel(MultiCropNetwork(CRATEFeatures(crate), head), OUT_DIM).train()  # the loop
    task = SSL.__new__(SSL)                     # the task's step without its data
    task.opt = types.SimpleNamespace(ssl_loss="dino")
    task.crit = DINOLoss(OUT_DIM, 2 + N_LOCAL, *crit_args, dtype="float64")
    task.steps, task.momentum = STEPS, momentum
    opt = AdamW(model, lr=lr, weight_decay=wd)
    init = {k: v.copy() for k, v in model.student.state_dict().items()}
    record = []
    for views in views_per_step:
        model.zero_grad()
        loss, _ = task.train_step(model, views)
        opt.step()
        task._sync_teacher(model)               # the EMA owed for this step, as the next one does
        record.append(dict(loss=float(loss), center=model.param("center").copy(),
                           teacher={k: v.copy() for k, v in model.teacher.state_dict().items()},
                           student={k: v.copy() for k, v in model.student.state_dict().items()}))
    return init, decay_mask(model.student), record


class _TorchStudent(torch.nn.Module):
    """CRATE's class-token features (position table resampled bilinearly for other sizes)
    and DINO's head, from the whitebox weights named as in whitebox's state dict."""

    def __init__(self, state, use_bn):
        super().__init__()
        from whitebox.torch_twins.crate import TorchCRATE
        from torch_ssl import DINOHeadTorch
        self.crate = TorchCRATE(image_size=8, patch_size=2, num_classes=3, dim=8, depth=1,
                                heads=2, dim_head=4, channels=1).double()
        self.head = DINOHeadTorch(8, OUT_DIM, 12, 6, use_bn=use_bn)
        self.crate.load_state_dict({k[len("backbone.crate."):]: torch.from_numpy(v.copy())
                                    for k, v in state.items()
                                    if k.startswith("backbone.crate.")})
        self.head.load_state_dict({k[len("head."):].replace("weight_g", "parametrizations."
                                                            "weight.original0")
                                   .replace("weight_v", "parametrizations.weight.original1"):
                                   torch.from_numpy(v.copy())
                                   for k, v in state.items() if k.startswith("head.")},
                                  strict=False)

    def features(self, img):
        c = self.crate
        x = c.to_patch_embedding(c.patchify(img))
        B, n, d = x.shape
        gh, gw = img.shape[2] // 2, img.shape[3] // 2
        table = c.pos_embedding
        grid = table[:, 1:].reshape(1, 4, 4, d).permute(0, 3, 1, 2)
        if (gh, gw) != (4, 4):
            grid = torch.nn.functional.interpolate(grid, size=(gh, gw), mode="bilinear",
                                                   align_corners=False)
        pos = torch.cat([table[:, :1], grid.permute(0, 2, 3, 1).reshape(1, gh * gw, d)], 1)
        x = torch.cat([c.cls_token.expand(B, 1, d), x], dim=1) + pos
        x = c.transformer(x)
        return c.mlp_head[0](x[:, 0])

    def forward(self, views):
        feats = [self.features(torch.cat(views[:2])), self.features(torch.cat(views[2:]))]
        return self.head(torch.cat(feats))

    def named_state(self, buffers=True):
        """name -> tensor, keyed as whitebox names the student's parameters (and, with
        ``buffers``, the batch norms' running statistics)."""
        out = {f"backbone.crate.{k}": v for k, v in self.crate.named_parameters()}
        for k, v in self.head.mlp.named_parameters():
            out[f"head.mlp.{k}"] = v
        if buffers:
            for k, v in self.head.mlp.named_buffers():
                if not k.endswith("num_batches_tracked"):
                    out[f"head.mlp.{k}"] = v
        w = self.head.last_layer.parametrizations.weight
        out["head.last_layer.weight_g"], out["head.last_layer.weight_v"] = w.original0, w.original1
        return out


def _torch_run(init, decays, crit_args, momentum, views_per_step, lr, wd, use_bn):
    from torch_ssl import DINOLossTorch
    student = _TorchStudent(init, use_bn)
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    named = student.named_state(buffers=False)
    trainable = {k: v for k, v in named.items() if v.requires_grad}
    groups = [{"params": [v for k, v in trainable.items() if decays[k]], "weight_decay": wd},
              {"params": [v for k, v in trainable.items() if not decays[k]],
               "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr)
    crit = DINOLossTorch(OUT_DIM, 2 + N_LOCAL, *crit_args)
    record = []
    for it, views in enumerate(views_per_step):
        tv = [torch.from_numpy(v) for v in views]
        epoch = it // STEPS
        with torch.no_grad():
            t_out = teacher.head(teacher.features(torch.cat(tv[:2])))
        loss = crit(student(tv), t_out, epoch)
        opt.zero_grad()
        loss.backward()
        for v in trainable.values():     # the classifier's unused Linear: whitebox holds a zero
            if v.grad is None:           # gradient (and decays it), torch would skip it
                v.grad = torch.zeros_like(v)
        opt.step()
        with torch.no_grad():                    # the EMA after the optimizer step
            m = float(momentum[it])
            for ps, pt in zip(student.named_state(False).values(),
                              teacher.named_state(False).values()):
                pt.mul_(m).add_((1 - m) * ps.detach())
        record.append(dict(loss=float(loss.detach()), center=crit.center.numpy().copy(),
                           teacher={k: v.detach().numpy().copy()
                                    for k, v in teacher.named_state().items()},
                           student={k: v.detach().numpy().copy()
                                    for k, v in student.named_state().items()}))
    return record


@pytest.mark.parametrize("use_bn", [False, True])
def test_dino_training_steps_match_a_torch_twin(rng, use_bn):
    # a warm-up of the teacher temperature over 2 of 3 epochs, a momentum far from 1 so
    # the teacher visibly moves, and a large step so that every mistake shows
    crit_args = (0.04, 0.07, 2, EPOCHS)
    momentum = cosine_momentum(0.8, EPOCHS, STEPS)
    crops = MultiCrop(8, 4, N_LOCAL, global_scale=(0.5, 1.0), local_scale=(0.2, 0.5),
                      flip=False)
    images = rng.random((BATCH, 1, 8, 8))
    views_per_step = [crops(images, rng) for _ in range(EPOCHS * STEPS)]
    lr, wd = 1e-2, 0.04
    init, decays, ours = _whitebox_run(crit_args, momentum, views_per_step, lr, wd, use_bn)
    theirs = _torch_run(init, decays, crit_args, momentum, views_per_step, lr, wd, use_bn)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-10, err_msg=f"step {step}")
        np.testing.assert_allclose(a["center"], b["center"], rtol=1e-9, atol=1e-12,
                                   err_msg=f"centre, step {step}")
        # a shift of every row before a batch norm changes nothing: the gradient of these
        # biases is 0 in exact arithmetic, and Adam turns the round-off left there into steps
        # of ~1e-7 that differ between the two (and so do the running means they shift)
        null = ({"head.mlp.0.bias", "head.mlp.3.bias", "backbone.crate.mlp_head.0.bias"}
                if use_bn else set())
        for which in ("student", "teacher"):
            assert a[which].keys() == b[which].keys()
            for k in sorted(set(a[which]) - null):
                np.testing.assert_allclose(a[which][k], b[which][k], rtol=1e-8,
                                           atol=1e-6 if "running_mean" in k else 1e-10,
                                           err_msg=f"{which} {k}, step {step}")
    # the run did something: the teacher moved and lags behind the student
    last = ours[-1]
    moved = {k: np.abs(last["teacher"][k] - init[k]).max() for k in init}
    unused = ("head.last_layer.weight_g", "backbone.crate.mlp_head.1.bias")  # frozen; no grad
    assert any("running_var" in k for k in init) is use_bn
    assert min(v for k, v in moved.items() if k not in unused) > 0
    lag = max(np.abs(last["teacher"][k] - last["student"][k]).max() for k in init)
    assert lag > 1e-4
