"""What every tutorial notebook shares: where figures go, and how an exercise is graded.

Import it before ``matplotlib.pyplot``:

    from whitebox.notebook import FAST, OUT, check, save
    import matplotlib.pyplot as plt

- In Jupyter/IPython figures show inline; run as a script, matplotlib uses
  its Agg backend and figures only go to files (``IN_NOTEBOOK`` says which).
- ``OUT``: the folder figures are written to (``WHITEBOX_OUT``, default
  ``outputs/tutorials`` relative to where you run).
- ``FAST``: ``WHITEBOX_FAST=1`` asks for smaller data and fewer steps (the
  test suite runs every tutorial that way).
- ``check(name, got, want, tol)``: the grade of one exercise. It fails naming
  the check and by how much, so a stripped copy of a tutorial still tells a
  student what is wrong.
"""
import os
import pathlib

import matplotlib
import numpy as np

from .gradcheck import rel_error

try:                                      # in Jupyter/IPython figures show inline
    from IPython import get_ipython
    IN_NOTEBOOK = get_ipython() is not None
except ImportError:
    IN_NOTEBOOK = False
if not IN_NOTEBOOK:
    matplotlib.use("Agg")                 # as a script, figures only go to files

FAST = os.environ.get("WHITEBOX_FAST", "0") == "1"
OUT = pathlib.Path(os.environ.get("WHITEBOX_OUT", "outputs/tutorials"))
OUT.mkdir(parents=True, exist_ok=True)


def save(fig, name, dpi=120):
    """Write a figure to OUT; a notebook also shows it inline, a script closes it."""
    import matplotlib.pyplot as plt
    fig.savefig(OUT / name, dpi=dpi)
    if IN_NOTEBOOK:
        plt.show()
    else:
        plt.close(fig)
    return OUT / name


def show_file(path):
    """Show a PNG written by a library function inline (a notebook only)."""
    if IN_NOTEBOOK:
        from IPython.display import Image, display
        display(Image(str(path)))


def check(name, got, want, tol=1e-8, floor=1e-8):
    """Grade one result against a reference: fail naming the check and by how much.

    The error is max |got - want| / max(|got| + |want|, floor), entry by entry.
    """
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise AssertionError(f"check '{name}' failed: shape {got.shape}, expected {want.shape}")
    err = rel_error(got, want, floor=floor)
    if not err <= tol:                    # also catches NaN
        raise AssertionError(f"check '{name}' failed: relative error {err:.2e} "
                             f"(tolerance {tol:.0e}); max |got - want| = "
                             f"{np.abs(got - want).max():.2e}")
    print(f"check '{name}': ok (relative error {err:.1e})")
