import math

import numpy as np
import pytest
import torch
from torch import nn

from widedeep.optim import DNN_LEARNING_RATE, Ftrl, linear_learning_rate


def reference_ftrl(w0, grads, lr, lr_power, accum0, l1, l2):
    """Scalar float64 FTRL, written from TensorFlow's documented formula (linear starts at 0)."""
    w = [float(x) for x in w0]
    accum = [accum0] * len(w)
    linear = [0.0] * len(w)
    for g_vec in grads:
        for i, g in enumerate(g_vec):
            g = float(g)
            accum_new = accum[i] + g * g
            sigma = (accum_new ** (-lr_power) - accum[i] ** (-lr_power)) / lr
            linear[i] += g - sigma * w[i]
            quadratic = accum_new ** (-lr_power) / lr + 2 * l2
            if abs(linear[i]) > l1:
                w[i] = (math.copysign(l1, linear[i]) - linear[i]) / quadratic
            else:
                w[i] = 0.0
            accum[i] = accum_new
    return np.array(w), np.array(accum), np.array(linear)


@pytest.mark.parametrize(
    "lr,lr_power,accum0,l1,l2",
    [
        (0.1, -0.5, 0.1, 0.0, 0.0),
        (0.3, -0.5, 0.1, 0.05, 0.0),
        (0.2, -0.5, 0.5, 0.02, 0.1),
        (0.5, -0.7, 0.1, 0.03, 0.2),
        (0.05, 0.0, 1.0, 0.0, 0.0),
    ],
)
def test_matches_scalar_reference(lr, lr_power, accum0, l1, l2):
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(6, 7)) * 2.0
    grads[2, 3] = 0.0  # a zero-gradient coordinate in the middle of training
    w = torch.zeros(7, dtype=torch.float64, requires_grad=True)
    opt = Ftrl([w], lr=lr, lr_power=lr_power, initial_accumulator_value=accum0, l1=l1, l2=l2)
    for g in grads:
        w.grad = torch.tensor(g)
        opt.step()
    ref_w, ref_accum, ref_linear = reference_ftrl(np.zeros(7), grads, lr, lr_power, accum0, l1, l2)
    np.testing.assert_allclose(w.detach().numpy(), ref_w, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(opt.state[w]["accum"].numpy(), ref_accum, rtol=1e-12)
    np.testing.assert_allclose(opt.state[w]["linear"].numpy(), ref_linear, rtol=1e-12, atol=1e-14)


def test_l1_gives_exact_zeros():
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = Ftrl([w], lr=1.0, l1=1.0)
    w.grad = torch.tensor([0.5, -0.9, 3.0], dtype=torch.float64)
    opt.step()
    # |linear| = |g| (sigma * w = 0 at w = 0): only the third exceeds l1.
    assert w[0].item() == 0.0 and w[1].item() == 0.0
    q = math.sqrt(0.1 + 9.0)
    assert w[2].item() == pytest.approx((1.0 - 3.0) / q, rel=1e-14)


def _embedding_pair(num_rows, dim, seed=0):
    torch.manual_seed(seed)
    a = nn.EmbeddingBag(num_rows, dim, mode="sum", sparse=True)
    b = nn.EmbeddingBag(num_rows, dim, mode="sum", sparse=False)
    b.weight.data.copy_(a.weight.data)
    return a, b


@pytest.mark.parametrize("lr_power", [-0.5, -0.6])
def test_sparse_equals_dense(lr_power):
    a, b = _embedding_pair(50, 3)
    kw = dict(lr=0.1, lr_power=lr_power, l1=0.01, l2=0.05)
    opt_a, opt_b = Ftrl(a.parameters(), **kw), Ftrl(b.parameters(), **kw)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        ids = torch.randint(0, 20, (8, 4), generator=gen)  # rows 20..49 never touched
        target = torch.randn(8, 3, generator=gen)
        for model, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            ((model(ids) - target) ** 2).sum().backward()
            opt.step()
    assert a.weight.grad.is_sparse and not b.weight.grad.is_sparse
    if lr_power == -0.5:
        assert torch.equal(a.weight, b.weight)
        assert torch.equal(opt_a.state[a.weight]["accum"], opt_b.state[b.weight]["accum"])
        assert torch.equal(opt_a.state[a.weight]["linear"], opt_b.state[b.weight]["linear"])
    else:  # pow may round differently on a vectorised and a gathered tensor
        torch.testing.assert_close(a.weight, b.weight, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(
            opt_a.state[a.weight]["linear"], opt_b.state[b.weight]["linear"], rtol=1e-6, atol=1e-6
        )


def test_sparse_touches_only_given_rows():
    torch.manual_seed(0)
    emb = nn.EmbeddingBag(100, 2, mode="sum", sparse=True)
    opt = Ftrl(emb.parameters(), lr=0.2, l1=0.01, l2=0.01)
    # first step creates the state; then record everything.
    emb(torch.tensor([[1, 2]])).sum().backward()
    opt.step()
    w_before = emb.weight.detach().clone()
    accum_before = opt.state[emb.weight]["accum"].clone()
    linear_before = opt.state[emb.weight]["linear"].clone()
    opt.zero_grad()
    touched = torch.tensor([5, 7, 42])
    emb(touched.view(1, -1)).sum().backward()
    opt.step()
    untouched = torch.ones(100, dtype=torch.bool)
    untouched[touched] = False
    assert torch.equal(emb.weight[untouched], w_before[untouched])
    assert torch.equal(opt.state[emb.weight]["accum"][untouched], accum_before[untouched])
    assert torch.equal(opt.state[emb.weight]["linear"][untouched], linear_before[untouched])
    assert not torch.equal(emb.weight[touched], w_before[touched])
    assert torch.equal(opt.state[emb.weight]["accum"][touched], accum_before[touched] + 1.0)


def test_duplicate_sparse_indices_are_summed():
    idx = torch.tensor([[3, 3, 1, 3]])
    vals = torch.tensor([[0.5], [0.25], [-1.0], [1.0]], dtype=torch.float64)
    sparse = torch.sparse_coo_tensor(idx, vals, (6, 1), check_invariants=True)
    assert not sparse.is_coalesced()
    dense = torch.zeros(6, 1, dtype=torch.float64)
    dense[3] = 1.75
    dense[1] = -1.0
    w1 = torch.zeros(6, 1, dtype=torch.float64, requires_grad=True)
    w2 = torch.zeros(6, 1, dtype=torch.float64, requires_grad=True)
    o1, o2 = Ftrl([w1], lr=0.1, l1=0.01), Ftrl([w2], lr=0.1, l1=0.01)
    w1.grad, w2.grad = sparse, dense
    o1.step()
    o2.step()
    assert torch.equal(w1, w2)
    assert o1.state[w1]["accum"][3].item() == pytest.approx(0.1 + 1.75**2)
    ref_w, _, _ = reference_ftrl([0.0], [[1.75]], 0.1, -0.5, 0.1, 0.01, 0.0)
    assert w1[3, 0].item() == pytest.approx(ref_w[0], rel=1e-14)


@pytest.mark.parametrize("l1,l2,lr_power", [(0.0, 0.0, -0.5), (0.3, 0.2, -0.5), (0.1, 0.0, -0.8)])
def test_warm_start_is_a_fixed_point(l1, l2, lr_power):
    w0 = torch.tensor([0.7, -1.3, 0.0, 2.5, -0.01])
    w = nn.Parameter(w0.clone())
    opt = Ftrl([w], lr=0.05, lr_power=lr_power, l1=l1, l2=l2)
    w.grad = torch.zeros_like(w)
    opt.step()
    assert torch.equal(w.detach(), w0)
    # and the closed form of the initial state gives back w0 (up to rounding)
    q0 = 0.1 ** (-lr_power) / 0.05 + 2 * l2
    lin = opt.state[w]["linear"].double()
    closed = torch.where(lin.abs() > l1, (torch.sign(lin) * l1 - lin) / q0, torch.zeros_like(lin))
    torch.testing.assert_close(closed, w0.double(), rtol=1e-6, atol=1e-7)
    # a real gradient on one coordinate moves only that one
    w.grad = torch.tensor([0.0, 0.0, 0.0, 0.4, 0.0])
    opt.step()
    changed = w.detach() != w0
    assert changed.tolist() == [False, False, False, True, False]
    # and it moves it the way the reference does (from its equivalent linear state)
    assert abs(w[3].item()) < 2.5


def test_warm_start_sparse_rows_keep_weights():
    emb = nn.EmbeddingBag(10, 1, mode="sum", sparse=True)
    with torch.no_grad():
        emb.weight.copy_(torch.linspace(-1, 1, 10).view(10, 1))
    w0 = emb.weight.detach().clone()
    opt = Ftrl(emb.parameters(), lr=0.01, l1=0.001)
    emb(torch.tensor([[2, 4]])).sum().backward()
    opt.step()
    others = [i for i in range(10) if i not in (2, 4)]
    assert torch.equal(emb.weight[others], w0[others])
    # touched rows moved a little against the gradient (+1), not reset to zero
    assert (emb.weight[[2, 4]] < w0[[2, 4]]).all()
    assert (emb.weight[[2, 4]] - w0[[2, 4]]).abs().max() < 0.05


def test_state_dict_round_trip():
    torch.manual_seed(0)
    x = torch.randn(30, 4)
    y = torch.randn(30, 1)

    def make():
        torch.manual_seed(1)
        return nn.Linear(4, 1)

    def train(model, opt, steps):
        for _ in range(steps):
            opt.zero_grad()
            ((model(x) - y) ** 2).sum().backward()
            opt.step()

    m1 = make()
    o1 = Ftrl(m1.parameters(), lr=0.1, l1=0.01, l2=0.01)
    train(m1, o1, 3)
    sd = o1.state_dict()
    for s in sd["state"].values():
        assert set(s) == {"accum", "linear"}
        assert all(isinstance(v, torch.Tensor) for v in s.values())
    # safetensors can hold the state
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    flat = {f"{k}.{n}": v for k, s in sd["state"].items() for n, v in s.items()}
    restored = st_load(st_save(flat))
    m2 = make()
    m2.load_state_dict(m1.state_dict())
    o2 = Ftrl(m2.parameters(), lr=0.1, l1=0.01, l2=0.01)
    sd2 = {
        "state": {k: {n: restored[f"{k}.{n}"] for n in s} for k, s in sd["state"].items()},
        "param_groups": sd["param_groups"],
    }
    o2.load_state_dict(sd2)
    train(m1, o1, 4)
    train(m2, o2, 4)
    for p1, p2 in zip(m1.parameters(), m2.parameters(), strict=True):
        assert torch.equal(p1, p2)


def test_logistic_regression_loss_decreases():
    gen = torch.Generator().manual_seed(0)
    n, d = 400, 20
    ids = torch.randint(0, d, (n, 3), generator=gen)
    true_w = torch.randn(d, generator=gen) * 2
    logits = true_w[ids].sum(1)
    y = (torch.rand(n, generator=gen) < torch.sigmoid(logits)).float()
    emb = nn.EmbeddingBag(d, 1, mode="sum", sparse=True)
    nn.init.zeros_(emb.weight)
    opt = Ftrl(emb.parameters(), lr=0.5, l1=0.001)
    loss_fn = nn.BCEWithLogitsLoss()

    def loss():
        return loss_fn(emb(ids).squeeze(1), y)

    start = loss().item()
    assert start == pytest.approx(math.log(2), rel=1e-6)
    for _ in range(30):
        for i in range(0, n, 40):
            opt.zero_grad()
            loss_fn(emb(ids[i : i + 40]).squeeze(1), y[i : i + 40]).backward()
            opt.step()
    assert loss().item() < 0.8 * start


def test_learning_rates():
    assert linear_learning_rate(1) == 0.005
    assert linear_learning_rate(7) == 0.005
    assert linear_learning_rate(10**6) == pytest.approx(0.001)
    assert linear_learning_rate(100_000_000) == pytest.approx(1e-4)
    assert DNN_LEARNING_RATE == 0.001
    with pytest.raises(ValueError):
        linear_learning_rate(0)


def test_bad_hyperparameters():
    p = [nn.Parameter(torch.zeros(2))]
    for kw in (dict(lr=0.0), dict(lr_power=0.5), dict(l1=-1.0), dict(l2=-0.1)):
        with pytest.raises(ValueError):
            Ftrl(p, **kw)


def _train_sparse(emb, opt, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        ids = torch.randint(0, 40, (16, 5), generator=gen)
        opt.zero_grad(set_to_none=True)
        ((emb(ids) - torch.randn(16, emb.weight.shape[1], generator=gen)) ** 2).sum().backward()
        opt.step()


def test_packed_table_equals_separate_tensors(monkeypatch):
    """A large sparse table keeps weight, accum and linear in one table: same numbers."""
    import widedeep.optim as optim

    a, _ = _embedding_pair(60, 2)
    b = nn.EmbeddingBag(60, 2, mode="sum", sparse=True)
    b.weight.data.copy_(a.weight.data)
    kw = dict(lr=0.1, l1=0.01, l2=0.05)
    monkeypatch.setattr(optim, "PACK_MIN_BYTES", 0)  # a is "large"
    opt_a = Ftrl(a.parameters(), **kw)
    _train_sparse(a, opt_a, 4, seed=1)
    monkeypatch.setattr(optim, "PACK_MIN_BYTES", 1 << 60)  # b is not
    opt_b = Ftrl(b.parameters(), **kw)
    _train_sparse(b, opt_b, 4, seed=1)

    assert a.weight.stride() == (6, 1) and b.weight.is_contiguous()  # a really is packed
    assert torch.equal(a.weight, b.weight)
    for key in ("accum", "linear"):
        saved = opt_a.state_dict()["state"][0][key]
        assert saved.shape == a.weight.shape  # checkpoints keep the parameter's shape
        assert torch.equal(saved, opt_b.state[b.weight][key])


def test_packed_table_resumes_from_a_state_dict(monkeypatch):
    """Saving and loading the packed state (contiguous copies) continues exactly."""
    import widedeep.optim as optim

    monkeypatch.setattr(optim, "PACK_MIN_BYTES", 0)
    a, _ = _embedding_pair(60, 2)
    opt_a = Ftrl(a.parameters(), lr=0.1, l1=0.01)
    _train_sparse(a, opt_a, 3, seed=1)
    saved_w = a.weight.detach().clone()
    state = opt_a.state_dict()
    saved = {
        "state": {0: {k: v.contiguous().clone() for k, v in state["state"][0].items()}},
        "param_groups": state["param_groups"],
    }
    _train_sparse(a, opt_a, 3, seed=2)  # the uninterrupted run

    c = nn.EmbeddingBag(60, 2, mode="sum", sparse=True)
    c.weight.data.copy_(saved_w)
    opt_c = Ftrl(c.parameters(), lr=0.1, l1=0.01)
    opt_c.load_state_dict(saved)
    _train_sparse(c, opt_c, 3, seed=2)  # the resumed run: repacks at its first step
    assert c.weight.stride() == (6, 1)
    assert torch.equal(c.weight, a.weight)
    assert torch.equal(opt_c.state[c.weight]["linear"], opt_a.state[a.weight]["linear"])
