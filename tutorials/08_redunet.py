# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]

# %% [markdown]
# # 08. ReduNet: a network constructed, not trained
#
# Before CRATE there was ReduNet (Chan, Yu, You, Qi, Wright and Ma, "ReduNet:
# A White-box Deep Network from the Principle of Maximizing Rate
# Reduction"). It takes the same objective as tutorial 01's labelled rate
# reduction, MCR$^2$,
#
# $$\Delta R(Z) = \underbrace{\tfrac12\log\det\big(I + a Z^\top Z\big)}_{R(Z)}
#   - \underbrace{\sum_j \gamma_j\, \tfrac12\log\det\big(I + a_j Z_j^\top Z_j\big)}_{R^c(Z \mid \text{labels})},
#   \qquad a = \tfrac{d}{N\epsilon^2},\; a_j = \tfrac{d}{N_j\epsilon^2},\; \gamma_j = \tfrac{N_j}{N},$$
#
# and builds a network by *gradient ascent on it*: every layer is one step
# $Z \leftarrow Z + \eta\, \partial \Delta R / \partial Z$, followed by a projection
# back to the sphere. No backpropagation, no loss, no epochs: each layer's
# weights are computed in closed form from the features that reach it.
#
# By the end you will have
#
# 1. written the two kinds of operators a ReduNet layer holds, the expansion
#    $E$ and the per-class compressions $C_j$, from the gradient of tutorial 01,
#    and checked them against `whitebox.rate`;
# 2. written one layer, and built a ReduNet with `whitebox.models.ReduNet`
#    on a mixture of subspaces, watching $\Delta R$ rise layer by layer;
# 3. transformed *new* samples, whose labels the network does not know, with
#    the paper's soft class estimate;
# 4. compared ReduNet's features on MNIST digits with those of a trained CRATE.
#
# Samples are rows, $Z \in \mathbb{R}^{N \times d}$; class $j$ holds the $N_j$ rows $Z_j$.

# %%
import time

from whitebox.notebook import FAST, OUT, check, save   # before pyplot: inline or files
import matplotlib.pyplot as plt
import numpy as np

from whitebox import losses, rate
from whitebox.data import subspace_mixture
from whitebox.data.images import load_dataset
from whitebox.data.loader import BatchLoader, channel_stats, normalize
from whitebox.models import CRATE, ReduNet
from whitebox.models.redunet import (compression_operators, expansion_operator,
                                     rate_reduction_gradient, soft_membership)
from whitebox.optim import AdamW

rng = np.random.default_rng(0)
t_start = time.time()



# %% [markdown]
# ## 1. The operators, from the gradient
#
# Tutorial 01 derived $\partial R / \partial Z = a Z (I + aZ^\top Z)^{-1}$. Name
# the $d \times d$ matrix on the right:
#
# $$\frac{\partial R}{\partial Z} = Z E, \qquad E = a\,(I_d + a Z^\top Z)^{-1}
#   \quad\text{(expansion)}.$$
#
# The class terms are coding rates of the class's rows alone, weighted by
# $\gamma_j$, so their gradient lands only on class $j$'s rows:
#
# $$\frac{\partial R^c}{\partial Z_j} = \gamma_j\, Z_j C_j, \qquad
#   C_j = a_j\,(I_d + a_j Z_j^\top Z_j)^{-1} \quad\text{(compression of class } j).$$
#
# What they do: $E$ is a ridge-regression residual. Along an eigenvector of
# $Z^\top Z$ with eigenvalue $\lambda$ (the sum of the squared coordinates of
# the rows along it, $N$ times their second moment, not a variance: nothing is
# centred), $E$ scales by $a / (1 + a\lambda)$: it
# *amplifies the directions the data does not yet fill*, pushing the whole
# set to expand. $C_j$ does the same for class $j$ alone; subtracting
# $\gamma_j z C_j$ for a member $z$ of class $j$ means moving it *against* the
# directions its class has not yet filled, towards the class's own subspace.
#
# **Your turn.** For the mixture below (3 classes on 3-dimensional subspaces
# of $\mathbb{R}^{16}$, unit rows), compute `E` (a $d \times d$ array), and `C`,
# `gamma` (shapes $(J, d, d)$ and $(J,)$) for the $J = 3$ classes. The checks
# compare $ZE$ with `rate.coding_rate_grad` and the whole ascent direction with
# the gradient `rate.mcr2_loss` returns.

