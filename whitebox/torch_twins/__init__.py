"""PyTorch twins of the whitebox models: the references that tests and benchmarks compare to.

Each module builds a ``torch.nn.Module`` with the official state-dict names
that computes what the whitebox model computes, and converts weights both
ways:

    crate.py        TorchCRATE, torch_model_from (the official model/crate.py layout)
    crate_alpha.py  TorchCRATEAlpha, torch_model_from
    crate_mae.py    TorchCRATEMAE, torch_mae_from
    crate_lm.py     TorchCRATEGPT, torch_lm_from

They need PyTorch (``pip install 'whitebox-crate[torch]'``); nothing else in
whitebox imports them. They are test and benchmark references, not part of
the library a course hands out.
"""
