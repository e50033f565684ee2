"""Context-aware unit (paper section III-D, Fig. 4, p = q = 1)."""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1


class ContextUnit(nn.Module):
    """A freshly initialised copy of the first residual unit of stage i+1 (stride 2, with
    projection shortcut) followed by a 1x1 transposed convolution of stride 2 back to
    stage i's channels and size.

    The deconvolution has no bias: a per-channel constant is removed by Eq. 3's min-max
    normalisation anyway, and Table II counts no biases.
    """

    def __init__(self, block: type[BasicBlock | Bottleneck], in_channels: int, next_planes: int) -> None:
        super().__init__()
        out_channels = next_planes * block.expansion
        shortcut = nn.Sequential(conv1x1(in_channels, out_channels, stride=2), nn.BatchNorm2d(out_channels))
        self.down = block(in_channels, next_planes, stride=2, downsample=shortcut)
        self.up = nn.ConvTranspose2d(
            out_channels, in_channels, kernel_size=1, stride=2, output_padding=1, bias=False
        )

    def forward(self, t: Tensor) -> Tensor:
        return self.up(self.down(t))  # C x H x W -> 2C x H/2 x W/2 -> C x H x W

    def paper_parameter_count(self) -> int:
        """Convolution weights only, as the paper's Table II counts them."""
        return sum(m.weight.numel() for m in self.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))
