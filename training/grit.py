"""GRIT: K-FAC-preconditioned LoRA with Fisher-guided reprojection (arXiv 2601.00231).

Hand-written because no maintained library implements GRIT (peft provides the LoRA layers, not
this optimizer). The formulas are METHODS.md's "GRIT" section. Per peft LoRA layer, dW = B A with
A: r x d_in and B: d_out x r:

- hooks capture a = A x (the output of lora_A) and g, the gradient w.r.t. the input of lora_B
  (peft's `scaling` times B^T dL/dy), and keep the r x r factors Sigma_a = mean(a a^T) and
  Sigma_g = mean(g g^T), an EMA over the steps on which the factors are updated;
- inside the optimizer step, before gradient clipping and the AdamW update:
  grad_A <- (Sigma_a + lambda I)^-1 grad_A and grad_B <- grad_B (Sigma_g + lambda I)^-1
  (Cholesky; lambda x10 on failure up to `damping_max`; a factor is not used before it has seen
  `min_samples` token rows);
- every N steps: A <- V_k V_k^T A and B <- B U_k U_k^T, V the eigenvectors of Sigma_a
  (descending), U those of Sigma_g (V while Sigma_g is not well sampled), k the smallest rank
  keeping `energy` of the spectrum, clamped to [min_rank, r]. Shapes stay r; k gives the
  effective parameter count sum k (d_in + d_out).

With a Hugging Face Trainer: ``optimizer, controller = grit_optimizer(model, lr, max_grad_norm=1)``
and ``Trainer(..., optimizers=(optimizer, None))`` with ``max_grad_norm=0`` in TrainingArguments,
so clipping happens after the preconditioning, inside the step (a callback changed nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from peft.tuners.lora import LoraLayer
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle


@dataclass(frozen=True)
class GritConfig:
    """GRIT settings; defaults follow the paper's reference values."""

    damping: float = 1e-3
    damping_min: float = 1e-6
    damping_max: float = 1e-2
    update_every: int = 1  # capture and fold the factors on every k-th optimizer step
    momentum: float = 0.95  # EMA weight of the old factors
    min_samples: int = 64  # token rows a factor needs before it is used
    reproject_every: int = 40
    energy: float = 0.99
    min_rank: int = 4
    precondition: bool = True
    reproject: bool = True
    # The training loss is a mean over the N token rows of a batch, so each row's gradient carries a
    # 1/N factor; K-FAC implementations undo it so Sigma_g sits on a per-row scale that the absolute
    # damping can be compared with (otherwise Sigma_g ~ 1/N^2 and the damping alone decides).
    scale_g_by_rows: bool = True
    adapter_name: str = "default"

    def __post_init__(self) -> None:
        if not 0 < self.damping_min <= self.damping <= self.damping_max:
            raise ValueError(
                "GritConfig: need 0 < damping_min <= damping <= damping_max, got "
                f"{self.damping_min}, {self.damping}, {self.damping_max}"
            )
        for name in ("update_every", "reproject_every", "min_rank"):
            if getattr(self, name) < 1:
                raise ValueError(f"GritConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"GritConfig.momentum must be in [0, 1), got {self.momentum}")
        if not 0 < self.energy <= 1:
            raise ValueError(f"GritConfig.energy must be in (0, 1], got {self.energy}")
        if self.min_samples < 0:
            raise ValueError(f"GritConfig.min_samples must be >= 0, got {self.min_samples}")

    @classmethod
    def periodic(cls, **overrides: Any) -> GritConfig:
        """The `periodic` preset: damping 1e-2, factors every 20 steps, momentum 0.95, k >= 4
        every 40 steps."""
        preset = {"damping": 1e-2, "update_every": 20, "momentum": 0.95, "reproject_every": 40}
        return cls(**{**preset, "min_rank": 4, **overrides})

    @classmethod
    def seed003(cls, **overrides: Any) -> GritConfig:
        """The earlier name of `periodic` (kept so that existing configs and code still work)."""
        return cls.periodic(**overrides)


@dataclass(eq=False)
class GritLayerState:
    """Factors, running sums and rank of one LoRA layer."""

    name: str
    lora_A: nn.Linear
    lora_B: nn.Linear
    sigma_a: Tensor
    sigma_g: Tensor
    sum_aa: Tensor
    sum_gg: Tensor
    rows_a: int = 0  # rows in the running sums (since the last fold)
    rows_g: int = 0
    seen_a: int = 0  # rows folded into the factors so far
    seen_g: int = 0
    inv_a: Tensor | None = None
    inv_g: Tensor | None = None
    stale: bool = True  # factors changed since the inverses were computed
    damping_a: float = float("nan")
    damping_g: float = float("nan")
    k: int = 0

    @property
    def r(self) -> int:
        return self.lora_A.out_features

    @property
    def d_in(self) -> int:
        return self.lora_A.in_features

    @property
    def d_out(self) -> int:
        return self.lora_B.out_features


def damped_inverse(
    sigma: Tensor, damping: float, damping_max: float
) -> tuple[Tensor, Tensor, Tensor]:
    """(Sigma + lambda I)^-1 for a stack (n, r, r) of symmetric factors, by Cholesky.

    lambda starts at `damping` and is multiplied by 10 (capped at `damping_max`) for each matrix
    whose factorisation fails. Returns (inverses, lambda used, failed mask); a matrix that fails
    even at `damping_max` (or is not finite) gets the identity: its gradient is left as it is.
    """
    s = sigma.to(torch.float64)
    n, r, _ = s.shape
    eye = torch.eye(r, dtype=s.dtype, device=s.device)
    lam = torch.full((n,), float(damping), dtype=s.dtype, device=s.device)
    inverse = eye.expand(n, r, r).clone()
    failed = ~torch.isfinite(s).all(dim=2).all(dim=1)
    pending = (~failed).nonzero().squeeze(1)
    while pending.numel():
        chol, info = torch.linalg.cholesky_ex(s[pending] + lam[pending, None, None] * eye)
        ok = info == 0
        if ok.any():
            inverse[pending[ok]] = torch.cholesky_inverse(chol[ok])
        pending = pending[~ok]
        give_up = lam[pending] >= damping_max
        failed[pending[give_up]] = True
        pending = pending[~give_up]
        lam[pending] = (lam[pending] * 10).clamp(max=damping_max)
    lam[failed] = float("nan")
    return inverse.to(sigma.dtype), lam, failed


def effective_rank(eigenvalues: Tensor, energy: float, min_rank: int) -> int:
    """Smallest k whose top-k share of a descending spectrum reaches `energy`, in [min_rank, r]."""
    lam = eigenvalues.to(torch.float64).clamp(min=0)
    r = lam.numel()
    total = float(lam.sum())
    if total <= 0:
        return r
    share = torch.cumsum(lam, 0) / total
    k = int((share < energy - 1e-9).sum()) + 1
    return max(min(min_rank, r), min(k, r))


def _top_eigenvectors(sigma: Tensor) -> tuple[Tensor, Tensor]:
    values, vectors = torch.linalg.eigh(sigma.to(torch.float64))
    return values.flip(0), vectors.flip(1)  # descending


_COUNTERS = ("preconditioned_steps", "skipped_steps", "cholesky_failures", "reprojections")


class GritController:
    """Owns the hooks and factors of every LoRA layer; the optimizer calls it around AdamW."""

    def __init__(self, layers: list[GritLayerState], config: GritConfig) -> None:
        self.layers = layers
        self.config = config
        self.step = 0  # optimizer steps completed
        self.capturing = True  # factors are captured on the forward/backward before step 0
        self.counters = dict.fromkeys(_COUNTERS, 0)
        self._handles: list[RemovableHandle] = [
            layer.lora_A.register_forward_hook(partial(self._capture_a, layer)) for layer in layers
        ]

    # -- hooks -------------------------------------------------------------------------------
    def _capture_a(
        self, layer: GritLayerState, _module: nn.Module, _inputs: Any, a: Tensor
    ) -> None:
        # No grad means evaluation, or the no-grad first pass of reentrant checkpointing: skip it.
        if not (self.capturing and a.requires_grad):
            return
        rows = a.detach().reshape(-1, layer.r).float()
        layer.sum_aa.addmm_(rows.T, rows)
        layer.rows_a += rows.shape[0]
        a.register_hook(partial(self._capture_g, layer))

    def _capture_g(self, layer: GritLayerState, grad: Tensor) -> None:
        rows = grad.detach().reshape(-1, layer.r).float()
        if self.config.scale_g_by_rows:
            rows = rows * rows.shape[0]
        layer.sum_gg.addmm_(rows.T, rows)
        layer.rows_g += rows.shape[0]

    # -- factors -----------------------------------------------------------------------------
    def _all_reduce_sums(self) -> None:
        """Sum the running sums over data-parallel ranks, so every rank preconditions alike."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        dist = torch.distributed
        for layer in self.layers:
            counts = torch.tensor(
                [layer.rows_a, layer.rows_g], dtype=torch.float64, device=layer.sum_aa.device
            )
            for t in (layer.sum_aa, layer.sum_gg, counts):
                dist.all_reduce(t)
            layer.rows_a, layer.rows_g = int(counts[0]), int(counts[1])

    @torch.no_grad()
    def update_factors(self) -> None:
        """Fold the captured sums into the EMA factors (the first fold is the plain mean)."""
        self._all_reduce_sums()
        m = self.config.momentum
        for layer in self.layers:
            for kind in ("a", "g"):
                rows = getattr(layer, f"rows_{kind}")
                if rows == 0:
                    continue
                total, sigma = getattr(layer, f"sum_{kind}{kind}"), getattr(layer, f"sigma_{kind}")
                mean = total / rows
                if getattr(layer, f"seen_{kind}") == 0:
                    sigma.copy_(mean)
                else:
                    sigma.mul_(m).add_(mean, alpha=1 - m)
                setattr(layer, f"seen_{kind}", getattr(layer, f"seen_{kind}") + rows)
                setattr(layer, f"rows_{kind}", 0)
                total.zero_()
                layer.stale = True

    def _sampled(self, seen: int) -> bool:
        return seen >= max(self.config.min_samples, 1)

    def _refresh_inverses(self) -> None:
        stale = [layer for layer in self.layers if layer.stale]
        groups: dict[tuple[int, torch.device], list[GritLayerState]] = {}
        for layer in stale:
            groups.setdefault((layer.r, layer.sigma_a.device), []).append(layer)
        cfg = self.config
        for members in groups.values():
            # One batched Cholesky per rank and device: far fewer kernel launches than per layer.
            for kind in ("a", "g"):
                ready = [m for m in members if self._sampled(getattr(m, f"seen_{kind}"))]
                if not ready:
                    continue
                stack = torch.stack([getattr(m, f"sigma_{kind}") for m in ready])
                inverse, lam, failed = damped_inverse(stack, cfg.damping, cfg.damping_max)
                lams, fails = lam.tolist(), failed.tolist()  # one device sync, not one per layer
                self.counters["cholesky_failures"] += sum(fails)
                for m, inv, lam_used, fail in zip(ready, inverse, lams, fails, strict=True):
                    setattr(m, f"inv_{kind}", None if fail else inv)
                    setattr(m, f"damping_{kind}", lam_used)
        for layer in stale:
            layer.stale = False

    @torch.no_grad()
    def precondition(self) -> int:
        """Fold new factors and precondition the LoRA gradients in place; returns layers touched."""
        if self.capturing:
            self.update_factors()
        if not self.config.precondition:
            return 0
        self._refresh_inverses()
        touched = 0
        for layer in self.layers:
            grad_a, grad_b = layer.lora_A.weight.grad, layer.lora_B.weight.grad
            done = False
            if grad_a is not None and layer.inv_a is not None:
                grad_a.copy_(layer.inv_a @ grad_a.float())
                done = True
            if grad_b is not None and layer.inv_g is not None:
                grad_b.copy_(grad_b.float() @ layer.inv_g)  # the inverse is symmetric
                done = True
            touched += done
        if touched:
            self.counters["preconditioned_steps"] += 1
        else:
            self.counters["skipped_steps"] += 1
        return touched

    # -- reprojection ------------------------------------------------------------------------
    @torch.no_grad()
    def reproject(self) -> None:
        """Project A and B onto the top-k Fisher eigendirections of each well-sampled layer."""
        cfg = self.config
        for layer in self.layers:
            if not self._sampled(layer.seen_a):
                continue
            values, v = _top_eigenvectors(layer.sigma_a)
            if float(values.clamp(min=0).sum()) <= 0:
                continue
            k = effective_rank(values, cfg.energy, cfg.min_rank)
            u = v
            if self._sampled(layer.seen_g) and float(layer.sigma_g.trace()) > 0:
                u = _top_eigenvectors(layer.sigma_g)[1]
            p_a = v[:, :k] @ v[:, :k].T
            p_b = u[:, :k] @ u[:, :k].T
            a_weight, b_weight = layer.lora_A.weight, layer.lora_B.weight
            a_weight.copy_(p_a.to(a_weight.device) @ a_weight.to(torch.float64))
            b_weight.copy_(b_weight.to(torch.float64) @ p_b.to(b_weight.device))
            layer.k = k
        self.counters["reprojections"] += 1

    def after_step(self) -> None:
        """Advance the step counter; reproject when due; arm the hooks for the next step."""
        self.step += 1
        if self.config.reproject and self.step % self.config.reproject_every == 0:
            self.reproject()
        self.capturing = self.step % self.config.update_every == 0

    # -- reporting and lifecycle ---------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        """Numbers to log: effective rank and parameters, damping, step counts."""
        effective = sum(layer.k * (layer.d_in + layer.d_out) for layer in self.layers)
        lora = sum(layer.r * (layer.d_in + layer.d_out) for layer in self.layers)
        damping = [
            d for layer in self.layers for d in (layer.damping_a, layer.damping_g) if d == d
        ]  # d == d drops NaN (never computed or failed)
        return {
            "n_layers": len(self.layers),
            "mean_effective_rank": sum(layer.k for layer in self.layers) / len(self.layers),
            "effective_params": effective,
            "lora_params": lora,
            "effective_param_ratio": effective / lora,
            "damping_max_used": max(damping, default=float("nan")),
            **self.counters,
            "step": self.step,
        }

    def detach(self) -> None:
        """Remove the hooks (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def state_dict(self) -> dict[str, Any]:
        """Factors and counters, for checkpoints (inverses are recomputed)."""
        keep = ("sigma_a", "sigma_g", "seen_a", "seen_g", "k", "damping_a", "damping_g")
        return {
            "step": self.step,
            "counters": dict(self.counters),
            "layers": {
                layer.name: {key: _copy(getattr(layer, key)) for key in keep}
                for layer in self.layers
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        by_name = {layer.name: layer for layer in self.layers}
        missing = set(by_name) ^ set(state["layers"])
        if missing:
            raise ValueError(
                f"GRIT state does not match the model's LoRA layers: {sorted(missing)}"
            )
        self.step = int(state["step"])
        self.counters.update(state["counters"])
        for name, saved in state["layers"].items():
            layer = by_name[name]
            for key, value in saved.items():
                if isinstance(value, Tensor):
                    getattr(layer, key).copy_(value)
                else:
                    setattr(layer, key, value)
            layer.stale = True
        self.capturing = self.step % self.config.update_every == 0


def _copy(value: Any) -> Any:
    return value.detach().clone() if isinstance(value, Tensor) else value


def attach_grit(model: nn.Module, config: GritConfig | None = None) -> GritController:
    """Find every peft LoRA layer of `config.adapter_name` and hook it."""
    config = config or GritConfig()
    adapter = config.adapter_name
    layers: list[GritLayerState] = []
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer) or adapter not in module.lora_A:
            continue
        if adapter in getattr(module, "lora_variant", {}):
            variant = type(module.lora_variant[adapter]).__name__
            raise ValueError(
                f"GRIT: LoRA layer {name!r} uses {variant}; only plain LoRA is handled"
            )
        lora_a, lora_b = module.lora_A[adapter], module.lora_B[adapter]
        if not (isinstance(lora_a, nn.Linear) and isinstance(lora_b, nn.Linear)):
            raise ValueError(f"GRIT: LoRA layer {name!r} is {type(lora_a).__name__}, not Linear")
        r, device = lora_a.out_features, lora_a.weight.device

        def zeros(r: int = r, device: torch.device = device) -> Tensor:
            return torch.zeros(r, r, dtype=torch.float32, device=device)

        layers.append(
            GritLayerState(
                name=name,
                lora_A=lora_a,
                lora_B=lora_b,
                sigma_a=zeros(),
                sigma_g=zeros(),
                sum_aa=zeros(),
                sum_gg=zeros(),
                k=r,
            )
        )
    if not layers:
        raise ValueError(f"GRIT: no peft LoRA layers with adapter {adapter!r} in the model")
    return GritController(layers, config)


class GritOptimizer(torch.optim.AdamW):
    """AdamW whose step preconditions the LoRA gradients, clips, updates, then reprojects."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        controller: GritController,
        *,
        max_grad_norm: float | None = None,
        **adamw_kwargs: Any,
    ) -> None:
        super().__init__(params, **adamw_kwargs)
        self.controller = controller
        self.max_grad_norm = max_grad_norm
        self.last_grad_norm: Tensor | None = None  # after preconditioning, before clipping

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.controller.precondition()
        if self.max_grad_norm:
            params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
            self.last_grad_norm = nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        super().step()
        self.controller.after_step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "grit": self.controller.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        grit = state_dict.pop("grit", None)
        super().load_state_dict(state_dict)
        if grit is not None:
            self.controller.load_state_dict(grit)


def grit_optimizer(
    model: nn.Module,
    lr: float = 2e-4,
    weight_decay: float = 0.0,
    config: GritConfig | None = None,
    *,
    max_grad_norm: float | None = None,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> tuple[GritOptimizer, GritController]:
    """A GRIT optimizer over the model's trainable parameters, ready for Trainer(optimizers=...)."""
    controller = attach_grit(model, config)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = GritOptimizer(
        params,
        controller,
        max_grad_norm=max_grad_norm,
        lr=lr,
        weight_decay=weight_decay,
        betas=betas,
        eps=eps,
    )
    return optimizer, controller


__all__ = [
    "GritConfig",
    "GritController",
    "GritLayerState",
    "GritOptimizer",
    "attach_grit",
    "damped_inverse",
    "effective_rank",
    "grit_optimizer",
]
