"""vthcl_lib.contrastive: InfoNCE and NCE against hand formulas, memory banks, the hierarchical objective."""
from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F

from vthcl_lib.config import ContrastConfig
from vthcl_lib.contrastive import (
    LOGGER_NAME,
    HierarchicalContrast,
    MemoryBank,
    NCECriterion,
    info_nce,
    memorise_free_embeddings,
    nce_loss,
    negatives_cost,
)

LEVELS = ("res3", "res4", "res5")


def unit(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


def hand_softmax_ce(q, pos, neg, t, mask=None):
    """-log(exp(q.p/T) / (exp(q.p/T) + sum_j exp(q.n_j/T))), averaged; neg is [B, N, d]; explicit exp/log sums."""
    q, pos, neg = q.double(), pos.double(), neg.double()
    num = torch.exp((q * pos).sum(-1) / t)
    neg_terms = torch.exp((q[:, None, :] * neg).sum(-1) / t)
    if mask is not None:
        neg_terms = neg_terms * (~mask)
    return (-torch.log(num / (num + neg_terms.sum(-1)))).mean()


def hand_nce(q, pos, neg, t, z, n, mask=None):
    """CMC's NCECriterion (eps = 0) on P = exp(s/T)/Z; neg is [B, N, d]."""
    q, pos, neg = q.double(), pos.double(), neg.double()
    k = neg.shape[1]
    pn = 1.0 / n
    p_pos = torch.exp((q * pos).sum(-1) / t) / z
    p_neg = torch.exp((q[:, None, :] * neg).sum(-1) / t) / z
    ln_pos = torch.log(p_pos / (p_pos + k * pn))
    ln_neg = torch.log(k * pn / (p_neg + k * pn))
    if mask is not None:
        ln_neg = ln_neg * (~mask)
    return -(ln_pos.sum() + ln_neg.sum()) / q.shape[0]


def embeddings(batch, dim, seed, levels=LEVELS, grad=False):
    out = {k: unit(batch, dim, seed=seed + i, dtype=torch.float32) for i, k in enumerate(levels)}
    return {k: v.requires_grad_(grad) for k, v in out.items()}


# ----------------------------------------------------------------------------- info_nce


def test_info_nce_shared_matches_hand_formula():
    q, p, neg = unit(6, 8, seed=1), unit(6, 8, seed=2), unit(11, 8, seed=3)
    for t in (0.07, 0.5):
        got = info_nce(q, p, neg, t)
        assert got.ndim == 0
        want = hand_softmax_ce(q, p, neg.expand(6, 11, 8), t)
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def test_info_nce_per_query_matches_hand_formula_and_shared():
    q, p, neg = unit(5, 8, seed=4), unit(5, 8, seed=5), unit(5, 7, 8, seed=6)
    torch.testing.assert_close(info_nce(q, p, neg, 0.1).double(), hand_softmax_ce(q, p, neg, 0.1), rtol=1e-5, atol=1e-6)
    shared = unit(7, 8, seed=7)
    per_query = shared.expand(5, 7, 8).contiguous()
    torch.testing.assert_close(info_nce(q, p, per_query, 0.1), info_nce(q, p, shared, 0.1), rtol=1e-6, atol=1e-7)


def test_info_nce_mask_removes_exactly_the_masked_logits():
    q, p, neg = unit(4, 8, seed=8), unit(4, 8, seed=9), unit(6, 8, seed=10)
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[0, 1] = mask[2, 0] = mask[2, 5] = True
    got = info_nce(q, p, neg, 0.2, negative_mask=mask)
    # per query: the same loss with the masked negatives physically removed
    rows = [info_nce(q[b:b + 1], p[b:b + 1], neg[~mask[b]], 0.2) for b in range(4)]
    torch.testing.assert_close(got, torch.stack(rows).mean(), rtol=1e-6, atol=1e-7)
    want = hand_softmax_ce(q, p, neg.expand(4, 6, 8), 0.2, mask)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    assert not torch.isclose(got, info_nce(q, p, neg, 0.2))  # the mask changed something
    # a masked negative gets no gradient
    negl = neg.clone().requires_grad_(True)
    info_nce(q, p, negl.expand(4, 6, 8), 0.2, negative_mask=torch.ones(4, 6, dtype=torch.bool)).backward()
    assert torch.count_nonzero(negl.grad) == 0


def test_info_nce_float32_under_low_precision_inputs():
    q, p, neg = unit(4, 8, seed=11), unit(4, 8, seed=12), unit(9, 8, seed=13)
    got = info_nce(q.bfloat16(), p.bfloat16(), neg.float(), 0.07)
    assert got.dtype == torch.float32
    want = hand_softmax_ce(q.bfloat16(), p.bfloat16(), neg.expand(4, 9, 8), 0.07)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast would run the matmul in bf16
        under = info_nce(q.float(), p.float(), neg.float(), 0.07)
    assert under.dtype == torch.float32
    torch.testing.assert_close(under.double(), hand_softmax_ce(q, p, neg.expand(4, 9, 8), 0.07), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.zeros(4), torch.zeros(4), torch.zeros(3, 4), 0.1), "query"),
        ((torch.zeros(2, 4), torch.zeros(3, 4), torch.zeros(3, 4), 0.1), "positive"),
        ((torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(3, 5), 0.1), r"negatives.*\(3, 5\)"),
        ((torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(3, 3, 4), 0.1), "negatives"),
        ((torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(3, 4), 0.0), "temperature"),
        ((torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(3, 4), -1), "temperature"),
    ],
)
def test_info_nce_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        info_nce(*args)


