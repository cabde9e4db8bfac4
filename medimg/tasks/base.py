"""The small base every task shares: optimisation, the shared step and prediction output."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torchmetrics import MeanMetric

from medimg.data import keys
from medimg.nets.init import hold_frozen_norms

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]

# Logged metrics where a smaller value is better; every other metric is better when larger.
LOWER_IS_BETTER = ("loss", "mae", "rmse")


def monitor_mode(metric: str) -> str:
    """``min`` or ``max``: the checkpoint/early-stopping mode for a logged metric name.

    >>> monitor_mode("val/mae"), monitor_mode("val/dice_liver")
    ('min', 'max')
    """
    name = metric.rsplit("/", 1)[-1]
    return "min" if name in LOWER_IS_BETTER else "max"


class BaseTask(L.LightningModule):
    """Wraps an injected network with a loss, an optimiser and stage metrics.

    Subclasses implement :meth:`target`, :meth:`loss`, :meth:`activate` and the metric hooks;
    :meth:`infer` is what validation, test and prediction run (plain forward by default).

    Args:
        net: the network (built from config by the pipeline). A network with a true
            ``takes_covariates`` attribute is called as ``net(image, covariates)``.
        optimizer: ``functools.partial`` of a torch optimiser, taking the parameters.
        scheduler: optional ``functools.partial`` of a learning-rate scheduler.
        monitor: metric a plateau scheduler watches (e.g. ``val/loss``).
        compile: run the network through ``torch.compile``; the state_dict keys stay those of
            the plain network, so checkpoints load either way.
    """

    kind: str = ""
    monitor_default: str = "val/loss"
    output_key: str = "prob"

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        monitor: str | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.monitor = monitor or self.monitor_default
        # Epoch losses of val/test as torchmetrics means weighted by cases: under DDP the states
        # are summed across processes, so the loss does not depend on how cases were sharded
        # (Lightning's sync_dist would average the per-process means instead).
        self.epoch_loss = nn.ModuleDict({stage: MeanMetric() for stage in ("val", "test")})
        self.compile_net = bool(compile)
        self.takes_covariates = bool(getattr(net, "takes_covariates", False))
        # Held outside the module tree (object.__setattr__) so no "_compiled." keys appear.
        object.__setattr__(self, "_compiled", None)
        self._prepared = False

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_compiled"] = None  # a compiled graph does not pickle; it is rebuilt on use
        return state

    def _runner(self) -> Callable[..., Tensor]:
        """The network, or its compiled wrapper (built on first use)."""
        if not self.compile_net:
            return self.net
        if self._compiled is None:
            object.__setattr__(self, "_compiled", torch.compile(self.net))
        return self._compiled

    def forward(self, image: Tensor, covariates: Tensor | None = None) -> Tensor:
        if self.takes_covariates:
            if covariates is None:
                raise ValueError(
                    f"the network {type(self.net).__name__} takes clinical covariates but the "
                    "batch has none: name the covariate columns in data.covariates"
                )
            return self._runner()(image, covariates)
        return self._runner()(image)

    def infer(self, image: Tensor, covariates: Tensor | None = None) -> Tensor:
        """Logits for validation, test and prediction (a subclass may tile or augment)."""
        return self(image, covariates)

    def prepare_from_training(self, labels: Tensor | None, covariates: Tensor | None) -> None:
        """Fit statistics of the training split once before ``fit`` (the pipeline calls it).

        Args:
            labels: the training split's targets (batch-contract shapes, stacked), or None.
            covariates: the training split's raw covariates ``(N, D)`` with NaN, or None.
        """
        fit = getattr(self.net, "fit_covariates", None)
        if covariates is not None and callable(fit):
            fit(torch.as_tensor(covariates, dtype=torch.float32))
        self._prepared = True

    def needs_preparation(self) -> bool:
        """Whether :meth:`prepare_from_training` fits anything for this task and network."""
        return callable(getattr(self.net, "fit_covariates", None))

    def on_fit_start(self) -> None:
        if self.needs_preparation() and not self._prepared:
            rank_zero_warn(
                f"{type(self).__name__}.prepare_from_training was not called before fit: "
                "target/covariate scaling keeps its defaults (mean 0, std 1)"
            )

    def on_train_epoch_start(self) -> None:
        # Lightning restores each module's own mode after validation rather than calling
        # train(), so the frozen layers are put back in eval mode here as well.
        hold_frozen_norms(self.net)

    def train(self, mode: bool = True) -> BaseTask:
        """Train mode, except for the frozen encoder's normalisation layers (see hold_frozen_norms)."""
        super().train(mode)
        if mode:
            hold_frozen_norms(self.net)
        return self

    def configure_optimizers(self) -> Any:
        # A network may split its parameters into groups; a group's ``lr_scale`` multiplies the
        # optimiser's learning rate (torch keeps the extra key in the group).
        groups = getattr(self.net, "param_groups", None)
        optimizer = self.optimizer_factory(
            params=groups() if callable(groups) else self.parameters()
        )
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * group.get("lr_scale", 1.0)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": self.monitor, "interval": "epoch"},
        }

    def target(self, batch: dict) -> Tensor:
        """The training target of a batch."""
        raise NotImplementedError

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """Training loss."""
        raise NotImplementedError

    def activate(self, logits: Tensor) -> Tensor:
        """Network output → probabilities (the same function the export applies)."""
        raise NotImplementedError

    def update_metrics(self, stage: str, probs: Tensor, target: Tensor) -> None:
        """Accumulate the epoch metrics of ``stage`` (torchmetrics states, synced under DDP)."""

    def log_metrics(self, stage: str) -> None:
        """Compute, log and reset the epoch metrics of ``stage``."""

    def _shared_step(self, batch: dict, stage: str) -> Tensor:
        image, covariates = batch[keys.IMAGE], batch.get(keys.COVARIATES)
        logits = self(image, covariates) if stage == "train" else self.infer(image, covariates)
        target = self.target(batch)
        loss = self.loss(logits, target)
        batch_size = image.shape[0]
        if stage == "train":
            self.log(
                "train/loss",
                loss,
                on_step=True,
                on_epoch=True,
                prog_bar=True,
                batch_size=batch_size,
            )
        else:
            self.epoch_loss[stage].update(loss.detach(), weight=batch_size)
            self.log(
                f"{stage}/loss",
                self.epoch_loss[stage],
                on_step=False,
                on_epoch=True,
                prog_bar=True,
                batch_size=batch_size,
            )
        if stage != "train":
            self.update_metrics(stage, self.activate(logits.detach()), target)
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self.log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self.log_metrics("test")

    def predict_outputs(self, logits: Tensor) -> dict[str, Tensor]:
        """What a prediction reports besides ids and targets (``prob`` or ``pred``)."""
        return {self.output_key: self.activate(logits).float().cpu()}

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, Any]:
        """Outputs per case, with the case ids and whatever target the batch carries."""
        logits = self.infer(batch[keys.IMAGE], batch.get(keys.COVARIATES))
        out: dict[str, Any] = {keys.CASE_ID: list(batch[keys.CASE_ID])}
        out.update(self.predict_outputs(logits))
        for key in (keys.LABEL, keys.MASK):
            if key in batch:
                out[key] = batch[key].cpu()
        return out
