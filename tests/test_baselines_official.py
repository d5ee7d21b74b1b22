"""The baselines against the libraries they follow, not against a copy: timm's
VisionTransformer, Hugging Face's BertForMaskedLM and GPT2LMHeadModel.

Each test builds the library's model in float64 (its weights perturbed so no bias is
zero and no LayerNorm scale is one), loads its weights into the whitebox model through
whitebox.interop, and holds one cross-entropy step to the library's: logits and loss to
1e-10, and the gradient of every parameter the library has to 1e-10 (relative to its
scale where that exceeds 1). Then the whitebox weights go back the other way, loaded
strictly by the library, and both give the same logits. A test skips where its library
cannot be imported (``pip install -e ".[official]"`` installs timm and transformers).
"""
import numpy as np
import pytest

from whitebox.functional import token_cross_entropy
from whitebox.interop import export_safetensors, load_official, official_state
from whitebox.losses import cross_entropy
from whitebox.models import BERT, GPT, ViT
from whitebox.models.gpt import CONV1D_WEIGHTS, hf_gpt2_state

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

TOL = 1e-10


def perturb_(module, seed, scale=0.1):
    """Add scale * N(0, 1) to every parameter (tied ones once), in place."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def torch_state(state):
    """{name: NumPy array} -> {name: float64 torch tensor}."""
    return {k: torch.from_numpy(np.array(v)) for k, v in state.items()}


def assert_close(a, b, what):
    err = float(np.abs(np.asarray(a) - np.asarray(b)).max())
    assert err < TOL, f"{what} differ by {err:.3g}"


def assert_every_gradient(model, library, official=lambda name, g: (name, g)):
    """Every gradient of the library's parameters equals whitebox's.

    official(name, g) gives the library's name and layout of whitebox's gradient ``g``
    of ``name``; tied parameters count once (their gradient is the sum over uses).
    """
    params = dict(library.named_parameters())               # tied aliases dropped
    seen = set()
    for name, g in model.grads().items():
        key, g = official(name, g)
        assert key in params, f"{name}: the library has no parameter {key}"
        ref = params[key].grad.numpy()
        err = float(np.abs(g - ref).max()) / max(1.0, float(np.abs(ref).max()))
        assert err < TOL, f"{name}: gradient differs by {err:.3g}"
        seen.add(key)
    assert seen == set(params), f"gradients whitebox lacks: {sorted(set(params) - seen)}"


def token_step(model, library, inputs, targets, names, official=lambda name, g: (name, g)):
    """One token cross-entropy step (targets -1 ignored) in both; compare everything.
    names: the library's keyword for each input (BertForMaskedLM's second positional
    argument is attention_mask, not token_type_ids)."""
    logits = library(**{k: torch.from_numpy(a) for k, a in zip(names, inputs)}).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                             torch.from_numpy(targets).reshape(-1),
                                             ignore_index=-1)
    loss.backward()
    ours = model(*inputs)
    assert_close(ours, logits.detach().numpy(), "logits")
    our_loss, dlogits = token_cross_entropy(ours, targets)
    model.backward(dlogits)
    assert abs(float(our_loss) - loss.item()) < TOL
    assert_every_gradient(model, library, official)


def test_vit_equals_timms_vision_transformer(rng, tmp_path):
    pytest.importorskip("timm")
    from timm.models.vision_transformer import VisionTransformer
    torch.manual_seed(0)
    library = VisionTransformer(img_size=16, patch_size=4, in_chans=3, num_classes=5,
                                embed_dim=24, depth=2, num_heads=2).double().eval()
    perturb_(library, 1)
    path = tmp_path / "timm_vit.pth"
    torch.save(library.state_dict(), path)
    model = ViT(16, 4, 5, 24, 2, 2, dtype="float64", seed=3)
    load_official(model, path)

    images = rng.standard_normal((3, 3, 16, 16))
    labels = np.array([0, 4, 2])
    logits = library(torch.from_numpy(images))
    loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels))
    loss.backward()
    ours = model(images)
    assert_close(ours, logits.detach().numpy(), "logits")
    our_loss, dlogits = cross_entropy(ours, labels)
    model.backward(dlogits)
    assert abs(float(our_loss) - loss.item()) < TOL
    assert_every_gradient(model, library)

    # back: a fresh timm model takes whitebox's weights strictly
    other = ViT(16, 4, 5, 24, 2, 2, dtype="float64", seed=4)
    back = VisionTransformer(img_size=16, patch_size=4, in_chans=3, num_classes=5,
                             embed_dim=24, depth=2, num_heads=2).double().eval()
    back.load_state_dict(torch_state(official_state(other)), strict=True)
    with torch.no_grad():
        assert_close(other(images), back(torch.from_numpy(images)).numpy(), "logits")


def float64_kwarg(transformers):
    """from_pretrained's dtype keyword: ``dtype`` from transformers 4.56, ``torch_dtype`` before."""
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype" if (major, minor) >= (4, 56) else "torch_dtype": torch.float64}