def test_info_nce_bad_mask():
    q = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="negative_mask"):
        info_nce(q, q, torch.zeros(3, 4), 0.1, negative_mask=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="negative_mask"):
        info_nce(q, q, torch.zeros(3, 4), 0.1, negative_mask=torch.zeros(2, 3))


# ----------------------------------------------------------------------------- NCE


def test_nce_loss_matches_hand_formula():
    q, p, neg = unit(5, 8, seed=20), unit(5, 8, seed=21), unit(5, 6, 8, seed=22)
    mask = torch.zeros(5, 6, dtype=torch.bool)
    mask[1, 2] = mask[4, 0] = True
    z, n = 3.7e3, 500
    for m in (None, mask):
        got = nce_loss(q, p, neg, 0.1, log_z=math.log(z), num_items=n, negative_mask=m)
        torch.testing.assert_close(got, hand_nce(q, p, neg, 0.1, z, n, m), rtol=1e-9, atol=1e-10)
    shared = unit(6, 8, seed=23)
    torch.testing.assert_close(nce_loss(q, p, shared, 0.1, log_z=math.log(z), num_items=n),
                               hand_nce(q, p, shared.expand(5, 6, 8), 0.1, z, n))
    # log space: a temperature whose exp(s/T) overflows float32 stays finite
    assert torch.isfinite(nce_loss(q.float(), p.float(), shared.float(), 0.005, log_z=150.0, num_items=n))


def test_nce_criterion_sets_z_once_and_freezes_it(caplog):
    n, t = 1000, 0.1
    crit = NCECriterion(n, t)
    assert math.isnan(crit.z)
    f32 = torch.float32
    q, p, neg = unit(4, 8, seed=30, dtype=f32), unit(4, 8, seed=31, dtype=f32), unit(9, 8, seed=32, dtype=f32)
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        first = crit(q, p, neg)
        scores = torch.cat([(q * p).sum(1, keepdim=True), q @ neg.T], 1).double()
        z_hand = torch.exp(scores / t).mean().item() * n
        assert crit.z == pytest.approx(z_hand, rel=1e-5)
        want = hand_nce(q, p, neg.expand(4, 9, 8), t, z_hand, n)
        torch.testing.assert_close(first.double(), want, rtol=1e-5, atol=1e-6)
        q2 = unit(4, 8, seed=33, dtype=torch.float32)
        second = crit(q2, p, neg)
        assert crit.z == pytest.approx(z_hand, rel=1e-5)  # frozen: not re-estimated from batch 2
        want = hand_nce(q2, p, neg.expand(4, 9, 8), t, z_hand, n)
        torch.testing.assert_close(second.double(), want, rtol=1e-5, atol=1e-6)
    records = [r for r in caplog.records if "normalization constant Z set to" in r.getMessage()]
    assert len(records) == 1
    # Z travels in the state_dict: a resumed criterion does not re-estimate it
    resumed = NCECriterion(n, t)
    resumed.load_state_dict(crit.state_dict())
    assert resumed.z == pytest.approx(crit.z)
    torch.testing.assert_close(resumed(q2, p, neg), second)


