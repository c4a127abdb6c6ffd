"""FlexTCN on permuted MNIST (pMNIST): sMNIST with one fixed pixel permutation.

As :mod:`convjax.configs.smnist_flextcn` (horizon 784 = the sequence length), with
``data.sequence = "permute"``. The paper reports 98.72 %. A preset, not a verified
reproduction.

    convjax train --config=pmnist_flextcn --config.data.data_dir=~/tensorflow_datasets
"""

from __future__ import annotations

import ml_collections

from convjax.configs import smnist_flextcn


def get_config() -> ml_collections.ConfigDict:
    """FlexTCN on pMNIST, horizon 784; otherwise the sMNIST preset."""
    c = smnist_flextcn.get_config()
    c.workdir = "runs/pmnist_flextcn"
    c.data.sequence = "permute"
    return c
