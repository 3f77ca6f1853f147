"""GRIT (training/grit.py): factors, preconditioning, reprojection, damping, training behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from training.grit import (
    GritConfig,
    GritOptimizer,
    attach_grit,
    damped_inverse,
    effective_rank,
    grit_optimizer,
)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread avoids OpenMP spin-waits when other jobs share the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class OneLinear(nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_in, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class TwoLayer(nn.Module):
    """fc1 -> tanh -> fc2; `skip_fc2` leaves fc2 (and its LoRA) out of the graph."""

    def __init__(self, d_in: int = 8, d_hidden: int = 32, d_out: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.fc2 = nn.Linear(d_hidden, d_out)
        self.skip_fc2 = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.fc1(x))
        return h[:, : self.fc2.out_features] if self.skip_fc2 else self.fc2(h)


def lora(model: nn.Module, targets: list[str], r: int, random_b: bool = True) -> nn.Module:
    # init_lora_weights=False draws B at random too, so g = B^T dL/dy is not zero from step 0.
    config = LoraConfig(
        r=r,
        lora_alpha=2 * r,
        lora_dropout=0.0,
        target_modules=targets,
        init_lora_weights=not random_b,
    )
    return get_peft_model(model, config)


def lora_weights(model: nn.Module, name: str) -> tuple[nn.Linear, nn.Linear, float]:
    layer = dict(model.named_modules())[name]
    return layer.lora_A["default"], layer.lora_B["default"], layer.scaling["default"]


def test_damped_inverse_matches_explicit_inverse_on_sampled_factor() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(100, 5, generator=gen, dtype=torch.float64)
    sigma = a.T @ a / 100
    grad = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    inverse, lam, failed = damped_inverse(sigma[None], damping=1e-3, damping_max=1e-2)
    damped = sigma + 1e-3 * torch.eye(5, dtype=torch.float64)
    torch.testing.assert_close(inverse[0], torch.linalg.inv(damped))
    torch.testing.assert_close(inverse[0] @ grad, torch.linalg.solve(damped, grad))
    assert lam.tolist() == [1e-3] and not failed.any()


def test_preconditioned_grads_equal_direct_computation() -> None:
    torch.manual_seed(1)
    model = lora(OneLinear(6, 5), ["proj"], r=4)
    x, target = torch.randn(80, 6), torch.randn(80, 5)
    config = GritConfig(damping=1e-3, reproject=False)
    controller = attach_grit(model, config)
    lora_a, lora_b, scaling = lora_weights(model, "base_model.model.proj")
    base = model.base_model.model.proj.base_layer

    # Reference: the same forward written out, with a = A x as a leaf-like tensor to read dL/da.
    a_ref = lora_a.weight.detach().clone().requires_grad_()
    b_ref = lora_b.weight.detach().clone().requires_grad_()
    a = x @ a_ref.T
    a.retain_grad()
    y = base(x).detach() + scaling * (a @ b_ref.T)
    nn.functional.mse_loss(y, target).backward()
    n = x.shape[0]
    g = a.grad * n  # scale_g_by_rows undoes the 1/N of the mean loss
    sigma_a = a.detach().T @ a.detach() / n
    sigma_g = g.T @ g / n
    eye = torch.eye(4)
    want_a = torch.linalg.solve(sigma_a + 1e-3 * eye, a_ref.grad)
    want_b = torch.linalg.solve(sigma_g + 1e-3 * eye, b_ref.grad.T).T

    nn.functional.mse_loss(model(x), target).backward()
    torch.testing.assert_close(lora_a.weight.grad, a_ref.grad)  # same raw gradients
    assert controller.precondition() == 1
    layer = controller.layers[0]
    torch.testing.assert_close(layer.sigma_a, sigma_a)
    torch.testing.assert_close(layer.sigma_g, sigma_g)
    torch.testing.assert_close(lora_a.weight.grad, want_a, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(lora_b.weight.grad, want_b, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(want_a, a_ref.grad, rtol=0.1)  # the preconditioner did something


def test_hook_factors_equal_mean_of_projected_activations_with_ema() -> None:
    torch.manual_seed(2)
    model = lora(OneLinear(10, 3), ["proj"], r=4)
    controller = attach_grit(model, GritConfig(momentum=0.9))
    lora_a, _, _ = lora_weights(model, "base_model.model.proj")
    x1, x2, x3 = torch.randn(30, 10), torch.randn(50, 10), torch.randn(40, 10)

    # Two micro-batches before one fold (gradient accumulation): one mean over all 80 rows.
    for x in (x1, x2):
        model(x).sum().backward()
    with torch.no_grad():  # evaluation passes are not captured
        model(torch.randn(500, 10) * 100)
    controller.update_factors()
    with torch.no_grad():  # the reference projections must not be captured themselves
        a12, a3 = lora_a(torch.cat([x1, x2])), lora_a(x3)
    first = a12.T @ a12 / 80
    torch.testing.assert_close(controller.layers[0].sigma_a, first)
    assert controller.layers[0].seen_a == 80

    model(x3).sum().backward()
    controller.update_factors()
    torch.testing.assert_close(controller.layers[0].sigma_a, 0.9 * first + 0.1 * (a3.T @ a3 / 40))


def toy_curve(use_grit: bool, config: GritConfig | None = None, steps: int = 40) -> list[float]:
    torch.manual_seed(3)
    teacher = TwoLayer()
    x = torch.randn(64, 8)
    with torch.no_grad():
        target = teacher(x)
    torch.manual_seed(4)
    model = lora(TwoLayer(), ["fc1", "fc2"], r=8, random_b=False)
    if use_grit:
        optimizer, _ = grit_optimizer(model, lr=5e-3, config=config)
    else:
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=5e-3, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        loss = nn.functional.mse_loss(model(x), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def test_grit_loss_curve_differs_from_adamw_and_both_decrease() -> None:
    adamw = toy_curve(use_grit=False)
    grit = toy_curve(use_grit=True, config=GritConfig(reproject_every=10))
    off = toy_curve(use_grit=True, config=GritConfig(precondition=False, reproject=False))
    assert adamw[0] == grit[0]  # same seed, same start
    assert adamw[-1] < 0.3 * adamw[0]
    assert grit[-1] < 0.3 * grit[0]
    assert max(abs(a - b) for a, b in zip(adamw, grit, strict=True)) > 1e-3
    assert off == adamw  # with both parts switched off GRIT is exactly AdamW


def test_effective_rank_on_hand_computed_spectra() -> None:
    spectrum = torch.tensor([10.0, 5, 3, 1, 0.5, 0.3, 0.15, 0.05])  # shares .5 .75 .9 .95 ...
    assert effective_rank(spectrum, energy=0.99, min_rank=4) == 6  # 19.8 / 20 = 0.99
    assert effective_rank(spectrum, energy=0.95, min_rank=1) == 4
    assert effective_rank(spectrum, energy=0.9, min_rank=4) == 4  # 3, raised to the floor
    assert effective_rank(torch.zeros(8), energy=0.99, min_rank=4) == 8
    assert effective_rank(torch.tensor([1.0, 0.0]), energy=0.99, min_rank=4) == 2  # floor <= r


def test_reprojection_on_rank_deficient_activations_gives_min_rank() -> None:
    torch.manual_seed(5)
    model = lora(OneLinear(16, 12), ["proj"], r=8)
    controller = attach_grit(model, GritConfig(min_rank=4))
    lora_a, lora_b, _ = lora_weights(model, "base_model.model.proj")
    basis = torch.randn(2, 16)
    x = torch.randn(200, 2) @ basis  # activations live in a 2-dim subspace
    model(x).pow(2).mean().backward()
    controller.update_factors()
    layer = controller.layers[0]
    a_before, b_before = lora_a.weight.detach().clone(), lora_b.weight.detach().clone()
    with torch.no_grad():
        out_before = lora_a(x)

    controller.reproject()

    assert layer.k == 4
    assert lora_a.weight.shape == (8, 16) and lora_b.weight.shape == (12, 8)
    assert torch.linalg.matrix_rank(lora_a.weight.detach()).item() == 4
    with torch.no_grad():
        torch.testing.assert_close(lora_a(x), out_before, rtol=1e-4, atol=1e-4)
    _, v = np.linalg.eigh(layer.sigma_a.double().numpy())
    _, u = np.linalg.eigh(layer.sigma_g.double().numpy())
    v4, u4 = v[:, ::-1][:, :4], u[:, ::-1][:, :4]
    np.testing.assert_allclose(lora_a.weight.detach(), v4 @ v4.T @ a_before.numpy(), atol=1e-5)
    np.testing.assert_allclose(lora_b.weight.detach(), b_before.numpy() @ u4 @ u4.T, atol=1e-5)
    metrics = controller.metrics()
    assert metrics["effective_params"] == 4 * (16 + 12)
    assert metrics["lora_params"] == 8 * (16 + 12)


def test_reprojection_keeps_k_within_bounds_on_random_layers() -> None:
    torch.manual_seed(6)
    model = lora(TwoLayer(d_in=12, d_hidden=24), ["fc1", "fc2"], r=6)
    optimizer, controller = grit_optimizer(model, lr=1e-2, config=GritConfig(reproject_every=2))
    x = torch.randn(64, 12) @ torch.diag(torch.logspace(0, -3, 12))  # anisotropic inputs
    for _ in range(4):
        model(x).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    assert controller.metrics()["reprojections"] == 2
    for layer in controller.layers:
        assert 4 <= layer.k <= 6
        assert layer.lora_A.weight.shape[0] == 6


def test_damping_escalates_on_indefinite_factor_and_grads_stay_finite() -> None:
    torch.manual_seed(7)
    model = lora(OneLinear(6, 5), ["proj"], r=4)
    controller = attach_grit(model, GritConfig(damping=1e-6, reproject=False))
    lora_a, _, _ = lora_weights(model, "base_model.model.proj")
    model(torch.randn(80, 6)).sum().backward()
    controller.update_factors()
    raw = lora_a.weight.grad.clone()
    # A rank-1 factor pushed slightly indefinite (as rounding does): Cholesky fails at 1e-6,
    # 1e-5 and 1e-4, and succeeds at 1e-3.
    v = torch.ones(4, 1)
    bad = v @ v.T - 5e-4 * torch.eye(4)
    layer = controller.layers[0]
    layer.sigma_a.copy_(bad)
    controller.precondition()
    assert layer.damping_a == pytest.approx(1e-3)
    assert torch.isfinite(lora_a.weight.grad).all()
    want = torch.linalg.solve(bad.double() + 1e-3 * torch.eye(4).double(), raw.double())
    torch.testing.assert_close(lora_a.weight.grad.double(), want, rtol=1e-4, atol=1e-4)

    # Hopeless even at damping_max: the gradient is left as it is and the failure counted.
    zero = torch.zeros(4, 4)
    inverse, lam, failed = damped_inverse(torch.stack([zero, -torch.eye(4)]), 1e-6, 1e-2)
    assert failed.tolist() == [False, True] and torch.isnan(lam[1]) and lam[0] == 1e-6
    torch.testing.assert_close(inverse[0], 1e6 * torch.eye(4))  # singular but PSD: fine
    torch.testing.assert_close(inverse[1], torch.eye(4))
    lora_a.weight.grad.copy_(raw)
    layer.sigma_a.copy_(-torch.eye(4))
    layer.stale = True
    controller.precondition()
    torch.testing.assert_close(lora_a.weight.grad, raw)
    assert controller.metrics()["cholesky_failures"] == 1


def test_layer_without_gradient_and_factor_update_schedule() -> None:
    torch.manual_seed(8)
    model = lora(TwoLayer(), ["fc1", "fc2"], r=4)
    model.base_model.model.skip_fc2 = True
    config = GritConfig(update_every=3, reproject_every=2)
    optimizer, controller = grit_optimizer(model, lr=1e-2, config=config, max_grad_norm=1.0)
    x = torch.randn(32, 8)
    for _ in range(7):
        model(x).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    fc1, fc2 = controller.layers
    assert fc1.seen_a == 3 * 32  # captured before steps 0, 3 and 6 only
    assert fc2.seen_a == 0 and fc2.k == 4
    assert optimizer.last_grad_norm is not None and torch.isfinite(optimizer.last_grad_norm)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_skips_until_enough_samples_and_state_round_trip() -> None:
    torch.manual_seed(9)
    model = lora(OneLinear(6, 5), ["proj"], r=4)
    optimizer, controller = grit_optimizer(model, lr=1e-2, config=GritConfig(min_samples=64))
    for _ in range(3):  # 40, 80, 120 rows seen: the first step is skipped
        model(torch.randn(40, 6)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    metrics = controller.metrics()
    assert (metrics["skipped_steps"], metrics["preconditioned_steps"]) == (1, 2)

    state = optimizer.state_dict()
    fresh = lora(OneLinear(6, 5), ["proj"], r=4)
    fresh.load_state_dict(model.state_dict())
    optimizer2, controller2 = grit_optimizer(fresh, lr=1e-2)
    optimizer2.load_state_dict(state)
    assert controller2.step == 3 and controller2.metrics()["skipped_steps"] == 1
    torch.testing.assert_close(controller2.layers[0].sigma_a, controller.layers[0].sigma_a)


RANK_ROWS = (30, 70)  # different data and row counts on the two ranks


def _rank_data(rank: int) -> tuple[nn.Module, torch.Tensor]:
    """The same LoRA model on every rank (seed 10), and rank `rank`'s own input rows."""
    torch.manual_seed(10)
    model = lora(OneLinear(6, 5), ["proj"], r=4)
    return model, torch.randn(RANK_ROWS[rank], 6, generator=torch.Generator().manual_seed(rank))