def test_nce_criterion_z_ignores_masked_scores():
    q, p, neg = unit(3, 8, seed=34), unit(3, 8, seed=35), unit(5, 8, seed=36)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[0, :2] = True
    crit = NCECriterion(100, 0.2)
    crit(q, p, neg, negative_mask=mask)
    scores = torch.cat([(q * p).sum(1, keepdim=True), q @ neg.T], 1)
    keep = torch.cat([torch.ones(3, 1, dtype=torch.bool), ~mask], 1)
    assert crit.z == pytest.approx(torch.exp(scores[keep] / 0.2).mean().item() * 100, rel=1e-5)


# ----------------------------------------------------------------------------- memory bank


def test_bank_cmc_init_range_and_norms():
    d = 64
    bank = MemoryBank(4000, d, generator=torch.Generator().manual_seed(0))
    w = bank.weight
    s = 1 / math.sqrt(d / 3)
    assert w.shape == (4000, d) and w.dtype == torch.float32
    assert w.abs().max() <= s and w.min() < -0.95 * s and w.max() > 0.95 * s
    assert abs(w.mean().item()) < 0.01
    assert w.var().item() == pytest.approx(s * s / 3, rel=0.03)  # = 1/d
    sq = (w * w).sum(1)
    assert sq.mean().item() == pytest.approx(1.0, abs=0.02)  # unit norm in expectation, not normalised
    assert sq.std().item() > 0.05
    same = MemoryBank(4000, d, generator=torch.Generator().manual_seed(0))
    assert torch.equal(same.weight, w)
    assert not torch.equal(MemoryBank(4000, d, generator=torch.Generator().manual_seed(1)).weight, w)


def test_bank_is_a_buffer_in_state_dict():
    bank = MemoryBank(10, 4)
    assert "weight" in bank.state_dict() and not bank.weight.requires_grad
    assert list(bank.parameters()) == []
    other = MemoryBank(10, 4)
    other.load_state_dict(bank.state_dict())
    assert torch.equal(other.weight, bank.weight)
    assert bank.to(torch.float64).weight.dtype == torch.float64  # .to() moves it


def test_bank_update_matches_hand_computation():
    bank = MemoryBank(6, 3, momentum=0.3, generator=torch.Generator().manual_seed(2))
    old = bank.weight.clone()
    z = torch.tensor([[1.0, 2.0, 2.0], [0.0, 3.0, 4.0]])
    bank.update(torch.tensor([4, 1]), z)
    for row, zi in ((4, z[0]), (1, z[1])):
        v = 0.3 * old[row] + 0.7 * zi
        torch.testing.assert_close(bank.weight[row], v / v.norm())
        assert bank.weight[row].norm().item() == pytest.approx(1.0, abs=1e-6)
    untouched = [0, 2, 3, 5]
    assert torch.equal(bank.weight[untouched], old[untouched])
    torch.testing.assert_close(bank.gather(torch.tensor([[4], [1]])), bank.weight[[4, 1]].view(2, 1, 3))


def test_bank_update_repeated_index_takes_the_mean():
    bank = MemoryBank(5, 2, momentum=0.5, generator=torch.Generator().manual_seed(3))
    old = bank.weight.clone()
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.0, -1.0]])
    bank.update(torch.tensor([2, 0, 2, 2]), z)
    mean = (z[0] + z[2] + z[3]) / 3
    v = 0.5 * old[2] + 0.5 * mean
    torch.testing.assert_close(bank.weight[2], v / v.norm())
    v0 = 0.5 * old[0] + 0.5 * z[1]
    torch.testing.assert_close(bank.weight[0], v0 / v0.norm())
    # order of the repeats does not matter
    again = MemoryBank(5, 2, momentum=0.5, generator=torch.Generator().manual_seed(3))
    again.update(torch.tensor([2, 2, 0, 2]), z[[3, 0, 1, 2]])
    torch.testing.assert_close(again.weight, bank.weight)


def test_bank_update_momentum_zero_replaces_and_detaches():
    bank = MemoryBank(4, 2, momentum=0.0)
    z = torch.tensor([[3.0, 4.0]], requires_grad=True)
    bank.update(torch.tensor([1]), z)
    torch.testing.assert_close(bank.weight[1], torch.tensor([0.6, 0.8]))
    assert not bank.weight.requires_grad