# %%
eps = 0.5
Z, labels, _ = subspace_mixture(240, 16, 3, 3, noise=0.3, rng=0, normalize=True)
N, d = Z.shape
J = 3
### BEGIN SOLUTION
E = d / (N * eps ** 2) * np.linalg.inv(np.eye(d) + d / (N * eps ** 2) * Z.T @ Z)   # (d, d)
C = np.zeros((J, d, d))
gamma = np.zeros(J)
for j in range(J):
    Z_j = Z[labels == j]                                     # (N_j, d)
    a_j = d / (len(Z_j) * eps ** 2)
    C[j] = a_j * np.linalg.inv(np.eye(d) + a_j * Z_j.T @ Z_j)
    gamma[j] = len(Z_j) / N
### END SOLUTION

# %%
check("Z E vs whitebox.rate.coding_rate_grad", Z @ E, rate.coding_rate_grad(Z, eps), tol=1e-10)
direction = Z @ E - np.stack([gamma[j] * z @ C[j] for z, j in zip(Z, labels)])   # (N, d)
mcr2_grad = -rate.mcr2_loss(Z, labels, eps)[1]               # d(R - Rc)/dZ
check("Z E - gamma_j z C_j vs the MCR^2 gradient", direction, mcr2_grad, tol=1e-10,
      floor=1e-3 * np.abs(mcr2_grad).max())
C_lib, gamma_lib = compression_operators(Z, labels, eps, J)
check("C_j vs whitebox.models.redunet.compression_operators", C, C_lib, tol=1e-10)
check("E vs whitebox.models.redunet.expansion_operator", E, expansion_operator(Z, eps),
      tol=1e-10)

# %% [markdown]
# ## 2. One layer, then a whole network
#
# A ReduNet layer takes one ascent step and projects back to the sphere
# (MCR$^2$ compares rates at a fixed scale; tutorial 01 explains why):
#
# $$z \;\mapsto\; \frac{z + \eta\,\big(zE - \sum_j \gamma_j \pi_j(z)\, z C_j\big)}
#   {\big\| z + \eta\,\big(zE - \sum_j \gamma_j \pi_j(z)\, z C_j\big) \big\|},$$
#
# with $\pi_j(z) = 1$ if $z$ belongs to class $j$ and 0 otherwise, while the
# network is being constructed from labelled data. Then the next layer
# computes its own $E$ and $C_j$ from the features this layer produced, and so
# on: the network is *constructed* forward, layer after layer.
#
# **Your turn.** Write one layer on the training features: `Z_next` from `Z`,
# `E`, `C`, `gamma`, `labels` and the step `eta`. The check compares it with the
# library's first layer.

# %%
eta = 0.5
### BEGIN SOLUTION
step = Z @ E - np.stack([gamma[j] * z @ C[j] for z, j in zip(Z, labels)])   # (N, d)
Z_next = Z + eta * step
Z_next /= np.linalg.norm(Z_next, axis=1, keepdims=True)
### END SOLUTION

# %%
one_layer = ReduNet(depth=1, eps=eps, eta=eta)
check("one ReduNet layer vs whitebox.models.ReduNet", Z_next, one_layer.construct(Z, labels),
      tol=1e-10)
print(f"Delta R: {one_layer.history[0]:.4f} -> {one_layer.history[1]:.4f} after one layer")

