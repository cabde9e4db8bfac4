"""Image + clinical covariates: a MONAI image network's features joined with covariates."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class FusionNet(nn.Module):
    """Late fusion of image features and numeric covariates in a small MLP head.

    The covariates are standardised with the training split's mean and standard deviation
    (buffers ``cov_mean``/``cov_std``, set by :meth:`fit_covariates` and saved with the weights);
    a missing value becomes 0 (the training mean) and sets its 0/1 missing indicator. The head sees
    ``[image features, standardised covariates, indicators]``. The module scripts with
    ``torch.jit.script`` when its image network does.

    Trained from scratch on few cases, such a network tends to lean on whichever source is
    easier to fit and leave the other under-trained (Wang et al., "What makes training
    multi-modal classification networks hard?", CVPR 2020). ``covariate_dropout`` counters this
    by "modality dropout" (Neverova et al., ModDrop, 2015): in training, each case's covariates
    are all hidden as missing with this probability, so the image branch must predict alone on
    those cases; it also trains the model for cases whose covariates are missing. It does
    nothing in eval mode.

    Args:
        image_net: a MONAI classifier built with ``out_channels=image_features`` (its output is
            used as the image feature vector).
        n_covariates: number of covariate columns ``D``.
        out_channels: outputs of the head (the task's ``num_classes``).
        image_features: size of ``image_net``'s output.
        hidden: width of the head's hidden layer.
        dropout: dropout before the head's last layer.
        covariate_dropout: probability, per training case, of hiding all its covariates.
        head_lr_scale: the head's learning rate as a multiple of the optimiser's (see
            :meth:`param_groups`). Adam moves a weight by about the learning rate per step, so
            in a short run a freshly initialised head cannot reach the covariate effects a
            logistic model has (several units per standard deviation) at the image network's
            learning rate.
    """

    takes_covariates = True

    def __init__(
        self,
        image_net: nn.Module,
        n_covariates: int,
        out_channels: int,
        image_features: int,
        hidden: int = 32,
        dropout: float = 0.0,
        covariate_dropout: float = 0.0,
        head_lr_scale: float = 1.0,
    ) -> None:
        super().__init__()
        for name, value in (
            ("n_covariates", n_covariates),
            ("out_channels", out_channels),
            ("image_features", image_features),
            ("hidden", hidden),
        ):
            if int(value) < 1:
                hint = " (FusionNet needs covariates: set data.covariates)" * (
                    name == "n_covariates"
                )
                raise ValueError(f"net.{name} must be >= 1{hint}, got {value}")
        for name, value in (("dropout", dropout), ("covariate_dropout", covariate_dropout)):
            if not 0 <= value < 1:
                raise ValueError(f"net.{name} must be in [0, 1), got {value}")
        self.covariate_dropout = float(covariate_dropout)
        if head_lr_scale <= 0:
            raise ValueError(f"net.head_lr_scale must be > 0, got {head_lr_scale}")
        self.head_lr_scale = float(head_lr_scale)
        self.image_net = image_net
        # An instance attribute too, so a scripted FusionNet still says it takes covariates.
        self.takes_covariates = True
        self.n_covariates = int(n_covariates)
        self.image_features = int(image_features)
        self.register_buffer("cov_mean", torch.zeros(self.n_covariates))
        self.register_buffer("cov_std", torch.ones(self.n_covariates))
        self.head = nn.Sequential(
            nn.Linear(self.image_features + 2 * self.n_covariates, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_channels),
        )

    @torch.jit.unused
    def param_groups(self) -> list[dict]:
        """Optimiser parameter groups: the image network, and the head with ``lr_scale``."""
        head = [p for n, p in self.named_parameters() if not n.startswith("image_net.")]
        return [
            {"params": list(self.image_net.parameters())},
            {"params": head, "lr_scale": self.head_lr_scale},
        ]

    @torch.jit.unused
    def fit_covariates(self, covariates: Tensor) -> None:
        """Set ``cov_mean``/``cov_std`` from the training split's covariates ``(N, D)`` (NaN ok).

        A column with no value keeps mean 0 and std 1; a constant column keeps std 1.
        """
        values = torch.as_tensor(covariates, dtype=torch.float64)
        if values.ndim != 2 or values.shape[1] != self.n_covariates:
            raise ValueError(
                f"covariates must be (N, {self.n_covariates}) (net.n_covariates), "
                f"got {tuple(values.shape)}"
            )
        present = ~torch.isnan(values)
        count = present.sum(0)
        mean = torch.where(count > 0, torch.nansum(values, 0) / count.clamp(min=1), 0.0)
        squares = torch.where(present, (values - mean) ** 2, 0.0).sum(0)
        std = torch.sqrt(squares / (count - 1).clamp(min=1))
        std = torch.where((count > 1) & (std > 0), std, 1.0)
        self.cov_mean.copy_(mean.to(self.cov_mean))
        self.cov_std.copy_(std.to(self.cov_std))

    def forward(self, image: Tensor, covariates: Tensor) -> Tensor:
        if covariates.dim() != 2 or covariates.shape[1] != self.n_covariates:
            raise ValueError("FusionNet: covariates must be (B, n_covariates)")
        features = self.image_net(image)
        if features.dim() != 2 or features.shape[1] != self.image_features:
            raise ValueError("FusionNet: image_net must output (B, image_features)")
        covariates = covariates.to(features.dtype)
        missing = torch.isnan(covariates)
        if self.training and self.covariate_dropout > 0:
            hidden = torch.rand(covariates.shape[0], 1, device=covariates.device)
            missing = missing | (hidden < self.covariate_dropout)
        scaled = (covariates - self.cov_mean) / self.cov_std
        scaled = torch.where(missing, torch.zeros_like(scaled), scaled)
        return self.head(torch.cat([features, scaled, missing.to(features.dtype)], dim=1))