def test_sample_negatives_reproducible_shapes_and_cap():
    bank = MemoryBank(50, 4)
    a = bank.sample_negatives(20, generator=torch.Generator().manual_seed(7))
    b = bank.sample_negatives(20, generator=torch.Generator().manual_seed(7))
    c = bank.sample_negatives(20, generator=torch.Generator().manual_seed(8))
    assert a.shape == (20,) and a.dtype == torch.long and torch.equal(a, b) and not torch.equal(a, c)
    per = bank.sample_negatives(20, generator=torch.Generator().manual_seed(7), batch_size=3)
    assert per.shape == (3, 20) and per.min() >= 0 and per.max() < 50
    assert bank.sample_negatives(1000, generator=None).shape == (49,)  # capped at n - 1
    big = bank.sample_negatives(49, generator=torch.Generator().manual_seed(0), batch_size=200)
    assert set(big.unique().tolist()) == set(range(50))  # uniform over the whole bank


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_items=0, dim=4), "num_items"),
        (dict(num_items=5, dim=0), "dim"),
        (dict(num_items=5, dim=4, momentum=1.0), "momentum"),
        (dict(num_items=5, dim=4, momentum=-0.1), "momentum"),
        (dict(num_items=5, dim=4, generator=3), "generator"),
    ],
)
def test_bank_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MemoryBank(**kwargs)


def test_bank_bad_call_arguments():
    bank = MemoryBank(5, 3)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 5\)"):
        bank.update(torch.tensor([5]), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="indices"):
        bank.update(torch.tensor([-1]), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="indices"):
        bank.update(torch.tensor([1.0]), torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"z must have shape \(2, 3\)"):
        bank.update(torch.tensor([0, 1]), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="indices"):
        bank.gather(torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="num"):
        bank.sample_negatives(0, generator=None)
    with pytest.raises(ValueError, match="batch_size"):
        bank.sample_negatives(2, generator=None, batch_size=0)
    with pytest.raises(ValueError, match="at least 2"):
        MemoryBank(1, 3).sample_negatives(2, generator=None)


# ----------------------------------------------------------------------------- hierarchical objective


def make_hc(**kwargs):
    args = dict(num_items=40, levels=LEVELS, dim=8, temperature=0.1, num_negatives=12,
                generator=torch.Generator().manual_seed(0))
    args.update(kwargs)
    return HierarchicalContrast(args.pop("num_items"), args.pop("levels"), args.pop("dim"), **args)


def hand_total(hc, zs, zf, idx, neg, weights, positives="bank"):
    """sum_k lambda^k (L_s^k + L_f^k) with info_nce, own index masked."""
    mask = (neg[None, :] if neg.ndim == 1 else neg) == idx[:, None]
    total = 0.0
    for k in hc.levels:
        bs, bf = hc.banks[f"{k}_slow"].weight, hc.banks[f"{k}_fast"].weight
        pos_s = bf[idx] if positives == "bank" else zf[k]
        pos_f = bs[idx] if positives == "bank" else zs[k]
        ls = info_nce(zs[k], pos_s, bf[neg], hc.temperature, negative_mask=mask)
        lf = info_nce(zf[k], pos_f, bs[neg], hc.temperature, negative_mask=mask)
        total = total + weights[k] * (ls + lf)
    return total


@pytest.mark.parametrize("negatives", ["shared", "per_query"])
def test_hierarchical_loss_equals_weighted_sum_by_hand(negatives):
    weights = {"res3": 0.5, "res4": 0.25, "res5": 1.0}
    hc = make_hc(level_weights=weights, negatives=negatives, num_negatives=30)
    idx = torch.tensor([0, 3, 7, 11, 20, 39])
    zs, zf = embeddings(6, 8, 100), embeddings(6, 8, 200)
    total, stats = hc(zs, zf, idx, generator=torch.Generator().manual_seed(5))
    bank = hc.banks["res3_slow"]
    neg = bank.sample_negatives(30, generator=torch.Generator().manual_seed(5),
                                batch_size=None if negatives == "shared" else 6)
    assert neg.shape == ((30,) if negatives == "shared" else (6, 30))
    torch.testing.assert_close(total, hand_total(hc, zs, zf, idx, neg, weights))
    # the stats are the per-level pieces of the same sum
    assert stats["loss"] == pytest.approx(total.item(), rel=1e-6)
    assert stats["loss"] == pytest.approx(sum(weights[k] * (stats[f"{k}/loss_slow"] + stats[f"{k}/loss_fast"])
                                              for k in LEVELS), rel=1e-6)
    mask = (neg[None, :] if neg.ndim == 1 else neg) == idx[:, None]
    bf = hc.banks["res4_fast"].weight
    assert stats["res4/loss_slow"] == pytest.approx(
        info_nce(zs["res4"], bf[idx], bf[neg], 0.1, negative_mask=mask).item(), rel=1e-6)


