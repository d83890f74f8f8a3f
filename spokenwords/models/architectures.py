"""Model architectures and their registry: each model's config (from its ``params.yaml`` section) builds it, so a
checkpoint (``spokenwords.models.checkpoint``) can rebuild the model without ``params.yaml``.
"""

from __future__ import annotations

import inspect
import itertools
from typing import Any

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from spokenwords.audio.features import MFCC, LogMel
from spokenwords.cli import UserError
from spokenwords.models import embedding
from spokenwords.params import SUB_BANDS, BcresnetParams, DscnnParams, EmbeddingParams, M5Params, ModelParams, Section


class FirstConv(torch.autograd.Function):
    """A strided Conv1d from one input channel whose input needs no gradient, as in M5's first layer.

    The forward pass is the ordinary convolution. The weight gradient is one batched matmul of the output gradient
    with the input's frames (a strided view of the input): on a CPU that is about 1.6x faster than oneDNN's
    convolution backward, which is the largest single cost of an M5 training step.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.kernel_stride = (weight.shape[-1], stride)
        return F.conv1d(x, weight, bias, stride)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor, torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        kernel, stride = ctx.kernel_stride
        frames = x[:, 0].unfold(-1, kernel, stride)  # [batch, positions, kernel]
        return None, torch.bmm(grad, frames).sum(dim=0).unsqueeze(1), grad.sum(dim=(0, 2)), None


class BatchNormMaxPoolReLU(torch.autograd.Function):
    """Training-mode BatchNorm1d, then ReLU, then MaxPool1d (stride = width), in a few passes over the input.

    Pooling commutes with ReLU and with BatchNorm's per-channel affine map (a channel with a negative scale pools
    its minimum), so the map runs on the pooled values, a quarter of the data. The backward pass is BatchNorm's
    closed form, with the pooled gradient added where MaxPool takes its maximum (the first one on ties, as
    MaxPool does), and no index tensor is built in the forward pass. Returns the output, and the batch mean and
    unbiased variance for the running statistics.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, width: int):
        count = x.shape[0] * x.shape[2]
        # per-row sums in float32 (fast reductions over the last dimension), combined in float64
        mean = x.sum(dim=-1).double().sum(dim=0) / count
        squares = torch.linalg.vector_norm(x, dim=-1).double().square().sum(dim=0) / count
        var = (squares - mean.square()).clamp_min(0)
        unbiased = (var * count / max(count - 1, 1)).float()
        invstd = (var + eps).rsqrt().float()
        mean = mean.float()
        scale = weight * invstd
        shift = bias - mean * scale
        pooled = F.max_pool1d(x, width)
        negative = scale < 0
        if negative.any():
            pooled = torch.where(negative[:, None], -F.max_pool1d(-x, width), pooled)
        out = torch.addcmul(shift[:, None], pooled, scale[:, None]).relu_()
        ctx.save_for_backward(x, pooled, out, mean, invstd, scale)
        ctx.width = width
        ctx.mark_non_differentiable(mean, unbiased)
        return out, mean, unbiased

    @staticmethod
    def backward(ctx, grad: torch.Tensor, _mean: None, _var: None):
        x, pooled, out, mean, invstd, scale = ctx.saved_tensors
        count = x.shape[0] * x.shape[2]
        width, windows = ctx.width, pooled.shape[-1]
        grad = grad * (out > 0)  # the gradient at BatchNorm's output, on the pooled positions; zero elsewhere
        grad_bias = grad.sum(dim=(0, 2))
        grad_weight = (grad * (pooled - mean[:, None])).sum(dim=(0, 2)) * invstd
        slope = -scale * invstd * grad_weight / count
        offset = -scale * grad_bias / count - slope * mean
        grad_x = torch.addcmul(offset[:, None], x, slope[:, None])
        # where in each window the (first) extreme is: the count of leading elements that differ from it
        position = torch.zeros_like(pooled, dtype=torch.uint8)
        missed = None
        for index in range(width - 1):
            differs = x[..., index : width * windows : width] != pooled
            missed = differs if missed is None else missed & differs
            position += missed
        grad_x[..., : width * windows].unflatten(-1, (windows, width)).scatter_add_(
            -1, position.long().unsqueeze(-1), (grad * scale[:, None]).unsqueeze(-1)
        )
        return grad_x, grad_weight, grad_bias, None, None


@torch.no_grad()
def update_running_stats(norm: nn.BatchNorm1d, mean: torch.Tensor, var: torch.Tensor) -> None:
    """What ``nn.BatchNorm1d`` does to its running statistics in a training-mode forward pass."""
    norm.num_batches_tracked += 1
    momentum = norm.momentum if norm.momentum is not None else 1 / float(norm.num_batches_tracked)
    norm.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
    norm.running_var.mul_(1 - momentum).add_(var, alpha=momentum)


