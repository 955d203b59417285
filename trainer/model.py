"""The student: a sparse MinkUNet (SR-UNet) backbone, the projection head and the occupancy query head.

Backbone (MinkowskiEngine's MinkUNet layout): a k=5 stem, four stages of [k=2 s=2 conv, BasicBlock x n],
four decoder stages of [k=2 s=2 transposed conv, concat the encoder's skip, BasicBlock x n], then point
features gathered back from voxels. BasicBlock: ``x <- ReLU(x + BN(conv3(ReLU(BN(conv3(x))))))`` (a 1x1
projection on the skip when widths differ).

Projection head: 1 layer = linear; L > 1 layers = (Linear -> BatchNorm -> ReLU) x (L - 1) -> Linear;
its output is L2-normalised. Occupancy head (ALSO-style, ``trainer/occupancy.py``): a query voxel centre
q takes the backbone feature f of its nearest visible input point p and the offset q - p;
``logit = MLP([f, (q - p) / r])``.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.classes import NUM_EVAL_CLASSES
from trainer.batch import IN_CHANNELS, Batch, gather_rows, require
from trainer.config import ARCHS, ModelConfig
from trainer.occupancy import OccupancyHead
from trainer.sparse import SparseConv3d, SparseTensor


def _bn_relu(c: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm1d(c), nn.ReLU(inplace=True))


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1, self.bn1 = SparseConv3d(c_in, c_out, 3), nn.BatchNorm1d(c_out)
        self.conv2, self.bn2 = SparseConv3d(c_out, c_out, 3), nn.BatchNorm1d(c_out)
        self.skip = None if c_in == c_out else nn.Sequential(nn.Linear(c_in, c_out, bias=False), nn.BatchNorm1d(c_out))

    def forward(self, x: SparseTensor) -> SparseTensor:
        h = self.conv1(x)
        h = h.replace(torch.relu(self.bn1(h.feats)))
        h = self.conv2(h)
        skip = x.feats if self.skip is None else self.skip(x.feats)
        return h.replace(torch.relu(self.bn2(h.feats) + skip))


class MinkUNet(nn.Module):
    def __init__(self, arch: str = "minkunet34", in_channels: int = IN_CHANNELS):
        super().__init__()
        blocks, planes = ARCHS[arch]
        stem = planes[0]
        self.stem = SparseConv3d(in_channels, stem, 5)
        self.stem_norm = _bn_relu(stem)
        self.down, self.down_norm, self.enc = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        width, skips = stem, [stem]
        for i in range(4):
            self.down.append(SparseConv3d(width, width, 2, stride=2))
            self.down_norm.append(_bn_relu(width))
            self.enc.append(nn.Sequential(*[BasicBlock(width if j == 0 else planes[i], planes[i])
                                            for j in range(blocks[i])]))
            width = planes[i]
            skips.append(width)
        self.up, self.up_norm, self.dec = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i in range(4, 8):
            self.up.append(SparseConv3d(width, planes[i], 2, stride=2, transposed=True))
            self.up_norm.append(_bn_relu(planes[i]))
            skip = skips[7 - i]
            self.dec.append(nn.Sequential(*[BasicBlock(planes[i] + skip if j == 0 else planes[i], planes[i])
                                            for j in range(blocks[i])]))
            width = planes[i]
        self.out_channels = width

    def forward(self, x: SparseTensor) -> SparseTensor:
        x = self.stem(x)
        x = x.replace(self.stem_norm(x.feats))
        skips = [x]
        for down, norm, enc in zip(self.down, self.down_norm, self.enc):
            x = down(x)
            x = enc(x.replace(norm(x.feats)))
            skips.append(x)
        for up, norm, dec, skip in zip(self.up, self.up_norm, self.dec, reversed(skips[:-1])):
            x = up(x, like=skip)
            x = dec(x.replace(torch.cat([norm(x.feats), skip.feats], dim=1)))
        return x


def point_features(backbone: MinkUNet, batch: Batch) -> torch.Tensor:
    """Backbone features [N_points, C] of every point of a collated batch (its voxel's feature; many points
    share a voxel, so the gather is ``gather_rows``, whose gradient is the same every run)."""
    x = SparseTensor(batch.voxel_feats, batch.voxel_coords)
    return gather_rows(backbone(x).feats, batch.point_to_voxel)


class ProjectionHead(nn.Module):
    """1 layer: linear. L layers: (Linear -> BN -> ReLU) x (L - 1) -> Linear. Output L2-normalised."""

    def __init__(self, c_in: int, c_out: int, layers: int, hidden: int):
        super().__init__()
        mods, width = [], c_in
        for _ in range(layers - 1):
            mods += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
            width = hidden
        mods.append(nn.Linear(width, c_out))
        self.net = nn.Sequential(*mods)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.net(f), dim=1)


class Student(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = MinkUNet(cfg.arch, IN_CHANNELS)
        c = self.backbone.out_channels
        self.head = ProjectionHead(c, cfg.feature_dim, cfg.head_layers, cfg.head_hidden)
        self.occ_head = OccupancyHead(c, cfg.occ_hidden, cfg.occ_radius)

    def point_features(self, batch: Batch) -> torch.Tensor:
        return point_features(self.backbone, batch)

    def forward(self, batch: Batch, occupancy: bool = True) -> dict:
        """Projected features of the points with a teacher feature (when the batch has teacher features) and
        occupancy logits of the queries (with ``occupancy``).

        Everything that trains goes through here, so that DistributedDataParallel sees it."""
        feats = self.point_features(batch)
        out = {}
        if batch.valid is not None:
            out["proj"] = self.head(feats[batch.valid])
        if occupancy:
            require(batch, "queries", "nearest", purpose="the occupancy head")
            out["occ_logits"] = self.occ_head(feats, batch.xyz, batch.queries, batch.nearest)
        return out


class Segmenter(nn.Module):
    """``logits = Linear(BN(f))`` over the evaluation classes (nuScenes' 16 by default; a store's ``classes``
    when fine-tuning) on the backbone's point features f (as in ScaLR); the linear layer starts at zero."""

    def __init__(self, arch: str, num_classes: int = NUM_EVAL_CLASSES):
        super().__init__()
        self.backbone = MinkUNet(arch)
        c = self.backbone.out_channels
        self.norm = nn.BatchNorm1d(c)
        self.classifier = nn.Linear(c, num_classes)
        nn.init.zeros_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    def point_features(self, batch: Batch) -> torch.Tensor:
        return point_features(self.backbone, batch)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits [N_points, num_classes] for evaluation classes 1..num_classes."""
        return self.classifier(self.norm(self.point_features(batch)))