def test_stats_keys_and_types():
    hc = make_hc(levels=("res4", "res5"))
    total, stats = hc(embeddings(4, 8, 1, ("res4", "res5")), embeddings(4, 8, 2, ("res4", "res5")),
                      torch.arange(4), generator=torch.Generator().manual_seed(0))
    assert set(stats) == {"loss", "res4/loss_slow", "res4/loss_fast", "res4/acc", "res4/bank_cos", "res4/spread",
                          "res5/loss_slow", "res5/loss_fast", "res5/acc", "res5/bank_cos", "res5/spread"}
    assert all(type(v) is float for v in stats.values())
    assert total.ndim == 0 and total.requires_grad is False  # inputs carried no gradient


def test_bank_cos_measures_how_far_the_rows_are_behind_the_live_embeddings():
    hc = make_hc(levels=("res5",), momentum=0.0)
    idx = torch.tensor([1, 4, 9])
    zs, zf = embeddings(3, 8, 3, ("res5",)), embeddings(3, 8, 4, ("res5",))
    _, before = hc(zs, zf, idx, generator=torch.Generator().manual_seed(0))
    by_hand = 0.5 * (torch.nn.functional.cosine_similarity(zs["res5"], hc.banks["res5_slow"].weight[idx]).mean()
                     + torch.nn.functional.cosine_similarity(zf["res5"], hc.banks["res5_fast"].weight[idx]).mean())
    assert before["res5/bank_cos"] == pytest.approx(by_hand.item(), abs=1e-6)
    assert abs(before["res5/bank_cos"]) < 0.9  # random initial rows
    hc.update_banks(zs, zf, idx)  # m = 0: the rows now hold exactly these embeddings
    _, after = hc(zs, zf, idx, generator=torch.Generator().manual_seed(0))
    assert after["res5/bank_cos"] == pytest.approx(1.0, abs=1e-5)


def test_spread_is_the_mean_cosine_between_different_clips():
    hc = make_hc(levels=("res5",))
    z = embeddings(5, 8, 7, ("res5",))
    _, stats = hc(z, embeddings(5, 8, 8, ("res5",)), torch.arange(5), generator=torch.Generator().manual_seed(0))
    sim = z["res5"] @ z["res5"].T
    assert stats["res5/spread"] == pytest.approx(((sim.sum() - sim.trace()) / 20).item(), abs=1e-6)
    same = {"res5": z["res5"][:1].repeat(5, 1)}  # collapsed: every clip on one direction
    _, collapsed = hc(same, same, torch.arange(5), generator=torch.Generator().manual_seed(0))
    assert collapsed["res5/spread"] == pytest.approx(1.0, abs=1e-5)


def test_gradients_reach_queries_not_banks_in_bank_mode():
    hc = make_hc()
    idx = torch.tensor([1, 2, 3, 4])
    zs, zf = embeddings(4, 8, 10, grad=True), embeddings(4, 8, 20, grad=True)
    total, _ = hc(zs, zf, idx, generator=torch.Generator().manual_seed(1))
    total.backward()
    assert all(b.weight.grad is None and not b.weight.requires_grad for b in hc.banks.values())
    assert list(hc.parameters()) == []
    for k in LEVELS:
        assert zs[k].grad.abs().sum() > 0 and zf[k].grad.abs().sum() > 0
    # with bank positives z_fast is only ever a query: its gradient is that of sum_k L_f^k alone
    neg = hc.banks["res3_slow"].sample_negatives(12, generator=torch.Generator().manual_seed(1))
    mask = neg[None, :] == idx[:, None]
    zf2 = {k: v.detach().clone().requires_grad_(True) for k, v in zf.items()}
    lf = sum(info_nce(zf2[k], hc.banks[f"{k}_slow"].weight[idx], hc.banks[f"{k}_slow"].weight[neg], 0.1,
                      negative_mask=mask) for k in LEVELS)
    lf.backward()
    for k in LEVELS:
        torch.testing.assert_close(zf[k].grad, zf2[k].grad)


