"""Context-aware unit (paper section III-D, Fig. 4, p = q = 1) and its two upsamplings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1


class SparseUpsample(nn.ConvTranspose2d):
    """The context unit's 1x1 transposed convolution of stride 2 (no bias), read literally.

    It writes only the even rows and columns of a map twice the size; the other 3/4 of the
    positions are exactly 0 for every image, so Eq. 3 gives them one shared pi per image and
    channel. :class:`NearestUpsample` is the dense reading with the same weights.

    In PyTorch it is computed as what it is: a 1x1 convolution whose results land on the
    even rows and columns of a zero map twice the size (Conv + Pad), which eager PyTorch
    runs about twice as fast as its generic transposed convolution, forward and backward.
    Under export it stays one ``ConvTranspose`` node, which onnxruntime runs faster than
    any Conv + zero-interleave rewrite (``Pad`` on a 6-D tensor is twice as slow there).
    Same weights, state-dict key and result as ``nn.ConvTranspose2d``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=1, stride=2, output_padding=1, bias=False)

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        if output_size is not None:
            raise ValueError("SparseUpsample always doubles height and width; output_size is not supported")
        if torch.compiler.is_exporting():
            return super().forward(x)
        y = F.conv2d(x, self.weight.transpose(0, 1))  # C_in x H x W -> C_out x H x W
        n, c, h, w = y.shape
        # N, C, H, 1, W, 1 -> N, C, H, 2, W, 2 (zeros after each value) -> N, C, 2H, 2W
        return F.pad(y.reshape(n, c, h, 1, w, 1), (0, 1, 0, 0, 0, 1)).reshape(n, c, 2 * h, 2 * w)


class NearestUpsample(nn.Module):
    """Nearest-neighbour x2, then the same 1x1 weights as :class:`SparseUpsample` (no bias).

    Every output position carries image content. The 1x1 map commutes with nearest
    upsampling, so it runs at the input size, then each value is repeated over a 2x2 cell.
    For export, :meth:`as_conv_transpose` is the same map as one transposed convolution.
    ``weight`` has ``ConvTranspose2d``'s layout (C_in x C_out x 1 x 1) and state-dict key, so
    the parameter count (Table II) is unchanged.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        template = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=1, bias=False)  # its initialisation
        self.weight = template.weight

    def forward(self, x: Tensor) -> Tensor:
        y = F.conv2d(x, self.weight.transpose(0, 1))  # C_in x H x W -> C_out x H x W
        n, c, h, w = y.shape
        # N, C, H, 1, W, 1 -> N, C, H, 2, W, 2 (each value repeated) -> N, C, 2H, 2W
        return y.reshape(n, c, h, 1, w, 1).expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)

    def as_conv_transpose(self) -> nn.ConvTranspose2d:
        """The same map as a transposed convolution with a 2x2 kernel and stride 2 whose four taps
        are the 1x1 weight: exactly the same sums, exported as one ``ConvTranspose`` node with its
        weights as an initializer, which TensorRT's parser, the INT8 placement and every runtime
        already handle."""
        c_in, c_out = self.weight.shape[:2]
        conv = nn.ConvTranspose2d(c_in, c_out, kernel_size=2, stride=2, bias=False).to(self.weight)
        with torch.no_grad():
            conv.weight.copy_(self.weight.expand(-1, -1, 2, 2))
        return conv


#: ``ModelConfig.cu_upsample`` -> the context unit's upsampling.
UPSAMPLINGS: dict[str, type[SparseUpsample | NearestUpsample]] = {
    "sparse": SparseUpsample,
    "nearest": NearestUpsample,
}


class ContextUnit(nn.Module):
    """A freshly initialised copy of the first residual unit of stage i+1 (stride 2, with
    projection shortcut) followed by a 1x1 upsampling of stride 2 back to stage i's channels
    and size (``upsample``: one of :data:`UPSAMPLINGS`).

    The upsampling has no bias: a per-channel constant is removed by Eq. 3's min-max
    normalisation anyway, and Table II counts no biases.
    """

    def __init__(self, block: type[BasicBlock | Bottleneck], in_channels: int, next_planes: int,
                 upsample: str = "sparse") -> None:
        super().__init__()
        out_channels = next_planes * block.expansion
        shortcut = nn.Sequential(conv1x1(in_channels, out_channels, stride=2), nn.BatchNorm2d(out_channels))
        self.down = block(in_channels, next_planes, stride=2, downsample=shortcut)
        self.up = UPSAMPLINGS[upsample](out_channels, in_channels)

    def forward(self, t: Tensor) -> Tensor:
        return self.up(self.down(t))  # C x H x W -> 2C x H/2 x W/2 -> C x H x W

    def paper_parameter_count(self) -> int:
        """Convolution weights only, as the paper's Table II counts them."""
        return sum(m.weight.numel() for m in self.modules()
                   if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, NearestUpsample)))