def _factors_on_rank(rank: int, world_size: int, folder: str) -> None:
    """One data-parallel rank (torch.multiprocessing.spawn): capture, fold, save the factors."""
    torch.set_num_threads(1)
    dist = torch.distributed
    dist.init_process_group("gloo", init_method=f"file://{folder}/pg", rank=rank,
                            world_size=world_size)
    try:
        model, x = _rank_data(rank)
        controller = attach_grit(model)
        model(x).sum().backward()
        controller.update_factors()
        layer = controller.layers[0]
        torch.save({"sigma_a": layer.sigma_a, "sigma_g": layer.sigma_g, "seen_a": layer.seen_a,
                    "seen_g": layer.seen_g}, f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_factors_are_summed_over_data_parallel_ranks(tmp_path) -> None:
    """Two gloo ranks with different data: each rank's factors are the mean over the rows of
    both (sums and row counts all-reduced), as one process seeing both batches would get."""
    # fork: the ranks start with torch and peft already imported (spawn re-imports them)
    torch.multiprocessing.start_processes(_factors_on_rank, args=(2, str(tmp_path)), nprocs=2,
                                          start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]

    # the reference: one process, both ranks' batches as two micro-batches before one fold
    model, x0 = _rank_data(0)
    x1 = _rank_data(1)[1]
    controller = attach_grit(model)
    for x in (x0, x1):
        model(x).sum().backward()
    controller.update_factors()
    with torch.no_grad():
        a = lora_weights(model, "base_model.model.proj")[0](torch.cat([x0, x1]))
    pooled = controller.layers[0]
    torch.testing.assert_close(pooled.sigma_a, a.T @ a / sum(RANK_ROWS))
    for rank in ranks:
        torch.testing.assert_close(rank["sigma_a"], pooled.sigma_a)
        torch.testing.assert_close(rank["sigma_g"], pooled.sigma_g)
        assert rank["seen_a"] == rank["seen_g"] == sum(RANK_ROWS)
    with torch.no_grad():  # rank 0's own rows alone give other factors: the data differ
        a0 = lora_weights(model, "base_model.model.proj")[0](x0)
    assert not torch.allclose(a0.T @ a0 / RANK_ROWS[0], pooled.sigma_a, rtol=0.05)


def test_config_validation_and_seed003_preset() -> None:
    preset = GritConfig.seed003()
    assert (preset.damping, preset.update_every, preset.momentum) == (1e-2, 20, 0.95)
    assert (preset.reproject_every, preset.min_rank) == (40, 4)
    with pytest.raises(ValueError, match="damping"):
        GritConfig(damping=1.0)
    with pytest.raises(ValueError, match="update_every"):
        GritConfig(update_every=0)
    with pytest.raises(ValueError, match="no peft LoRA layers"):
        attach_grit(OneLinear(3, 3))


def test_tiny_llama_with_lora_on_all_projections_takes_one_grit_step() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(11)
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=128,
        max_position_embeddings=64,
    )
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(
        LlamaForCausalLM(config), LoraConfig(r=8, lora_alpha=16, target_modules=targets)
    )
    optimizer, controller = grit_optimizer(model, lr=1e-3, max_grad_norm=1.0)
    assert isinstance(optimizer, GritOptimizer)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    ids = torch.randint(0, 128, (2, 40))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    metrics = controller.metrics()
    assert metrics["n_layers"] == 14
    assert metrics["preconditioned_steps"] == 1 and metrics["cholesky_failures"] == 0
    assert metrics["lora_params"] == 2 * 8 * (4 * (32 + 32) + 2 * (32 + 64) + (64 + 32))
    changed = [n for n, p in model.named_parameters() if p.requires_grad and (p != before[n]).any()]
    # B starts at zero, so A gets no gradient on the first step: only the 14 B matrices move.
    assert len(changed) == 14 and all("lora_B" in n for n in changed)
    assert all(torch.isfinite(p).all() for p in model.parameters())