def test_live_positives_let_gradient_reach_both_views():
    hc = make_hc(positives="live")
    idx = torch.tensor([5, 6, 7])
    zs, zf = embeddings(3, 8, 30, grad=True), embeddings(3, 8, 40, grad=True)
    total, _ = hc(zs, zf, idx, generator=torch.Generator().manual_seed(2))
    neg = hc.banks["res3_slow"].sample_negatives(12, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(total, hand_total(hc, zs, zf, idx, neg, dict.fromkeys(LEVELS, 1.0), "live"))
    # L_s alone (slow queries, live fast positives) sends gradient into z_fast through the positive
    mask = neg[None, :] == idx[:, None]
    ls = info_nce(zs["res5"], zf["res5"], hc.banks["res5_fast"].weight[neg], 0.1, negative_mask=mask)
    g_fast, g_slow = torch.autograd.grad(ls, [zf["res5"], zs["res5"]])
    assert g_fast.abs().sum() > 0 and g_slow.abs().sum() > 0
    total.backward()
    for k in LEVELS:
        assert zs[k].grad.abs().sum() > 0 and zf[k].grad.abs().sum() > 0


def test_own_index_never_appears_unmasked_among_negatives():
    for negatives in ("shared", "per_query"):
        hc = make_hc(num_items=6, num_negatives=100, negatives=negatives)
        assert hc.num_negatives == 5  # capped at n - 1
        idx = torch.tensor([0, 2, 5, 3])
        gen = torch.Generator().manual_seed(3)
        hits = 0
        for _ in range(20):
            neg, mask = hc.draw_negatives(idx, generator=gen)
            full = neg.expand(4, -1) if neg.ndim == 1 else neg
            own = full == idx[:, None]
            assert torch.equal(mask, own)  # exactly the own-index entries are masked
            hits += int(own.sum())
        assert hits > 0  # the small bank made collisions happen, so the check was not vacuous
        _, mask = make_hc(num_items=6, negatives=negatives, mask_own_index=False).draw_negatives(idx, generator=gen)
        assert mask is None


def test_masking_own_index_equals_removing_it():
    # the query sits exactly on its own fast-bank row: unmasked, that row would be a strong "negative"
    hc = make_hc(num_items=5, num_negatives=4, levels=("res5",))
    idx = torch.tensor([0, 1, 2, 3, 4])
    zs = {"res5": hc.banks["res5_fast"].weight[idx].clone()}
    zf = {"res5": hc.banks["res5_slow"].weight[idx].clone()}
    gen_seed = 11
    _, stats = hc(zs, zf, idx, generator=torch.Generator().manual_seed(gen_seed))
    neg = hc.banks["res5_slow"].sample_negatives(4, generator=torch.Generator().manual_seed(gen_seed))
    bf = hc.banks["res5_fast"].weight
    rows = [info_nce(zs["res5"][b:b + 1], bf[idx[b:b + 1]], bf[neg[neg != idx[b]]], 0.1) for b in range(5)]
    assert stats["res5/loss_slow"] == pytest.approx(torch.stack(rows).mean().item(), rel=1e-5)


def test_accuracy_stat_identical_and_random():
    hc = make_hc(num_items=300, levels=("res5",), dim=16)
    z = embeddings(256, 16, 50, ("res5",))
    _, stats = hc(z, {k: v.clone() for k, v in z.items()}, torch.arange(256), generator=None)
    assert stats["res5/acc"] == 1.0
    _, stats = hc(z, embeddings(256, 16, 60, ("res5",)), torch.arange(256), generator=None)
    assert stats["res5/acc"] < 0.05  # chance is 1/256


def test_forward_does_not_update_banks_and_update_banks_does():
    hc = make_hc(momentum=0.25)
    before = {k: b.weight.clone() for k, b in hc.banks.items()}
    idx = torch.tensor([3, 9])
    zs, zf = embeddings(2, 8, 70, grad=True), embeddings(2, 8, 80, grad=True)
    hc(zs, zf, idx, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(before[k], b.weight) for k, b in hc.banks.items())
    hc.update_banks(zs, zf, idx)
    for k in LEVELS:
        for view, z in (("slow", zs), ("fast", zf)):
            v = 0.25 * before[f"{k}_{view}"][idx] + 0.75 * z[k].detach()
            torch.testing.assert_close(hc.banks[f"{k}_{view}"].weight[idx], F.normalize(v, dim=1))
    assert set(hc.state_dict()) == {f"banks.{k}_{v}.weight" for k in LEVELS for v in ("slow", "fast")}


def test_nce_mode_matches_hand_nce_and_freezes_z():
    hc = make_hc(loss="nce", levels=("res5",), num_items=200, num_negatives=50)
    idx = torch.tensor([1, 2, 3])
    zs, zf = embeddings(3, 8, 90, ("res5",)), embeddings(3, 8, 91, ("res5",))
    total, _ = hc(zs, zf, idx, generator=torch.Generator().manual_seed(4))
    neg = hc.banks["res5_slow"].sample_negatives(50, generator=torch.Generator().manual_seed(4))
    mask = neg.expand(3, -1) == idx[:, None]
    bs, bf = hc.banks["res5_slow"].weight, hc.banks["res5_fast"].weight
    z_s, z_f = hc.criteria["res5_slow"].z, hc.criteria["res5_fast"].z
    assert z_s != z_f  # one Z per query direction, as CMC keeps Z_l and Z_ab
    want = (hand_nce(zs["res5"], bf[idx], bf[neg].expand(3, 50, 8), 0.1, z_s, 200, mask)
            + hand_nce(zf["res5"], bs[idx], bs[neg].expand(3, 50, 8), 0.1, z_f, 200, mask))
    torch.testing.assert_close(total.double(), want, rtol=1e-5, atol=1e-5)
    hc(embeddings(3, 8, 92, ("res5",)), zf, idx, generator=torch.Generator().manual_seed(5))
    assert hc.criteria["res5_slow"].z == z_s
    assert "criteria.res5_slow.log_z" in hc.state_dict()


def test_from_config_uses_last_level_weights():
    cfg = ContrastConfig(temperature=0.2, num_negatives=7, level_weights=(0.1, 0.2, 0.3), negatives="per_query")
    hc = HierarchicalContrast.from_config(cfg, num_items=20, levels=("res4", "res5"), dim=4)
    assert hc.level_weights == {"res4": 0.2, "res5": 0.3}
    assert (hc.temperature, hc.num_negatives, hc.negatives) == (0.2, 7, "per_query")
    assert hc.banks["res5_fast"].momentum == 0.5


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_items=1), "num_items"),
        (dict(levels=()), "levels"),
        (dict(levels=("res5", "res5")), "levels"),
        (dict(levels="res5"), "levels"),
        (dict(dim=0), "dim"),
        (dict(temperature=0), "temperature"),
        (dict(num_negatives=0), "num_negatives"),
        (dict(momentum=1.5), "momentum"),
        (dict(level_weights={"res5": 1.0}), "level_weights"),
        (dict(level_weights={"res3": 1.0, "res4": -1.0, "res5": 1.0}), "level_weights"),
        (dict(negatives="all"), "negatives"),
        (dict(positives="queue"), "positives"),
        (dict(loss="triplet"), "loss"),
        (dict(mask_own_index=1), "mask_own_index"),
    ],
)
def test_hierarchical_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_hc(**kwargs)