class M5(nn.Module):
    """The notebook's raw-waveform CNN (Dai et al. 2017): four Conv1d-BatchNorm-ReLU-MaxPool(4) blocks.

    The first convolution (kernel 80, stride 16) acts as a learned filter bank over the raw samples. ``reference``
    is the plain layer sequence, the definition. Training on the CPU takes a faster route to the same function
    (``train_forward``); evaluation, other devices and autocast use the layers as they are.
    """

    def __init__(
        self,
        n_output: int = 10,
        n_channel: int = M5Params.n_channel,
        stride: int = M5Params.stride,
        n_input: int = 1,
    ) -> None:
        super().__init__()
        widths = [n_input, n_channel, n_channel, 2 * n_channel, 2 * n_channel]
        blocks = []
        for index, (width_in, width_out) in enumerate(itertools.pairwise(widths)):
            conv = (
                nn.Conv1d(width_in, width_out, kernel_size=80, stride=stride)
                if index == 0
                else (nn.Conv1d(width_in, width_out, kernel_size=3))
            )
            blocks += [conv, nn.BatchNorm1d(width_out), nn.ReLU(), nn.MaxPool1d(4)]
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(widths[-1], n_output)

    @property
    def first_layer(self) -> nn.Conv1d:
        """The learned filter bank, for plotting its kernels."""
        return self.features[0]

    def reference(self, waveform: torch.Tensor) -> torch.Tensor:
        """The plain layer sequence: what ``forward`` computes on every route."""
        return self.classifier(self.features(waveform).mean(dim=-1))

    def train_forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """``reference`` in training mode on the CPU, with less memory traffic (a training step about twice as fast).

        Each block's BatchNorm, ReLU and MaxPool are one autograd function (``BatchNormMaxPoolReLU``), and the first
        convolution's weight gradient is one batched matmul (``FirstConv``). The result differs from ``reference``
        by float rounding only: BatchNorm's statistics and gradients are summed in another order.
        """
        out = waveform
        for block in range(0, len(self.features), 4):
            conv, norm, _, pool = self.features[block : block + 4]
            if block == 0 and conv.in_channels == 1:
                out = FirstConv.apply(out, conv.weight, conv.bias, conv.stride[0])
            else:
                out = conv(out)
            out, mean, var = BatchNormMaxPoolReLU.apply(out, norm.weight, norm.bias, norm.eps, pool.kernel_size)
            update_running_stats(norm, mean, var)
        return self.classifier(out.mean(dim=-1))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """Map ``[batch, 1, samples]`` waveforms to ``[batch, n_output]`` logits."""
        fast = (
            self.training
            and not torch.compiler.is_compiling()  # inductor fuses the plain layers itself
            and torch.is_grad_enabled()
            and waveform.device.type == "cpu"
            and waveform.dtype == torch.float32
            and not waveform.requires_grad
            and not torch.is_autocast_enabled("cpu")
        )
        return self.train_forward(waveform) if fast else self.reference(waveform)


def conv_bn(
    width_in: int,
    width_out: int,
    kernel: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
    groups: int = 1,
    dilation: tuple[int, int] = (1, 1),
    padding: tuple[int, int] | None = None,
) -> list[nn.Module]:
    """A bias-free Conv2d (padded to keep the size at stride 1 unless told) and its BatchNorm."""
    if padding is None:
        padding = ((kernel[0] - 1) // 2 * dilation[0], (kernel[1] - 1) // 2 * dilation[1])
    conv = nn.Conv2d(width_in, width_out, kernel, stride, padding, dilation, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(width_out)]


class SpectrogramModel(nn.Module):
    """A front end that turns waveforms into ``[batch, 1, coefficients, frames]`` and a body that classifies them.

    Training calls the front end's two steps and the body itself, to augment in between (the equaliser on the log
    mel energies, SpecAugment on the features); ``forward`` is the plain composition.
    """

    frontend: nn.Module
    body: nn.Sequential

    @property
    def first_layer(self) -> nn.Conv2d:
        """The first learned convolution over the features, for the kernels plot."""
        return next(layer for layer in self.body.modules() if isinstance(layer, nn.Conv2d))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """Map ``[batch, 1, samples]`` waveforms to ``[batch, n_output]`` logits."""
        return self.classify(self.frontend(waveform))


class DSCNN(SpectrogramModel):
    """DS-CNN of "Hello Edge" (Zhang et al. 2017), size S: a strided 10x4 convolution over MFCCs, then
    depthwise-separable 3x3 blocks, global average pooling and one linear layer (~24k parameters at 64 channels).
    """

    def __init__(
        self,
        sample_rate: int,
        n_output: int = 10,
        channels: int = DscnnParams.channels,
        blocks: int = DscnnParams.blocks,
        n_mfcc: int = DscnnParams.n_mfcc,
        dropout: float = DscnnParams.dropout,
        **features: Any,
    ) -> None:
        super().__init__()
        self.frontend = MFCC(sample_rate=sample_rate, n_mfcc=n_mfcc, **features)
        layers = [*conv_bn(1, channels, (4, 10), (2, 2)), nn.ReLU()]  # 4 coefficients x 10 frames (200 ms)
        for _ in range(blocks):
            layers += [*conv_bn(channels, channels, (3, 3), groups=channels), nn.ReLU()]
            layers += [*conv_bn(channels, channels, (1, 1)), nn.ReLU()]
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout))
        self.classifier = nn.Linear(channels, n_output)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(features))


