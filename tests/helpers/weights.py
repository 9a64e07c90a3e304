"""Checks shared by the weight-transfer tests (models) and the ``i2p inflate`` command tests (cli)."""

import torch

from i2p.inflate import inflate_kernel, repeat_kernel


def assert_transferred(m3, sd2d, mode="copy", axis="y"):
    sd3 = m3.state_dict()
    torch.testing.assert_close(sd3["layer2.0.conv1.kernel"], inflate_kernel(sd2d["layer2.0.conv1.weight"], mode, axis))
    torch.testing.assert_close(sd3["layer2.0.downsample.0.kernel"], repeat_kernel(sd2d["layer2.0.downsample.0.weight"]))
    for k in ("running_mean", "running_var", "weight", "bias", "num_batches_tracked"):
        torch.testing.assert_close(sd3[f"layer3.0.bn2.{k}"], sd2d[f"layer3.0.bn2.{k}"])