def test_hierarchical_bad_forward_arguments():
    hc = make_hc()
    zs, zf = embeddings(3, 8, 1), embeddings(3, 8, 2)
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="z_slow must be a dict with exactly the levels"):
        hc({"res5": zs["res5"]}, zf, torch.arange(3), generator=gen)
    with pytest.raises(ValueError, match=r"z_fast\['res4'\] must have shape \(3, 8\)"):
        hc(zs, {**zf, "res4": torch.zeros(3, 9)}, torch.arange(3), generator=gen)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 40\)"):
        hc(zs, zf, torch.tensor([0, 1, 40]), generator=gen)
    with pytest.raises(ValueError, match="z_slow"):
        hc(zs, zf, torch.arange(2), generator=gen)
    with pytest.raises(ValueError, match="indices"):
        hc.update_banks(zs, zf, torch.tensor([0.0, 1.0, 2.0]))


# ----------------------------------------------------------------------------- timing helper


def test_negatives_cost_reports_time_and_gathered_bytes():
    shared = negatives_cost(8, 64, 16, 500, "shared", repeats=2)
    per_query = negatives_cost(8, 64, 16, 500, "per_query", repeats=2)
    assert shared["bytes_gathered"] == 64 * 16 * 4
    assert per_query["bytes_gathered"] == 8 * 64 * 16 * 4
    assert shared["seconds"] > 0 and per_query["seconds"] > 0
    with pytest.raises(ValueError, match="mode"):
        negatives_cost(8, 64, 16, 500, "both")