# %% [markdown]
# Now a deep one. `ReduNet.construct(Z, labels)` builds `depth` such layers,
# keeps each one's $(E, C, \gamma)$, and records $\Delta R$ of the training
# features after every layer in `history`.
#
# ### New samples: the soft class estimate
#
# A new sample has no label, so the layer must guess $\pi_j(z)$. Along a
# direction in which $Z_j^\top Z_j$ has eigenvalue $\lambda$, $C_j$ has eigenvalue
# $a_j / (1 + a_j \lambda)$: it shrinks most the directions class $j$ fills most,
# so a member of class $j$ is changed *least* by $C_j$: the paper estimates
#
# $$\hat\pi_j(z) = \operatorname{softmax}_j\big(-\tau \|z C_j\|\big),$$
#
# with a temperature $\tau$ (`temperature`). `ReduNet.transform(Z_new)` applies
# the stored layers with these estimates: a forward pass, the same operators,
# no labels. We hold out half of a mixture and watch $\Delta R$ of both halves
# (the held-out one measured with its true labels, which the network never saw).

# %%
depth = 12 if FAST else 40
Z_all, y_all, _ = subspace_mixture(600, 32, 4, 4, noise=0.3, rng=1, normalize=True)
Z_train, y_train, Z_test, y_test = Z_all[:300], y_all[:300], Z_all[300:], y_all[300:]
net = ReduNet(depth=depth, eps=eps, eta=eta, temperature=100.0)
net.construct(Z_train, y_train)
test_features = net.transform(Z_test, return_all=True)      # input + every layer
history_test = [net.rate_reduction(f, y_test) for f in test_features]
R_train = []
for features in net.transform(Z_train, labels=y_train, return_all=True):
    R_train.append(float(rate.coding_rate(features, eps)))
R_train = np.array(R_train)
Rc_train = R_train - np.array(net.history)
test_accuracy = float(np.mean(net.predict(Z_test) == y_test))
print(f"Delta R, training features: {net.history[0]:.2f} -> {net.history[-1]:.2f}")
print(f"Delta R, held-out features: {history_test[0]:.2f} -> {history_test[-1]:.2f}")
print(f"held-out class estimates (last layer): {test_accuracy:.1%} correct")

fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
axes[0].plot(net.history, "o-", ms=3, label="training samples (labels used)")
axes[0].plot(history_test, "s--", ms=3, label="held-out samples (soft estimates)")
axes[0].set(xlabel="layer", ylabel="Delta R = R - Rc  [nats]", title="MCR$^2$ rises layer by layer")
axes[0].legend(fontsize=8)
axes[1].plot(R_train, "o-", ms=3, label="R (expand all)")
axes[1].plot(Rc_train, "s-", ms=3, label="Rc (compress each class)")
axes[1].set(xlabel="layer", ylabel="nats", title="The two terms, training samples")
axes[1].legend(fontsize=8)
order = np.argsort(y_test, kind="stable")
shown = axes[2].imshow(np.abs(test_features[-1][order] @ test_features[-1][order].T),
                       cmap="viridis", vmin=0, vmax=1)
axes[2].set_title("|cosine| of held-out features, sorted by class", fontsize=10)
axes[2].set_xticks([])
axes[2].set_yticks([])
fig.colorbar(shown, ax=axes[2], fraction=0.046)
fig.tight_layout()
save(fig, "08_redunet_mixture.png")

# %% [markdown]
# $\Delta R$ rises with every layer on the training features (for a step $\eta$
# small enough, each layer is an ascent step on the sphere), and it rises on
# the held-out features too, where the network had to guess every class. The
# expansion term $R$ grows while the compression term $R^c$ falls, and the
# features of different classes become nearly orthogonal (the block-diagonal
# cosine matrix): each class on its own subspace, at right angles to the others.
#
# ## 3. ReduNet and a trained CRATE on MNIST digits
#
# Same question on real data: 28 x 28 digits, average-pooled to a smaller
# grid and centred, as the ReduNet's input features. Beside them, the features
# of a CRATE trained with cross-entropy (tutorial 04's loop, shortened): the cls
# token after the last layer. Two differences before any number: ReduNet
# *uses the labels to build every layer* and never sees a loss, CRATE learns
# its weights by backpropagation from the loss on the labels. And CRATE's
# objective is sparse rate reduction on *tokens*, inside each image; MCR$^2$
# is on *samples*, across images.
#
# We compare how the two organise the held-out digits: the mean $|\cos|$
# between features of the same class and of different classes (MCR$^2$
# wants the first large and the second near 0), and $\Delta R$ per dimension,
# all on features centred by their mean (a direction every feature shares,
# like the cls token's learned offset, says nothing about the classes).