def bert_config(transformers, pad_token_id):
    return transformers.BertConfig(
        vocab_size=30, hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=40, max_position_embeddings=16, type_vocab_size=2, hidden_act="gelu",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        pad_token_id=pad_token_id)


@pytest.mark.parametrize("pad_token_id", [None, 0])
def test_bert_equals_hugging_faces_bert_for_masked_lm(rng, tmp_path, pad_token_id):
    """GELU: Hugging Face's "gelu" is the exact erf form, as ours. pad_token_id 0 (Hugging
    Face's default): the lookup gives the [PAD] row no gradient, in both; None: no such row."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    torch.manual_seed(0)
    config = bert_config(transformers, pad_token_id)
    library = transformers.BertForMaskedLM(config).double().eval()
    perturb_(library, 1)
    library.save_pretrained(tmp_path / "hf")                 # model.safetensors, ties dropped
    model = BERT(30, 16, 24, 2, 2, 40, dtype="float64", seed=3, pad_token_id=pad_token_id)
    load_official(model, tmp_path / "hf" / "model.safetensors")

    idx = rng.integers(0, 30, size=(3, 9))
    idx[1, 1] = 0                                            # the [PAD] id, when there is one
    token_types = rng.integers(0, 2, size=(3, 9))
    targets = np.where(rng.random((3, 9)) < 0.4, idx, -1)
    targets[0, 0] = idx[0, 0]
    token_step(model, library, (idx, token_types), targets, ("input_ids", "token_type_ids"))

    # back: whitebox's .safetensors (tied aliases included) read by from_pretrained
    other = BERT(30, 16, 24, 2, 2, 40, dtype="float64", seed=4, pad_token_id=pad_token_id)
    config.save_pretrained(tmp_path / "ours")
    export_safetensors(other, tmp_path / "ours" / "model.safetensors")
    back, info = transformers.BertForMaskedLM.from_pretrained(
        tmp_path / "ours", output_loading_info=True, **float64_kwarg(transformers))
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    back.eval()
    with torch.no_grad():
        theirs = back(torch.from_numpy(idx), token_type_ids=torch.from_numpy(token_types))
    assert_close(other(idx, token_types), theirs.logits.numpy(), "logits")
    bare = transformers.BertForMaskedLM(config).double()
    bare.load_state_dict(torch_state(official_state(other)), strict=True)


def gpt2_config(transformers):
    """nanoGPT's MLP uses nn.GELU() (exact erf), and so does whitebox's GPT; Hugging Face's
    GPT-2 default "gelu_new" is the tanh approximation, so the config asks for "gelu"."""
    return transformers.GPT2Config(
        vocab_size=50, n_positions=16, n_embd=24, n_layer=2, n_head=2,
        activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=0, eos_token_id=0)


def hf_gradient(name, g):
    """whitebox's GPT gradient -> GPT2LMHeadModel's name and layout (Conv1D: (in, out))."""
    if any(name.endswith(w) for w in CONV1D_WEIGHTS):
        g = g.T
    return name, g


def test_gpt_equals_hugging_faces_gpt2_lm_head_model(rng, tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    torch.manual_seed(0)
    config = gpt2_config(transformers)
    assert config.activation_function == "gelu"
    library = transformers.GPT2LMHeadModel(config).double().eval()
    perturb_(library, 1)
    library.save_pretrained(tmp_path / "hf")                 # Hugging Face's GPT-2 layout
    model = GPT(50, 16, 24, 2, 2, dtype="float64", seed=3)
    load_official(model, tmp_path / "hf" / "model.safetensors")

    idx = rng.integers(0, 50, size=(3, 16))
    targets = rng.integers(0, 50, size=(3, 16))
    targets[1, :5] = -1
    token_step(model, library, (idx,), targets, ("input_ids",), hf_gradient)

    # back: hf_gpt2_state gives GPT2Model's layout, loaded strictly
    other = GPT(50, 16, 24, 2, 2, dtype="float64", seed=4)
    back = transformers.GPT2LMHeadModel(config).double().eval()
    back.transformer.load_state_dict(
        torch_state(hf_gpt2_state(official_state(other), other.depth)), strict=True)
    with torch.no_grad():
        theirs = back(torch.from_numpy(idx)).logits.numpy()
    assert_close(other(idx), theirs, "logits")
