"""The student's architecture against its published table."""

from __future__ import annotations

from trainer.batch import IN_CHANNELS
from trainer.config import ARCHS
from trainer.model import BasicBlock, MinkUNet


def test_minkunet34_has_the_published_planes_and_blocks():
    """MinkUNet34 (MinkowskiEngine's MinkUNet34C, used by SLidR, ScaLR and CleverDistiller): BasicBlocks
    (2, 3, 4, 6) down and (2, 2, 2, 2) up, planes (32, 64, 128, 256) and (256, 128, 96, 96), a 32-plane
    stem, 96 output channels."""
    assert ARCHS["minkunet34"] == ((2, 3, 4, 6, 2, 2, 2, 2), (32, 64, 128, 256, 256, 128, 96, 96))
    net = MinkUNet("minkunet34")
    assert net.stem.weight.shape == (5 ** 3, IN_CHANNELS, 32) and net.out_channels == 96
    stages = list(net.enc) + list(net.dec)
    assert [len(stage) for stage in stages] == [2, 3, 4, 6, 2, 2, 2, 2]
    assert all(isinstance(block, BasicBlock) for stage in stages for block in stage)
    assert [stage[-1].conv2.weight.shape[2] for stage in stages] == [32, 64, 128, 256, 256, 128, 96, 96]
    # each decoder stage takes the upsampled features and the encoder's skip at that scale
    skips = [128, 64, 32, 32]
    ups = [256, 128, 96, 96]
    assert [stage[0].conv1.weight.shape[1] for stage in net.dec] == [u + s for u, s in zip(ups, skips)]
    assert [d.weight.shape[0] for d in net.down] == [8] * 4 and [u.weight.shape[0] for u in net.up] == [8] * 4
    # 3x3x3 convolutions in every block
    assert all(block.conv1.weight.shape[0] == 27 for stage in stages for block in stage)
