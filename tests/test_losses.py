"""lit_ssl.losses against hand-computed values and straightforward paper re-implementations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lit_ssl import losses
from lit_ssl.step_output import step_output

# ----------------------------------------------------------------- independent references


def ref_nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:
    """SimCLR Eq. 1 with explicit loops: 2N anchors, each against its pair and 2N - 2 others."""
    z = torch.cat([z1, z2]).double()
    n2 = z.shape[0]
    n = n2 // 2
    total = z.new_zeros(())
    for i in range(n2):
        j = (i + n) % n2
        sims = [F.cosine_similarity(z[i], z[k], dim=0) / t for k in range(n2)]
        denom = sum(torch.exp(sims[k]) for k in range(n2) if k != i)
        total = total - torch.log(torch.exp(sims[j]) / denom)
    return total / n2


def ref_vicreg(z_a, z_b, lam=25.0, mu=25.0, nu=1.0):
    """Bardes et al. 2022, Algorithm 1 (variance terms of both branches summed)."""
    z_a, z_b = z_a.double(), z_b.double()
    n, d = z_a.shape
    sim_loss = F.mse_loss(z_a, z_b)
    std_a = torch.sqrt(z_a.var(dim=0) + 1e-4)
    std_b = torch.sqrt(z_b.var(dim=0) + 1e-4)
    std_loss = torch.mean(F.relu(1 - std_a)) + torch.mean(F.relu(1 - std_b))
    z_a = z_a - z_a.mean(dim=0)
    z_b = z_b - z_b.mean(dim=0)
    cov_a = (z_a.T @ z_a) / (n - 1)
    cov_b = (z_b.T @ z_b) / (n - 1)
    off = ~torch.eye(d, dtype=torch.bool)
    cov_loss = cov_a[off].pow(2).sum() / d + cov_b[off].pow(2).sum() / d
    return lam * sim_loss + mu * std_loss + nu * cov_loss


def ref_barlow(z_a, z_b, lambd=5e-3):
    """Zbontar et al. 2021, Algorithm 1 (unbiased std as torch's default in the pseudo-code)."""
    z_a, z_b = z_a.double(), z_b.double()
    n, d = z_a.shape
    z_a_norm = (z_a - z_a.mean(0)) / z_a.std(0)
    z_b_norm = (z_b - z_b.mean(0)) / z_b.std(0)
    c = z_a_norm.T @ z_b_norm / n
    c_diff = (c - torch.eye(d, dtype=c.dtype)).pow(2)
    off = ~torch.eye(d, dtype=torch.bool)
    c_diff[off] *= lambd
    return c_diff.sum()


def ref_vicreg_released(x, y, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0):
    """VICReg.forward of facebookresearch/vicreg main_vicreg.py (one GPU), in float64."""
    x, y = x.double(), y.double()
    batch_size, num_features = x.shape
    repr_loss = F.mse_loss(x, y)
    x, y = x - x.mean(dim=0), y - y.mean(dim=0)
    std_x, std_y = torch.sqrt(x.var(dim=0) + 0.0001), torch.sqrt(y.var(dim=0) + 0.0001)
    std_loss = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2
    cov_x, cov_y = (x.T @ x) / (batch_size - 1), (y.T @ y) / (batch_size - 1)
    off = ~torch.eye(num_features, dtype=torch.bool)
    cov_loss = cov_x[off].pow(2).sum() / num_features + cov_y[off].pow(2).sum() / num_features
    return sim_coeff * repr_loss + std_coeff * std_loss + cov_coeff * cov_loss


def ref_barlow_released(z1, z2, lambd=5e-3):
    """BarlowTwins.forward of facebookresearch/barlowtwins main.py: BatchNorm1d(affine=False)
    in training mode (biased variance, eps 1e-5), ``c / batch_size`` (one GPU)."""
    bn = torch.nn.BatchNorm1d(z1.shape[1], affine=False).double().train()
    c = bn(z1.double()).T @ bn(z2.double()) / z1.shape[0]
    on_diag = torch.diagonal(c).add(-1).pow(2).sum()
    off = ~torch.eye(c.shape[0], dtype=torch.bool)
    return on_diag + lambd * c[off].pow(2).sum()


# ----------------------------------------------------------------- info_nce


@pytest.mark.parametrize("t", [0.1, 0.5, 1.0])
def test_info_nce_aligned_pairs_by_hand(t):
    # Positives have cos 1, all 2N - 2 = 2 negatives cos 0 -> log(1 + 2 exp(-1/t)).
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = math.log(1 + 2 * math.exp(-1 / t))
    assert losses.info_nce(z, z.clone(), temperature=t).item() == pytest.approx(
        expected, rel=1e-5, abs=1e-7
    )


def test_info_nce_swapped_pairs_by_hand():
    # Each positive has cos 0; one negative (the other view of the other sample) has cos 1.
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[0.0, 3.0], [2.0, 0.0]])  # scale must not matter (cosine)
    t = 0.5
    expected = math.log(2 + math.exp(1 / t))
    assert losses.info_nce(z1, z2, temperature=t).item() == pytest.approx(
        expected, rel=1e-5, abs=1e-7
    )


