"""Information-sparse views for "More From Less" (Farndale, Insall & Yuan, 2023).

The paper distils knowledge from an information-DENSE input into a model of an
information-SPARSE input (section 2.1, Fig. 1). It builds two kinds of sparse data:

* Multi-magnification distillation (section 2.1, Table 1): the image downsampled to k x k px
  (k = 112, 56, 28, 14, 7 for 224-px patches) and resized back up to the input size with
  linear interpolation, so both branches take the same input size -> :class:`SparseView`.
* Tissue-nuclei distillation (section 2.1, Fig. 1): only the mask of the nuclei is kept,
  coloured by nucleus type (HoVer-Net in the paper; Background, Neoplastic, Inflammatory,
  Connective, Dead, Non-Neoplastic Epithelial) and given 3 channels ->
  :func:`nuclear_mask_image` / :class:`NucleiMaskView`. For datasets without nucleus
  annotations or a HoVer-Net run, :func:`segment_nuclei` is a classical stand-in (colour
  deconvolution + Otsu + watershed) that finds nuclei but not their types.

Views here follow :class:`~medistill.data.transforms.ResolutionView`'s protocol: a
deterministic ``__call__(image: (H, W, 3) uint8) -> (h, w, 3) uint8`` and ``size_for(h, w)``,
so they can be used in :class:`~medistill.data.PairedViewDataset` (which calls the view on the
centre-cropped original and caches the result per image) next to dense views.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medistill.data.datasets import center_crop_or_pad
from medistill.data.io import load_image
from medistill.data.transforms import lanczos_resize
from medistill.errors import DataError, RecipeError

# ---------------------------------------------------------------------------------------------
# Multi-magnification: downsample to k x k, resize back up with linear interpolation
# ---------------------------------------------------------------------------------------------


def _as_size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 1 or w < 1:
        raise RecipeError(f"view size must be >= 1 px, got {size}")
    return int(h), int(w)


@dataclass(frozen=True)
class SparseView:
    """An information-sparse view: downsample to ``k`` px, resize back up bilinearly.

    "The downsampled images are always resized to 224 x 224 px using linear interpolation"
    (Farndale et al., 2023, section 2.1); ``k`` = 112, 56, 28, 14, 7 for 224-px inputs
    (Table 1). The downsampling is one Lanczos resize of the ORIGINAL image
    (:func:`~medistill.data.transforms.lanczos_resize`), the upsampling is bilinear.

    Args:
        k: side of the downsampled image. Square inputs go to k x k px; a non-square input
            keeps its aspect ratio, its SHORTER side becoming ``k``. ``k`` larger than the
            image means no downsampling (information is never added).
        size: output size, an int (square) or (H, W); None = the input's size. E.g.
            ``SparseView(7, size=56)`` pairs with a 56-px dense view.

    The view is deterministic (same image -> same array), so PairedViewDataset may cache it.
    """

    k: int
    size: int | tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int | np.integer) or self.k < 1:
            raise RecipeError(f"SparseView.k must be an integer >= 1, got {self.k!r}")
        _as_size(self.size)

    def sparse_size(self, height: int, width: int) -> tuple[int, int]:
        """Size of the downsampled (information-carrying) image for an input of (H, W)."""
        scale = self.k / min(height, width)
        if scale >= 1.0:
            return height, width
        return max(1, round(height * scale)), max(1, round(width * scale))

    def size_for(self, height: int, width: int) -> tuple[int, int]:
        """Output size for an input of (H, W)."""
        return _as_size(self.size) or (height, width)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        small = lanczos_resize(image, self.sparse_size(h, w))
        out_h, out_w = self.size_for(h, w)
        if small.shape[:2] == (out_h, out_w):
            return small
        return np.asarray(Image.fromarray(small).resize((out_w, out_h), Image.Resampling.BILINEAR))


# ---------------------------------------------------------------------------------------------
# Tissue-nuclei: nuclear masks coloured by type
# ---------------------------------------------------------------------------------------------

#: HoVer-Net's PanNuke type ids (the paper's types, section 2.1); 0 = background / no label.
NUCLEUS_TYPES = ("background", "neoplastic", "inflammatory", "connective", "dead",
                 "non_neoplastic_epithelial")

#: One RGB colour per type id, HoVer-Net's own PanNuke colours (``type_info.json``).
TYPE_PALETTE = np.array(
    [
        [0, 0, 0],  # 0 background
        [255, 0, 0],  # 1 neoplastic
        [0, 255, 0],  # 2 inflammatory
        [0, 0, 255],  # 3 connective
        [255, 255, 0],  # 4 dead
        [255, 165, 0],  # 5 non-neoplastic epithelial
    ],
    dtype=np.uint8,
)

#: The paper's literal form: a 1-channel type mask repeated 3 times ("We repeat these 1D masks
#: 3 times along channel 3", section 2.1): grey level = type id scaled to 0..255.
GRAY_PALETTE = np.repeat(np.round(np.arange(6) * 255 / 5).astype(np.uint8)[:, None], 3, axis=1)

#: Colour of every nucleus when no type map is given.
UNTYPED_COLOUR = (255, 255, 255)


def _instance_types(
    instance_map: np.ndarray, type_map: np.ndarray | Mapping[int, int]
) -> np.ndarray:
    """Type id of every instance id (index = instance id), by majority vote of its pixels."""
    n = int(instance_map.max()) + 1
    types = np.zeros(n, dtype=np.int64)
    if isinstance(type_map, Mapping):
        for inst, t in type_map.items():
            if 0 < int(inst) < n:
                types[int(inst)] = int(t)
        return types
    type_map = np.asarray(type_map)
    if type_map.shape != instance_map.shape:
        raise DataError(
            f"type map shape {type_map.shape} differs from instance map shape "
            f"{instance_map.shape}"
        )
    if type_map.min() < 0:
        raise DataError("type map has negative type ids")
    n_types = int(type_map.max()) + 1
    fg = instance_map > 0
    votes = np.bincount(
        instance_map[fg].astype(np.int64) * n_types + type_map[fg].astype(np.int64),
        minlength=n * n_types,
    ).reshape(n, n_types)
    types = votes.argmax(1)
    return types


def nuclear_mask_image(
    instance_map: np.ndarray,
    type_map: np.ndarray | Mapping[int, int] | None = None,
    palette: np.ndarray | None = None,
) -> np.ndarray:
    """A nuclear mask as a 3-channel image: nuclei coloured by type, background black.

    Farndale et al. (2023), section 2.1, "Tissue-Nuclei Distillation": only the mask of the
    nuclei is retained, coloured by the nucleus types, with 3 channels so both branches take
    the same input.

    Args:
        instance_map: (H, W) integer instance ids, 0 = background.
        type_map: per-pixel (H, W) type ids (each nucleus takes the majority type of its
            pixels, as HoVer-Net assigns one type per instance), or a mapping
            ``instance id -> type id``. None: every nucleus gets :data:`UNTYPED_COLOUR`.
        palette: (n_types, 3) uint8 colours indexed by type id (row 0 = background);
            default :data:`TYPE_PALETTE`. :data:`GRAY_PALETTE` gives the paper's repeated
            1-channel mask.

    Returns:
        (H, W, 3) uint8. Nuclei of type 0 (unlabelled) get ``palette[0]`` (black by default).
    """
    instance_map = np.asarray(instance_map)
    if instance_map.ndim != 2:
        raise DataError(f"instance map must be 2-D (H, W), got shape {instance_map.shape}")
    if instance_map.size and instance_map.min() < 0:
        raise DataError("instance map has negative ids")
    palette = TYPE_PALETTE if palette is None else np.asarray(palette)
    if palette.ndim != 2 or palette.shape[1] != 3:
        raise RecipeError(f"palette must have shape (n_types, 3), got {palette.shape}")
    palette = palette.astype(np.uint8)
    out = np.zeros((*instance_map.shape, 3), dtype=np.uint8)
    fg = instance_map > 0
    if type_map is None:
        out[fg] = UNTYPED_COLOUR
        return out
    types = _instance_types(instance_map, type_map)
    if types.max(initial=0) >= len(palette):
        raise DataError(
            f"type id {int(types.max())} has no colour in a palette of {len(palette)} types"
        )
    out[fg] = palette[types[instance_map[fg].astype(np.int64)]]
    return out


def _fill_small_holes(mask: np.ndarray, max_area: int) -> np.ndarray:
    """Fill background components of ``mask`` smaller than ``max_area`` px not on the border."""
    from scipy import ndimage as ndi

    if max_area <= 0:
        return mask
    holes, n = ndi.label(~mask)
    if n == 0:
        return mask
    sizes = np.bincount(holes.ravel())
    border = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
    fill = sizes < max_area
    fill[0] = False
    fill[border] = False
    return mask | fill[holes]


def segment_nuclei(
    image: np.ndarray,
    sigma: float = 1.0,
    min_size: int = 20,
    min_distance: int = 6,
    max_hole: int = 100,
    threshold: float | None = None,
) -> np.ndarray:
    """Nuclei instance map of an H&E image by a classical pipeline (no training).

    A stand-in for HoVer-Net (which the paper uses, section 2.1) on datasets with neither
    nucleus masks nor a HoVer-Net run; it finds nuclei, not their types:

    1. colour deconvolution (``skimage.color.rgb2hed``, Ruifrok & Johnston): the haematoxylin
       optical density, Gaussian-smoothed with ``sigma``;
    2. foreground = density > Otsu's threshold (or ``threshold``); objects smaller than
       ``min_size`` px removed, holes smaller than ``max_hole`` px filled;
    3. touching nuclei split by a watershed of the negated distance transform, one marker per
       distance peak (``peak_local_max`` at least ``min_distance`` px apart).

    Lengths are in pixels; the defaults suit ~0.5 microns per pixel (20x, e.g. the paper's
    224-px Kather patches). At 40x (0.25 mpp) double ``sigma`` and ``min_distance`` and
    quadruple ``min_size`` and ``max_hole``. Otsu always splits the image in two, so a patch
    without nuclei (adipose, background) still yields a few faint objects unless a fixed
    ``threshold`` is given.

    Args:
        image: (H, W, 3) uint8 RGB.

    Returns:
        (H, W) int32 instance ids, 0 = background, 1..N = nuclei.
    """
    from scipy import ndimage as ndi
    from skimage.color import rgb2hed
    from skimage.feature import peak_local_max
    from skimage.filters import threshold_otsu
    from skimage.segmentation import watershed

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise DataError(f"segment_nuclei needs an (H, W, 3) RGB image, got shape {image.shape}")
    haematoxylin = rgb2hed(image)[..., 0]
    if sigma > 0:
        haematoxylin = ndi.gaussian_filter(haematoxylin, sigma)
    empty = np.zeros(image.shape[:2], dtype=np.int32)
    if threshold is None:
        if np.ptp(haematoxylin) < 1e-8:  # flat image: Otsu is undefined
            return empty
        threshold = threshold_otsu(haematoxylin)
    foreground = haematoxylin > threshold
    components, _ = ndi.label(foreground)
    keep = np.bincount(components.ravel()) >= min_size
    keep[0] = False
    foreground = _fill_small_holes(keep[components], max_hole)
    if not foreground.any():
        return empty
    distance = ndi.distance_transform_edt(foreground)
    components, _ = ndi.label(foreground)
    peaks = peak_local_max(
        distance, min_distance=max(1, int(min_distance)), labels=components, exclude_border=False
    )
    markers = np.zeros(image.shape[:2], dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    # components too small or flat to hold a peak keep one marker at their deepest pixel
    unmarked = np.setdiff1d(np.unique(components[foreground]), components[tuple(peaks.T)])
    if len(unmarked):
        centres = ndi.maximum_position(distance, components, unmarked)
        for j, (y, x) in enumerate(centres):
            markers[y, x] = len(peaks) + 1 + j
    return watershed(-distance, markers, mask=foreground).astype(np.int32)


#: What an instance loader returns for an image: an instance map, or (instance map, type map
#: or {instance id: type id}), or None when it has no annotation for that image.
InstanceMaps = np.ndarray | tuple[np.ndarray, Any] | None


def image_key(image: np.ndarray) -> str:
    """A content hash of an image array (shape, dtype and pixels)."""
    image = np.ascontiguousarray(image)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{image.shape}{image.dtype}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def _read_map(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"mask file not found: {path}")
    if path.suffix.lower() == ".npy":
        array = np.load(path)
    else:
        try:
            with Image.open(path) as im:
                array = np.asarray(im)
        except OSError as e:
            raise DataError(f"cannot read mask {path}: {e}") from None
    if array.ndim != 2:
        raise DataError(f"mask {path} must be a 2-D label image, got shape {array.shape}")
    return array


def _crop_map(array: np.ndarray, size: int | None) -> np.ndarray:
    return center_crop_or_pad(array[..., None], size)[..., 0] if size else array


class InstanceMapLookup:
    """Instance (and type) maps of known images, found by the image's pixel content.

    A view only receives the image array (PairedViewDataset calls ``view(original)``), so
    annotations are matched by a hash of the pixels. Build it with the same ``image_size`` as
    the dataset so that images and maps are centre-cropped alike.

    Example::

        lookup = InstanceMapLookup.from_files(
            [(img_path, label_path) for ...], image_size=224)
        view = NucleiMaskView(instance_loader=lookup)
    """

    def __init__(self, image_size: int | None = None) -> None:
        self.image_size = image_size
        self._entries: dict[str, tuple[Any, Any]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, image: np.ndarray, instance_map, type_map=None) -> None:
        """Register maps (arrays, or file paths read lazily) for an (uncropped) image."""
        if self.image_size:
            image = center_crop_or_pad(image, self.image_size)
        self._entries[image_key(image)] = (instance_map, type_map)

    @classmethod
    def from_files(
        cls, items: Iterable[tuple], image_size: int | None = None
    ) -> InstanceMapLookup:
        """From ``(image_path, instance_map_path[, type_map_path])`` tuples.

        Maps are label images (e.g. uint16 PNG, 0 = background) or ``.npy`` arrays; they are
        read when first needed.
        """
        lookup = cls(image_size)
        for item in items:
            if len(item) not in (2, 3):
                raise DataError(f"expected (image, instances[, types]) paths, got {item!r}")
            image_path, inst_path, *rest = item
            lookup.add(load_image(image_path), Path(inst_path), Path(rest[0]) if rest else None)
        return lookup

    def _load(self, value):
        if value is None or isinstance(value, Mapping):
            return value
        array = _read_map(value) if isinstance(value, str | Path) else np.asarray(value)
        return _crop_map(array, self.image_size)

    def __call__(self, image: np.ndarray) -> InstanceMaps:
        entry = self._entries.get(image_key(image))
        if entry is None:
            return None
        return self._load(entry[0]), self._load(entry[1])


class NucleiMaskView:
    """The nuclear mask of an image as a 3-channel image (the paper's sparse "mask" input).

    Farndale et al. (2023), section 2.1, "Tissue-Nuclei Distillation": image/mask pairs are
    asymmetric pairs, mask/mask pairs symmetric ones.

    Args:
        instance_loader: ``loader(image) -> instance map | (instance map, types) | None``
            for images that come with nuclei annotations (e.g. an :class:`InstanceMapLookup`
            or a HoVer-Net output reader); None, or a None result, falls back to
            :func:`segment_nuclei` (untyped: all nuclei one colour).
        palette: colours per type id (default :data:`TYPE_PALETTE`).
        segment_kwargs: keyword arguments for :func:`segment_nuclei`.
    """

    def __init__(
        self,
        instance_loader: Callable[[np.ndarray], InstanceMaps] | None = None,
        palette: np.ndarray | None = None,
        segment_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.instance_loader = instance_loader
        self.palette = palette
        self.segment_kwargs = dict(segment_kwargs or {})

    def __repr__(self) -> str:
        return (
            f"NucleiMaskView(instance_loader={self.instance_loader!r}, "
            f"segment_kwargs={self.segment_kwargs!r})"
        )

    def size_for(self, height: int, width: int) -> tuple[int, int]:
        return height, width

    def instance_maps(self, image: np.ndarray) -> tuple[np.ndarray, Any]:
        """(instance map, type map or None) of an image: annotated if available, else found."""
        found = self.instance_loader(image) if self.instance_loader is not None else None
        if found is None:
            return segment_nuclei(image, **self.segment_kwargs), None
        instances, types = found if isinstance(found, tuple) else (found, None)
        instances = np.asarray(instances)
        if instances.shape != image.shape[:2]:
            raise DataError(
                f"instance map shape {instances.shape} does not match the image "
                f"{image.shape[:2]}"
            )
        return instances, types

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return nuclear_mask_image(*self.instance_maps(image), palette=self.palette)
