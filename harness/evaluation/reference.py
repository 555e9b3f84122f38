"""ADM reference batches (.npz): read one as a gFID/sFID reference, build one from a dataset split, and
score a samples .npz against a reference the way the guided-diffusion evaluator does.

Format (openai/guided-diffusion evaluations): ``arr_0``, N x H x W x 3 uint8 images (the reference batch,
10,000 images in the published ImageNet files), and optionally the statistics of the whole dataset:
``mu``/``sigma`` (pool3 mean and covariance) and ``mu_s``/``sigma_s`` (of sFID's spatial features). When
the statistics are present FID and sFID use them; precision and recall always use the images' features.
``vqbench reference build`` writes the same format (statistics in float64, of ``--n-stats`` images).
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from harness.core.errors import VQBenchError
from harness.core.io import file_error
from harness.evaluation.features import FeatureInput, InceptionFeatures, extractor_for, shared_extractor
from harness.evaluation.metrics.fidelity import ReferenceSet, feature_stats
from harness.evaluation.protocols import check_reference, get_protocol

STAT_KEYS = ("mu", "sigma", "mu_s", "sigma_s")


def _open_npz(path: Path, what: str):
    try:
        return np.load(Path(path), allow_pickle=False)
    except OSError as e:
        raise file_error(e, f"{what} {path}", "read") from None
    except (ValueError, zipfile.BadZipFile, EOFError) as e:
        raise VQBenchError(f"{what} {path} is not a readable .npz ({e}); give an ADM-format .npz "
                           "(arr_0: N x H x W x 3 uint8)") from None


def read_images(path: Path, what: str = "--reference") -> np.ndarray:
    """``arr_0`` of an ADM .npz, checked: N x H x W x 3 uint8 with N >= 2."""
    with _open_npz(path, what) as npz:
        if "arr_0" not in npz.files:
            raise VQBenchError(f"{what} {path} has no arr_0 (keys: {', '.join(npz.files) or 'none'}); an ADM .npz "
                               "stores its images as arr_0")
        try:
            images = npz["arr_0"]
        except ValueError as e:
            raise VQBenchError(f"{what} {path}: arr_0 cannot be read ({e})") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or len(images) < 2:
        raise VQBenchError(f"{what} {path}: arr_0 is {images.dtype} of shape {images.shape}; expected N x H x W x 3 "
                           "uint8 images with N >= 2")
    return images


def read_stats(path: Path, what: str = "--reference") -> dict[str, torch.Tensor] | None:
    """The reference statistics of an ADM .npz (all four keys), or None when it has none."""
    with _open_npz(path, what) as npz:
        present = [k for k in STAT_KEYS if k in npz.files]
        if not present:
            return None
        if len(present) != len(STAT_KEYS):
            raise VQBenchError(f"{what} {path} has {', '.join(present)} but not "
                               f"{', '.join(k for k in STAT_KEYS if k not in present)}; an ADM reference holds all "
                               "four statistics or none")
        stats = {k: torch.from_numpy(np.asarray(npz[k], dtype=np.float64)) for k in STAT_KEYS}
    for m, s in (("mu", "sigma"), ("mu_s", "sigma_s")):
        d = stats[m].shape[0]
        if stats[m].dim() != 1 or tuple(stats[s].shape) != (d, d):
            raise VQBenchError(f"{what} {path}: {m} has shape {tuple(stats[m].shape)} and {s} "
                               f"{tuple(stats[s].shape)}; expected D and D x D")
    return stats


def _as_model_input(images_hwc: np.ndarray) -> torch.Tensor:
    """uint8 N x H x W x 3 -> [-1, 1] N x 3 x H x W (the feature pass quantizes back to the same uint8)."""
    return torch.from_numpy(images_hwc).permute(0, 3, 1, 2).float() / 127.5 - 1


def image_features(images_hwc: np.ndarray, how: FeatureInput, device: str = "cpu",
                   batch_size: int = 64) -> InceptionFeatures:
    """Features of uint8 images in batches (ADM reads 64 at a time)."""
    extractor = extractor_for(how, device)
    return InceptionFeatures.cat([extractor.features(_as_model_input(images_hwc[i:i + batch_size]).to(device), how)
                                  for i in range(0, len(images_hwc), batch_size)])


def read_reference(path: Path, protocol: str, device: str = "cpu") -> ReferenceSet:
    """An ADM reference batch as the reference of ``protocol`` (one that accepts ``--reference``)."""
    fidelity = get_protocol(protocol)
    images = read_images(path)
    stats = read_stats(path)
    features = image_features(images, fidelity.feature_input, device)
    if stats is not None and stats["mu"].shape[0] != features.pool3.shape[1]:
        raise VQBenchError(f"--reference {path}: mu has {stats['mu'].shape[0]} dimensions, pool3 features "
                           f"{features.pool3.shape[1]}")
    return ReferenceSet(features, None if stats is None else (stats["mu"], stats["sigma"]),
                        None if stats is None else (stats["mu_s"], stats["sigma_s"]), source=str(path))


def build_reference(dataset: str, split: str, out: Path, *, n_images: int | None, n_stats: int | None,
                    resolution: int | None = None, device: str = "cpu", batch_size: int = 64,
                    progress: bool = False) -> tuple[int, int]:
    """Write an ADM reference batch of a dataset split: ``arr_0`` ``n_images`` of its images (uint8, grey
    repeated to RGB) and the statistics (pool3 and spatial, float64) of ``n_stats`` images (None: all),
    computed as the adm protocol computes features. N images of a split are the ones every vqbench
    evaluation of N images takes (the split's seeded subset, ``harness.data.datasets.subset_order``), so
    ``--reference`` built here equals evaluating against the split itself. Returns (images, stats images)."""
    from harness.data.datasets import open_dataset
    from harness.evaluation.generate import to_uint8_hwc, write_npz
    size = len(open_dataset(dataset, split, resolution=resolution))
    n_stats = size if n_stats is None else n_stats
    n_images = min(size, 10000) if n_images is None else n_images
    for name, n in (("--n-images", n_images), ("--n-stats", n_stats)):
        if not 2 <= n <= size:
            raise VQBenchError(f"{name} {n}: the {split} split of {dataset} has {size} images; give 2 to {size}")

    def batches(n: int, what: str):
        ds = open_dataset(dataset, split, resolution=resolution, n=n)
        starts = range(0, len(ds), batch_size)
        if progress:
            from tqdm.auto import tqdm
            starts = tqdm(starts, desc=f"{what} {dataset}/{split}", dynamic_ncols=True)
        for s in starts:
            yield to_uint8_hwc(ds.batch(torch.arange(s, min(s + batch_size, len(ds))))[0])

    images = np.concatenate(list(batches(n_images, "reference images")))
    how = get_protocol("adm").feature_input
    extractor = shared_extractor(device)
    # features of the uint8 images, as the file stores them
    feats = InceptionFeatures.cat([extractor.features(_as_model_input(u8).to(device), how)
                                   for u8 in batches(n_stats, "reference statistics")])
    mu, sigma = feature_stats(feats.pool3)
    mu_s, sigma_s = feature_stats(feats.spatial)
    write_npz(Path(out), arr_0=images, mu=mu.numpy(), sigma=sigma.numpy(), mu_s=mu_s.numpy(), sigma_s=sigma_s.numpy())
    return n_images, n_stats


def evaluate_npz(samples: Path, *, protocol: str, reference: Path | None = None, dataset: str | None = None,
                 split: str = "train", n_reference: int | None = None, metrics: tuple[str, ...] | None = None,
                 device: str = "cpu") -> dict[str, tuple[float, str]]:
    """Score a samples .npz (``arr_0``) against an ADM reference batch or a dataset split under ``protocol``:
    ``{value name: (value, reason)}``. Default metrics: every one the protocol defines."""
    from harness.evaluation.features import reference_features
    from harness.evaluation.metrics.fidelity import ALL_GENERATION_METRICS, check_generation_metrics, generation_fidelity
    fidelity = get_protocol(protocol)
    if metrics is None:
        metrics = tuple(m for m in ALL_GENERATION_METRICS if fidelity.defines(m))
    check_generation_metrics(metrics, fidelity)
    if reference is not None:
        check_reference(protocol, reference)
    if reference is not None and (dataset is not None or n_reference is not None):
        raise VQBenchError(f"--reference {reference} is the reference: leave out --dataset and --n-reference")
    images = read_images(samples, "samples")
    if reference is not None:
        ref = read_reference(reference, protocol, device)
    elif dataset is not None:
        h, w = images.shape[1:3]
        if h != w:
            raise VQBenchError(f"samples {samples}: {h} x {w} images; a dataset reference needs square images")
        ref = ReferenceSet(reference_features(dataset, split, resolution=h, n=n_reference, device=device,
                                              how=fidelity.feature_input), source=f"{dataset}/{split}")
    else:
        raise VQBenchError("give the reference: --reference FILE.npz or --dataset NAME")
    return generation_fidelity(image_features(images, fidelity.feature_input, device), ref, metrics, fidelity)