@pytest.mark.parametrize("t", [0.07, 0.2, 1.0])
def test_info_nce_matches_reference_values_and_gradients(t):
    z1 = torch.randn(4, 3, dtype=torch.float32, requires_grad=True)
    z2 = torch.randn(4, 3, dtype=torch.float32, requires_grad=True)
    loss = losses.info_nce(z1, z2, temperature=t)
    ref = ref_nt_xent(z1, z2, t)
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-6)
    g = torch.autograd.grad(loss, (z1, z2))
    g_ref = torch.autograd.grad(ref, (z1, z2))
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-4, atol=1e-6)


def test_info_nce_is_symmetric_in_views():
    z1, z2 = torch.randn(5, 4), torch.randn(5, 4)
    torch.testing.assert_close(losses.info_nce(z1, z2), losses.info_nce(z2, z1))


# ----------------------------------------------------------------- negative_cosine


def test_negative_cosine_by_hand():
    p = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    z = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    expected = -(1.0 + 1 / math.sqrt(2) - 1.0) / 3
    assert losses.negative_cosine(p, z).item() == pytest.approx(expected, rel=1e-6)


def test_negative_cosine_no_hidden_stop_gradient():
    p = torch.randn(3, 4, requires_grad=True)
    z = torch.randn(3, 4, requires_grad=True)
    losses.negative_cosine(p, z).backward()
    assert p.grad is not None and z.grad is not None
    assert p.grad.abs().sum() > 0 and z.grad.abs().sum() > 0


def test_byol_is_the_normalised_mse_of_grill_et_al():
    p, z = torch.randn(5, 4), torch.randn(5, 4)
    expected = (F.normalize(p, dim=1) - F.normalize(z, dim=1)).pow(2).sum(1).mean()
    torch.testing.assert_close(losses.byol(p, z), expected)


# ----------------------------------------------------------------- vicreg


def test_vicreg_by_hand():
    # z1 = [[0,0],[2,2]]: var 2 per dim (no hinge), cov [[2,2],[2,2]] -> off^2 sum 8 / d=2 = 4.
    # z2 = [[0,0],[2,0]]: var (2, 0) -> hinge (0, 1 - sqrt(1e-4)) mean 0.495; cov off 0.
    # invariance: mse over 4 elements of diff [[0,0],[0,2]] = 1.
    z1 = torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    z2 = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    terms = losses.vicreg_terms(z1, z2)
    assert terms["invariance"].item() == pytest.approx(1.0)
    assert terms["variance"].item() == pytest.approx(0.495, rel=1e-5)
    assert terms["covariance"].item() == pytest.approx(4.0, rel=1e-6)
    expected = 25 * 1.0 + 25 * 0.495 + 1 * 4.0
    assert losses.vicreg(z1, z2).item() == pytest.approx(expected, rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("weights", [(25.0, 25.0, 1.0), (1.0, 2.0, 3.0)])
def test_vicreg_matches_algorithm_1(weights):
    z1 = torch.randn(6, 4, requires_grad=True)
    z2 = (0.3 * torch.randn(6, 4)).requires_grad_(True)  # some dims under the std hinge
    loss = losses.vicreg(z1, z2, *weights)
    ref = ref_vicreg(z1, z2, *weights)
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-6)
    g = torch.autograd.grad(loss, (z1, z2))
    g_ref = torch.autograd.grad(ref, (z1, z2))
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-4, atol=1e-6)