# %%
(train_x, train_y), (test_x, test_y) = load_dataset("mnist5k", n_test=1000, seed=0)
pool = 4 if FAST else 2                                      # 7 x 7 or 14 x 14 features
n_redu, n_eval = (500, 300) if FAST else (1000, 1000)


def pooled(images):
    """(n, 1, 28, 28) -> (n, (28 / pool)^2) average-pooled pixels, float64."""
    g = 28 // pool
    return images.reshape(len(images), g, pool, g, pool).mean(axis=(2, 4)).reshape(
        len(images), -1).astype(np.float64)


pixel_mean = pooled(train_x[:n_redu]).mean(axis=0)
F_train = pooled(train_x[:n_redu]) - pixel_mean
F_test = pooled(test_x[:n_eval]) - pixel_mean
digits_net = ReduNet(depth=10 if FAST else 30, eps=eps, eta=1.0, temperature=100.0)
digits_net.construct(F_train, train_y[:n_redu])
redu_test = digits_net.transform(F_test)
redu_accuracy = float(np.mean(digits_net.predict(F_test) == test_y[:n_eval]))

# a small CRATE trained with cross-entropy, its cls token after the last layer
mean, std = channel_stats(train_x)
crate = CRATE(image_size=28, patch_size=7, num_classes=10, dim=64, depth=2 if FAST else 4,
              heads=4, dim_head=16, channels=1, seed=0)
optimizer = AdamW(crate, lr=2e-3, weight_decay=0.05)
n_crate = 2000 if FAST else 4000
for epoch in range(2 if FAST else 10):
    crate.train()
    for images, y in BatchLoader(train_x[:n_crate], train_y[:n_crate], 64,
                                 rng=np.random.default_rng(epoch), mean=mean, std=std):
        loss, dlogits = losses.cross_entropy(crate(images), y)
        crate.zero_grad()
        crate.backward(dlogits)
        optimizer.step()
crate.eval()
test_images = normalize(test_x[:n_eval], mean, std)
crate_accuracy = float(np.mean(crate(test_images).argmax(axis=1) == test_y[:n_eval]))
crate.forward(test_images, capture=True)
crate_test = crate.captured["z"][-1][:, 0].astype(np.float64)   # (n, dim) cls token
crate.captured = None


def organisation(features, y):
    """Mean |cos| within classes, between classes, and Delta R / d of centred unit rows."""
    centred = features - features.mean(axis=0)              # a shared offset is no structure
    Zn = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    cos = np.abs(Zn @ Zn.T)
    same = y[:, None] == y[None, :]
    off_diagonal = ~np.eye(len(y), dtype=bool)
    return dict(within=float(cos[same & off_diagonal].mean()), between=float(cos[~same].mean()),
                delta_r_per_dim=-rate.mcr2_loss(Zn, y, eps)[0] / Zn.shape[1], cos=cos)


y_eval = test_y[:n_eval]
compared = {"pixels (ReduNet input)": organisation(F_test, y_eval),
            "ReduNet output": organisation(redu_test, y_eval),
            "trained CRATE, cls token": organisation(crate_test, y_eval)}
print(f"ReduNet: Delta R of the training digits {digits_net.history[0]:.1f} -> "
      f"{digits_net.history[-1]:.1f}; held-out class estimates {redu_accuracy:.1%} correct")
print(f"CRATE held-out accuracy {crate_accuracy:.1%}\n")
print(f"{'held-out features':<26}{'|cos| within':>13}{'|cos| between':>14}{'Delta R / d':>12}")
for name, r in compared.items():
    print(f"{name:<26}{r['within']:13.3f}{r['between']:14.3f}{r['delta_r_per_dim']:12.3f}")

