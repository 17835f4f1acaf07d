"""Datasets in the layouts users already have, resolution views and paired augmentation."""

from medistill.data.datasets import PairedViewDataset, channel_stats
from medistill.data.io import list_images, load_image
from medistill.data.records import (
    UNLABELED,
    Sample,
    SampleList,
    read_manifest,
    scan_folders,
    scan_images,
)
from medistill.data.ssl_augment import SSLAugment
from medistill.data.transforms import Augment, ResolutionView, lanczos_resize

__all__ = [
    "UNLABELED",
    "Augment",
    "PairedViewDataset",
    "ResolutionView",
    "SSLAugment",
    "Sample",
    "SampleList",
    "channel_stats",
    "lanczos_resize",
    "list_images",
    "load_image",
    "read_manifest",
    "scan_folders",
    "scan_images",
]

# information-sparse views (More From Less, Farndale et al., 2023)
from medistill.data.sparse import (  # noqa: E402
    InstanceMapLookup,
    NucleiMaskView,
    SparseView,
    nuclear_mask_image,
    segment_nuclei,
)

__all__ += [
    "InstanceMapLookup",
    "NucleiMaskView",
    "SparseView",
    "nuclear_mask_image",
    "segment_nuclei",
]