def test_vicreg_default_weights_are_25_25_1():
    z1, z2 = torch.randn(8, 3), torch.randn(8, 3)
    t = losses.vicreg_terms(z1, z2)
    expected = 25 * t["invariance"] + 25 * t["variance"] + t["covariance"]
    torch.testing.assert_close(losses.vicreg(z1, z2), expected)


# ----------------------------------------------------------------- barlow twins


def test_barlow_twins_by_hand():
    # Standardised (unbiased std, N=2): z1 -> dims (-a, a), (-a, a); z2 -> (-a, a), (a, -a),
    # a = 1/sqrt(2). C = [[0.5, -0.5], [0.5, -0.5]]: on-diag (0.5^2 + 1.5^2) = 2.5,
    # off-diag 0.25 + 0.25 = 0.5 -> 2.5 + 5e-3 * 0.5.
    z1 = torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    z2 = torch.tensor([[0.0, 2.0], [2.0, 0.0]])
    assert losses.barlow_twins(z1, z2).item() == pytest.approx(2.5 + 5e-3 * 0.5, rel=1e-6)


def test_barlow_twins_identical_views_by_hand():
    # One dim, identical views, N=4: C_00 = (N-1)/N with the unbiased std -> (1/4)^2.
    z = torch.tensor([[1.0], [2.0], [4.0], [7.0]])
    assert losses.barlow_twins(z, z.clone()).item() == pytest.approx(1 / 16, rel=1e-5)


@pytest.mark.parametrize("lambd", [5e-3, 0.5])
def test_barlow_twins_matches_algorithm_1(lambd):
    z1 = torch.randn(6, 4, requires_grad=True)
    z2 = torch.randn(6, 4, requires_grad=True)
    loss = losses.barlow_twins(z1, z2, lambd=lambd)
    ref = ref_barlow(z1, z2, lambd)
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-6)
    g = torch.autograd.grad(loss, (z1, z2))
    g_ref = torch.autograd.grad(ref, (z1, z2))
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-4, atol=1e-6)


def test_barlow_twins_default_lambda():
    z1, z2 = torch.randn(6, 3), torch.randn(6, 3)
    torch.testing.assert_close(losses.barlow_twins(z1, z2), losses.barlow_twins(z1, z2, 5e-3))


# ----------------------------------------------------------------- precision and errors

LOSSES = {
    "info_nce": losses.info_nce,
    "negative_cosine": losses.negative_cosine,
    "vicreg": losses.vicreg,
    "barlow_twins": losses.barlow_twins,
}


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("as_kwargs", [False, True])
def test_float32_under_bf16_autocast(name, as_kwargs):
    fn = LOSSES[name]
    z1 = torch.randn(6, 4).bfloat16().requires_grad_(True)
    z2 = torch.randn(6, 4).bfloat16().requires_grad_(True)
    arg_names = ("p", "z") if name == "negative_cosine" else ("z1", "z2")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = fn(**dict(zip(arg_names, (z1, z2), strict=True))) if as_kwargs else fn(z1, z2)
    assert loss.dtype == torch.float32
    # Same value as float32 math on the (bf16-rounded) inputs.
    torch.testing.assert_close(loss, fn(z1.float(), z2.float()))
    loss.backward()
    assert z1.grad is not None and z1.grad.dtype == torch.bfloat16
    assert torch.isfinite(z1.grad.float()).all()


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize(
    "shapes", [((4, 3), (4, 2)), ((4, 3), (5, 3)), ((4,), (4,)), ((2, 4, 3), (2, 4, 3))]
)
def test_bad_shapes_raise(name, shapes):
    a, b = torch.randn(*shapes[0]), torch.randn(*shapes[1])
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        LOSSES[name](a, b)


@pytest.mark.parametrize("name", ["vicreg", "barlow_twins"])
def test_batch_statistics_need_two_samples(name):
    with pytest.raises(ValueError, match="at least 2 samples"):
        LOSSES[name](torch.randn(1, 3), torch.randn(1, 3))


@pytest.mark.parametrize("t", [0.0, -1.0])
def test_info_nce_rejects_non_positive_temperature(t):
    with pytest.raises(ValueError, match="temperature"):
        losses.info_nce(torch.randn(3, 2), torch.randn(3, 2), temperature=t)