fig, axes = plt.subplots(1, 4, figsize=(16, 4), layout="constrained")
order = np.argsort(y_eval, kind="stable")
for ax, (name, r) in zip(axes[:3], compared.items()):
    shown = ax.imshow(r["cos"][np.ix_(order, order)], cmap="viridis", vmin=0, vmax=1)
    ax.set_title(f"{name}\nwithin {r['within']:.2f}, between {r['between']:.2f}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
fig.colorbar(shown, ax=axes[:3].tolist(), fraction=0.02, label="|cosine|, digits sorted by class")
axes[3].plot(digits_net.history, "o-", ms=3)
axes[3].set(xlabel="layer", ylabel="Delta R  [nats]", title="ReduNet on digits (training)")
save(fig, "08_redunet_vs_crate.png")

# %% [markdown]
# Reading the table (FAST mode trains the CRATE only briefly; the full run
# trains it for 10 epochs): ReduNet does exactly what it is built to do.
# $\Delta R$ rises at every layer, the classes of held-out digits become
# nearly orthogonal (the between-class $|\cos|$ falls: 0.15 to 0.03 in the
# full run) and $\Delta R$ per dimension grows several times over, with class
# estimates that come from nothing but the stored operators. The
# within-class $|\cos|$ falls too: MCR$^2$ wants each class spread over its
# own subspace, not collapsed to a point. The CRATE's cls token, trained
# only to classify, is organised differently: clear blocks (digits of one
# class are much more alike than in pixel space, within-class $|\cos|$ about
# 0.7 in the full run) but classes far from orthogonal, and a $\Delta R$ per
# dimension close to the pixels', far below ReduNet's. Cross-entropy asks
# for classes a linear head can separate, not for orthogonal subspaces, and
# CRATE's own objective compresses tokens within an image, not samples
# across a dataset.
#
# What ReduNet cannot do is learn: its operators are fixed by the
# training features, it needs every class's samples at construction, and
# its width is the input's. CRATE keeps the idea (each layer an optimisation
# step on a rate objective) and makes the operators learnable.
#
# ## Summary
#
# - $\partial \Delta R / \partial Z = ZE - \gamma_j Z_j C_j$ (rows of class $j$),
#   with $E = a(I + aZ^\top Z)^{-1}$ and $C_j = a_j(I + a_j Z_j^\top Z_j)^{-1}$:
#   the coding-rate gradient of tutorial 01, once for all samples and once
#   per class.
# - A ReduNet layer is one ascent step on $\Delta R$ followed by a projection to
#   the sphere; its operators are computed from the features that reach it,
#   so the network is constructed forward, without backpropagation.
# - New samples go through the same layers with a soft class estimate
#   $\operatorname{softmax}_j(-\tau\|zC_j\|)$.
# - `whitebox.models.ReduNet`: `construct(Z, labels)`, `transform(Z)`,
#   `predict(Z)`, `history`.
#
# ## Checks (running this file is its test)

# %%
assert np.all(np.diff(net.history) >= -1e-10), net.history              # never falls
assert net.history[-1] > net.history[0] + 2, net.history
assert history_test[-1] > history_test[0] + 1, history_test              # held out rises too
assert R_train[-1] > R_train[0] and Rc_train[-1] < Rc_train[0]
assert test_accuracy > 0.9, test_accuracy
assert np.all(np.diff(digits_net.history) >= -1e-10), digits_net.history
redu, pixels = compared["ReduNet output"], compared["pixels (ReduNet input)"]
assert redu["between"] < pixels["between"] and redu["delta_r_per_dim"] > pixels["delta_r_per_dim"]
assert redu_accuracy > 0.7, redu_accuracy
assert (OUT / "08_redunet_mixture.png").exists() and (OUT / "08_redunet_vs_crate.png").exists()
print(f"all checks passed in {time.time() - t_start:.1f} s")