def test_in_batch_negatives_add_the_other_views_live_embeddings():
    hc = make_hc(positives="live", in_batch_negatives=True, num_negatives=10)
    idx = torch.tensor([1, 4, 9, 30])
    zs, zf = embeddings(4, 8, 11), embeddings(4, 8, 12)
    total, _ = hc(zs, zf, idx, generator=torch.Generator().manual_seed(3))
    neg = hc.banks["res3_slow"].sample_negatives(10, generator=torch.Generator().manual_seed(3))
    own = neg[None, :] == idx[:, None]
    expected = 0.0
    for k in hc.levels:
        bs, bf = hc.banks[f"{k}_slow"].weight, hc.banks[f"{k}_fast"].weight
        for i in range(4):  # query i: positive the other view's live embedding; negatives bank + other clips
            others = [j for j in range(4) if j != i]
            for q, pos, bank, live in ((zs[k][i], zf[k][i], bf, zf[k]), (zf[k][i], zs[k][i], bs, zs[k])):
                negs = torch.cat([bank[neg[~own[i]]], live[others]])
                logits = torch.cat([(q * pos).sum()[None], negs @ q]) / hc.temperature
                expected = expected + F.cross_entropy(logits[None], torch.tensor([0])) / 4
    torch.testing.assert_close(total, expected)
    with pytest.raises(ValueError, match="in_batch_negatives"):
        make_hc(in_batch_negatives=True, negatives="per_query")


def test_in_batch_negatives_make_the_batch_harder():
    # identical views: with in-batch negatives, a near-duplicate clip in the batch raises the loss
    zs = embeddings(4, 8, 21)
    zf = {k: v.clone() for k, v in zs.items()}
    zf_dup = {k: torch.cat([v[:3], v[:1] * 0.999 + 0.001]) for k, v in zf.items()}
    zs_dup = {k: torch.cat([v[:3], v[:1] * 0.999 + 0.001]) for k, v in zs.items()}
    idx = torch.tensor([0, 1, 2, 3])
    plain = make_hc(positives="live")(zs_dup, zf_dup, idx, generator=torch.Generator().manual_seed(0))[0]
    harder = make_hc(positives="live", in_batch_negatives=True)(zs_dup, zf_dup, idx,
                                                                generator=torch.Generator().manual_seed(0))[0]
    assert harder > plain


def test_bank_positives_memorise_free_embeddings_from_a_collapsed_start():
    # issue 14: the paper's objective itself (bank positives, shared negatives, own index masked, the
    # momentum update after the step) must be able to memorise a handful of instances, also from the
    # mean cosine of 0.95 a random encoder starts at (checked by hand: reading each positive from
    # the next video's row instead ends at loss 1.6 of chance 5.5 and retrieval 0, failing both asserts)
    history = memorise_free_embeddings(16, dim=32, batch=8, steps=60, start_cos=0.95, seed=0)
    first, last = history[0], history[-1]
    assert first["spread"] == pytest.approx(0.95, abs=0.03)
    assert first["loss"] > 0.9 * first["chance"]
    assert last["loss"] < 0.1 * last["chance"]
    assert last["acc"] == 1.0 and last["bank_cos"] > 0.99 and last["spread"] < 0.8


def test_memorise_free_embeddings_refuses_bad_arguments():
    with pytest.raises(ValueError, match="start_cos"):
        memorise_free_embeddings(8, batch=4, steps=1, start_cos=1.0)
    with pytest.raises(ValueError, match="batch"):
        memorise_free_embeddings(8, batch=9, steps=1)