@pytest.mark.parametrize("n, d", [(4, 64), (64, 8)])
def test_gram_shortcut_matches_reference_for_narrow_and_wide_batches(n, d):
    """VICReg/Barlow Twins skip the d x d matrix when the batch is smaller than d."""
    torch.manual_seed(3)
    z1 = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    for ours, ref in ((losses.vicreg, ref_vicreg), (losses.barlow_twins, ref_barlow)):
        a1, a2 = z1.detach().float().requires_grad_(), z2.detach().float().requires_grad_()
        value = ours(a1, a2)
        value.backward()
        expected = ref(z1, z2)
        grads = torch.autograd.grad(expected, (z1, z2))
        assert torch.allclose(value.double(), expected, rtol=1e-5)
        assert torch.allclose(a1.grad.double(), grads[0], rtol=1e-4, atol=1e-7)
        assert torch.allclose(a2.grad.double(), grads[1], rtol=1e-4, atol=1e-7)


# ----------------------------------------------------------------- batches of one in SSLModule


def _statistic_heads():
    from lit_ssl.heads import BarlowTwins, Hybrid, MaskedReconstruction, SimCLR, VICReg

    return {
        "vicreg": lambda: VICReg(hidden_dim=16, out_dim=16),
        "barlow_twins": lambda: BarlowTwins(hidden_dim=16, out_dim=16),
        "simclr": lambda: SimCLR(hidden_dim=16, out_dim=16),
        "hybrid": lambda: Hybrid(
            MaskedReconstruction(mask_patch_size=8), VICReg(hidden_dim=16, out_dim=16)
        ),
    }


def _views(n: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(n, 3, 32, 32, generator=gen) for _ in range(2)]


def _module(name: str):
    from lit_ssl import SSLModule

    torch.manual_seed(0)
    return SSLModule("test_resnet", head=_statistic_heads()[name]())


def _trainer(tmp_path):
    import lightning as L

    return L.Trainer(
        accelerator="cpu",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )


def _loader(n: int, batch_size: int):
    """``n`` samples ``([view1, view2], -1)`` in batches of ``batch_size`` (last one smaller)."""
    from torch.utils.data import DataLoader

    views = _views(n)
    samples = [([views[0][i], views[1][i]], -1) for i in range(n)]
    return DataLoader(samples, batch_size=batch_size)


@pytest.mark.parametrize("name", sorted(_statistic_heads()))
def test_validation_batch_of_one_is_left_out_of_the_loss(tmp_path, name, single_thread):
    module = _module(name)
    assert module.head.min_batch_size == 2
    batches = list(_loader(5, 4))  # 5 images at batch 4: the last batch holds one
    assert [len(labels) for _, labels in batches] == [4, 1]
    with pytest.warns(UserWarning, match="batch of 1 sample.*left out of val/loss"):
        (metrics,) = _trainer(tmp_path).validate(module, _loader(5, 4), verbose=False)
    module.eval()
    with torch.no_grad():
        expected = module.head(module.backbone, batches[0][0]).loss
    assert math.isfinite(metrics["val/loss"])
    assert metrics["val/loss"] == pytest.approx(float(expected), rel=1e-4)  # batch 0 only
    step = step_output(module.validation_step(batches[1], 1))
    assert step.loss is None and step.head_output is None and step.labels.shape == (1,)


@pytest.mark.parametrize("name", ["vicreg", "barlow_twins"])
def test_training_batch_of_one_fails_clearly(tmp_path, name, single_thread):
    with pytest.raises(ValueError, match="at least 2 samples.*drop_last"):
        _trainer(tmp_path).fit(_module(name), _loader(1, 1))


def test_heads_without_batch_statistics_take_a_batch_of_one():
    from lit_ssl.heads import BYOL, Hybrid, LatentPrediction, MaskedReconstruction

    assert BYOL().min_batch_size == 1 and MaskedReconstruction().min_batch_size == 1
    assert Hybrid(MaskedReconstruction(), LatentPrediction()).min_batch_size == 1


# ----------------------------------------------------------------- one definition per loss


def test_docstring_examples():
    import doctest

    from lit_ssl.losses import base, classification, joint_embedding, reconstruction

    results = [doctest.testmod(m) for m in (base, classification, joint_embedding, reconstruction)]
    assert sum(r.attempted for r in results) >= 10 and sum(r.failed for r in results) == 0