class SubSpectralNorm(nn.Module):
    """BatchNorm with separate statistics for each of ``bands`` frequency sub-bands (Chang et al. 2021)."""

    def __init__(self, channels: int, bands: int = SUB_BANDS) -> None:
        super().__init__()
        self.bands = bands
        self.norm = nn.BatchNorm2d(channels * bands)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, frequency, time = x.shape
        x = self.norm(x.reshape(batch, channels * self.bands, frequency // self.bands, time))
        return x.reshape(batch, channels, frequency, time)


class BCResBlock(nn.Module):
    """Broadcasted residual block: a 2-D frequency-wise depthwise branch plus a 1-D temporal branch on the
    frequency-averaged features, broadcast back over frequency. A transition block changes the width first and
    has no identity shortcut.
    """

    def __init__(self, width_in: int, width_out: int, stride: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.transition = width_in != width_out
        layers = [*conv_bn(width_in, width_out, (1, 1)), nn.ReLU()] if self.transition else []
        depthwise = nn.Conv2d(width_out, width_out, (3, 1), (stride, 1), (1, 0), groups=width_out, bias=False)
        self.frequency = nn.Sequential(*layers, depthwise, SubSpectralNorm(width_out))
        self.temporal = nn.Sequential(
            *conv_bn(width_out, width_out, (1, 3), groups=width_out, dilation=(1, dilation)),
            nn.SiLU(),
            nn.Conv2d(width_out, width_out, 1, bias=False),
            nn.Dropout2d(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frequency = self.frequency(x)
        out = frequency + self.temporal(frequency.mean(dim=2, keepdim=True))
        return torch.relu(out if self.transition else out + x)


class BCResNet(SpectrogramModel):
    """BC-ResNet (Kim et al. 2021) over 40 log-mels: ~9k parameters at width 1, ~27k at width 2.

    Stages of 2, 2, 4, 4 blocks; frequency stride 2 at the head and in stages 2 and 3; temporal dilation
    1, 2, 4, 8 per stage; the head reduces 40 mel bands to 1 before pooling over time.
    """

    def __init__(
        self,
        sample_rate: int,
        n_output: int = 10,
        width: float = BcresnetParams.width,
        dropout: float = BcresnetParams.dropout,
        **features: Any,
    ) -> None:
        super().__init__()
        self.frontend = LogMel(sample_rate=sample_rate, **features)
        base = round(8 * width)
        widths = [2 * base, base, int(1.5 * base), 2 * base, int(2.5 * base), 4 * base]
        layers = [nn.Conv2d(1, widths[0], 5, (2, 1), 2, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()]
        for stage, (repeats, strided) in enumerate(((2, False), (2, True), (4, True), (4, False))):
            for index in range(repeats):
                width_in = widths[stage] if index == 0 else widths[stage + 1]
                stride = 2 if strided and index == 0 else 1
                layers.append(BCResBlock(width_in, widths[stage + 1], stride, 2**stage, dropout))
        head = widths[-2]
        layers += [
            nn.Conv2d(head, head, 5, padding=(0, 2), groups=head, bias=False),
            *conv_bn(head, widths[-1], (1, 1)),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(widths[-1], n_output, 1),
            nn.Flatten(),
        ]
        self.body = nn.Sequential(*layers)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.body(features)


class EmbeddingClassifier(nn.Module):
    """A small head on the frozen speech embedding (``spokenwords/models/embedding.py``): LayerNorm, two hidden layers,
    and the class logits of each 0.76 s window averaged over the clip's windows, so the word may sit anywhere in the
    clip.

    Only the head is trained, and only the head is in the ``state_dict``. Training feeds it the cached embeddings of
    the ``embed`` stage through ``classify``; ``forward`` takes waveforms, as every model here does.
    """

    def __init__(
        self,
        sample_rate: int,
        n_output: int = 10,
        hidden: int = EmbeddingParams.hidden,
        dropout: float = EmbeddingParams.dropout,
    ) -> None:
        super().__init__()
        if sample_rate != embedding.SAMPLE_RATE:
            raise UserError(
                f"model 'embedding' needs 16 kHz audio, but the clips are at {sample_rate} Hz: "
                f"set preprocess.sample_rate to {embedding.SAMPLE_RATE}"
            )
        self.head = nn.Sequential(
            nn.LayerNorm(embedding.EMBEDDING_SIZE),
            nn.Linear(embedding.EMBEDDING_SIZE, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_output),
        )

    @property
    def first_layer(self) -> nn.Linear:
        """The first learned layer, for the kernels plot: weights over the 96 embedding dimensions."""
        return self.head[1]

    def classify(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Logits of ``[batch, windows, 96]`` embeddings: the mean of each window's logits."""
        return self.head(embeddings).mean(dim=1)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """Map ``[batch, 1, samples]`` 16 kHz waveforms to ``[batch, n_output]`` logits."""
        device = next(self.parameters()).device
        return self.classify(embedding.embed(waveform).to(device))


class Ensemble(nn.Module):
    """Members whose class probabilities are averaged; ``forward`` returns the log of that mean, so softmax, argmax
    and cross-entropy treat it as logits. A member whose ``sample_rate`` differs from the clips' hears them through
    a resampler. ``train`` trains each member on its own (``resample`` gives a member its training clips); the
    ensemble itself is never trained.
    """

    def __init__(self, sample_rate: int, members: list[dict[str, Any]], n_output: int = 10) -> None:
        super().__init__()
        self.members = nn.ModuleList(build_model(config, n_output) for config in members)
        self.resamplers = nn.ModuleList(
            torchaudio.transforms.Resample(sample_rate, config["sample_rate"])
            if config.get("sample_rate", sample_rate) != sample_rate
            else nn.Identity()
            for config in members
        )

    @property
    def first_layer(self) -> nn.Module:
        """The first member's first learned layer, for the kernels plot."""
        return self.members[0].first_layer

    @torch.no_grad()
    def resample(self, index: int, waveforms: torch.Tensor, batch: int = 1024) -> torch.Tensor:
        """Clips ``[clips, 1, samples]`` at member ``index``'s sample rate, as ``forward`` hands them to it."""
        resampler = self.resamplers[index]
        return torch.cat([resampler(part) for part in waveforms.split(batch)]) if len(waveforms) else waveforms

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """Map ``[batch, 1, samples]`` waveforms to ``[batch, n_output]`` log mean probabilities."""
        probabilities = [
            member(resampler(waveform)).float().softmax(dim=-1)
            for member, resampler in zip(self.members, self.resamplers, strict=True)
        ]
        return torch.stack(probabilities).mean(dim=0).clamp_min(torch.finfo(torch.float32).tiny).log()


MODELS: dict[str, type[nn.Module]] = {
    "m5": M5,
    "dscnn": DSCNN,
    "bcresnet": BCResNet,
    "embedding": EmbeddingClassifier,
    "ensemble": Ensemble,
}


def takes_embeddings(model: nn.Module) -> bool:
    """Whether the model trains on the ``embed`` stage's cached embeddings instead of waveforms."""
    return isinstance(model, EmbeddingClassifier)


def model_config(section: ModelParams, sample_rate: int) -> dict[str, Any]:
    """The flat config ``build_model`` takes and a checkpoint keeps, from the ``model`` params section.

    Only the chosen model's own settings are kept, plus the sample rate when its front end needs one; an ensemble's
    lists its members' configs. It stays a plain mapping: a checkpoint must load without this version's params
    classes.
    """
    if section.name == "ensemble":
        members = section.ensemble
        return {
            "name": "ensemble",
            "sample_rate": sample_rate,
            "members": [
                single_config(name, getattr(members, name), members.sample_rate_of(name, sample_rate))
                for name in members.MEMBERS
            ],
        }
    return single_config(section.name, section.chosen, sample_rate)


def single_config(name: str, settings: Section, sample_rate: int) -> dict[str, Any]:
    """One architecture's config: its settings, plus the sample rate when its front end needs one."""
    config = {"name": name, **settings.as_dict()}
    if "sample_rate" in inspect.signature(MODELS[name]).parameters:
        config["sample_rate"] = sample_rate
    return config


def build_model(config: dict[str, Any], n_output: int) -> nn.Module:
    """Build the architecture ``config['name']`` with the rest of ``config`` as its arguments."""
    options = {key: value for key, value in config.items() if key != "name"}
    return MODELS[config["name"]](n_output=n_output, **options)


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
