r"""The reference CNN of Angeloudi et al. (2023), table A2, as an embedding net.

Three convolutional blocks (Conv2D + ReLU, 2x2 max pooling, batch normalisation,
dropout) with 32, 64 and 64 filters, then Dense 512 + ReLU, batch normalisation,
dropout and a final Dense layer. The paper's final Dense has 2 outputs (mean and
scale of a Normal); here it has `out_features` outputs, the embedding dimension.

Notes:
    The paper's text says the convolutions have "32, 32 and 64 filters", but its
    table A2 lists 4032, 18496 and 36928 parameters, i.e. 32, 64 and 64 filters;
    we follow the table. Keras counts 4 numbers per BatchNorm channel (scale,
    offset, moving mean, moving variance); PyTorch stores the last two as
    buffers, so parameters + running statistics reproduce the table.

    The paper does not state its dropout rate; we default to 0.2.

References:
    | ERGO-ML: towards a robust machine learning model for inferring the fraction
      of accreted stars in galaxies from integral-field spectroscopic maps
      (Angeloudi et al., 2023, MNRAS), table A2 and sec. 3.1
"""

from __future__ import annotations

from collections.abc import Sequence

import torch  # noqa: F401  (used by the docstring example)
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ._checks import as_size, check_input, check_positive_int, check_probability

__all__ = ["PaperCNN"]


class _BatchNorm1d(nn.BatchNorm1d):
    r"""BatchNorm1d that tolerates a batch of one sample in training mode.

    sbi's network builders infer the embedding size with `net(x[:1])` while the
    net is still in training mode, which makes `nn.BatchNorm1d` raise. For a
    single sample we normalise with the running statistics instead (and leave
    them untouched), exactly as in evaluation mode.
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(
                x,
                self.running_mean,
                self.running_var,
                self.weight,
                self.bias,
                training=False,
                eps=self.eps,
            )
        return super().forward(x)


class PaperCNN(nn.Module):
    r"""Creates the CNN of Angeloudi et al. (2023, table A2) as an embedding net.

    Arguments:
        in_channels: Number of input maps C (1 to 5 in this project).
        image_size: Side length of square maps, or `(H, W)`; at least 8 pixels
            because of the three 2x2 poolings.
        out_features: Size D of the output summary (the paper's head has 2).
        hidden_features: Width of the dense layer (512 in the paper).
        dropout: Dropout rate after every block (not given by the paper).

    Example:
        >>> net = PaperCNN(in_channels=5, image_size=32, out_features=8)
        >>> net(torch.randn(4, 5, 32, 32)).shape
        torch.Size([4, 8])
    """

    def __init__(
        self,
        in_channels: int = 5,
        image_size: int | Sequence[int] = 128,
        out_features: int = 2,
        hidden_features: int = 512,
        dropout: float = 0.2,
    ):
        super().__init__()

        self.in_channels = check_positive_int("in_channels", in_channels)
        self.image_size = as_size(image_size, minimum=8)
        self.out_features = check_positive_int("out_features", out_features)
        check_positive_int("hidden_features", hidden_features)
        dropout = check_probability("dropout", dropout)

        blocks = []
        channels = [in_channels, 32, 64, 64]
        kernels = [5, 3, 3]
        for c_in, c_out, k in zip(channels[:-1], channels[1:], kernels, strict=True):
            blocks += [
                # 'same' padding, as the Keras model
                nn.Conv2d(c_in, c_out, k, padding=k // 2),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.BatchNorm2d(c_out),
                nn.Dropout(dropout),
            ]
        self.features = nn.Sequential(*blocks)

        h, w = self.image_size
        flat = channels[-1] * (h // 8) * (w // 8)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, hidden_features),
            nn.ReLU(),
            _BatchNorm1d(hidden_features),
            nn.Dropout(dropout),
            nn.Linear(hidden_features, out_features),
        )

    def forward(self, x: Tensor) -> Tensor:
        r"""
        Arguments:
            x: Maps, with shape :math:`(B, C, H, W)`.

        Returns:
            The summaries, with shape :math:`(B, D)`.
        """

        check_input(x, self.in_channels, self.image_size)
        return self.head(self.features(x))

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, image_size={self.image_size}, "
            f"out_features={self.out_features}"
        )