def test_heads_compute_their_losses_with_the_loss_functions():
    from lit_ssl.backbone import Backbone
    from lit_ssl.heads import BYOL, BarlowTwins, SimCLR, VICReg

    torch.manual_seed(0)
    z1, z2 = torch.randn(6, 8), torch.randn(6, 8)
    vicreg = VICReg(sim_weight=2.0, var_weight=3.0, cov_weight=4.0)
    loss, terms = vicreg.loss_terms(z1, z2)
    torch.testing.assert_close(loss, losses.vicreg(z1, z2, 2.0, 3.0, 4.0))
    assert set(terms) == {"invariance", "variance", "covariance"}
    torch.testing.assert_close(
        BarlowTwins(lambd=0.1).loss_terms(z1, z2)[0], losses.barlow_twins(z1, z2, 0.1)
    )
    torch.testing.assert_close(
        SimCLR(temperature=0.3).loss_terms(z1, z2)[0], losses.info_nce(z1, z2, 0.3)
    )
    backbone = Backbone("test_resnet", in_chans=1).eval()
    byol = BYOL(hidden_dim=16, out_dim=8)
    byol.build(backbone)
    byol.eval()
    views = [torch.rand(4, 1, 32, 32), torch.rand(4, 1, 32, 32)]
    with torch.no_grad():
        output = byol(backbone, views)
        z = byol.projector(torch.cat([backbone(v) for v in views]))
        p1, p2 = byol.predictor(z).chunk(2)
        t1, t2 = byol.teacher(torch.cat(views)).chunk(2)
    old = 4.0 + 2.0 * (losses.negative_cosine(p1, t2) + losses.negative_cosine(p2, t1))
    torch.testing.assert_close(output.loss, old)


# ----------------------------------------------------------------- released-code conventions
FIXED = torch.tensor([[0.0, 1.0, 0.2], [2.0, -1.0, 0.1], [1.0, 3.0, 0.0], [-1.0, 0.0, 0.3]])
FIXED_2 = torch.tensor([[0.5, 1.0, 0.0], [1.5, -2.0, 0.2], [1.0, 2.0, 0.1], [-2.0, 0.5, 0.2]])


@pytest.mark.parametrize("convention", ["paper", "released"])
def test_vicreg_conventions_match_their_formulas(convention):
    reference = ref_vicreg if convention == "paper" else ref_vicreg_released
    loss = losses.vicreg(FIXED, FIXED_2, 2.0, 3.0, 4.0, convention=convention)
    torch.testing.assert_close(loss.double(), reference(FIXED, FIXED_2, 2.0, 3.0, 4.0))
    paper, released = (losses.vicreg_terms(FIXED, FIXED_2, c) for c in ("paper", "released"))
    assert released["variance"] == pytest.approx(paper["variance"] / 2)  # the one difference
    assert released["variance"] > 0  # the third dimension is under the std hinge


@pytest.mark.parametrize("convention", ["paper", "released"])
def test_barlow_twins_conventions_match_their_formulas(convention):
    reference = ref_barlow if convention == "paper" else ref_barlow_released
    loss = losses.barlow_twins(FIXED, FIXED_2, lambd=0.1, convention=convention)
    torch.testing.assert_close(loss.double(), reference(FIXED, FIXED_2, 0.1))
    other = losses.barlow_twins(
        FIXED, FIXED_2, 0.1, "released" if convention == "paper" else "paper"
    )
    assert not torch.allclose(loss, other)


def test_heads_reach_the_convention_and_refuse_unknown_ones():
    from lit_ssl.heads import BarlowTwins, VICReg
    from lit_ssl.heads.base import describe_head

    loss, _ = VICReg(convention="released").loss_terms(FIXED, FIXED_2)
    torch.testing.assert_close(loss, losses.vicreg(FIXED, FIXED_2, convention="released"))
    loss, _ = BarlowTwins(convention="released").loss_terms(FIXED, FIXED_2)
    torch.testing.assert_close(loss, losses.barlow_twins(FIXED, FIXED_2, convention="released"))
    assert VICReg().convention == BarlowTwins().convention == "paper"  # default numbers kept
    assert describe_head(VICReg(convention="released"))["init_args"]["convention"] == "released"
    for make in (VICReg, BarlowTwins):
        with pytest.raises(ValueError, match="convention"):
            make(convention="code")
    with pytest.raises(ValueError, match="convention"):
        losses.vicreg(FIXED, FIXED_2, convention="Paper")
