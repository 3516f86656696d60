"""How close is the embedding an augmented patch takes from the cache to the online embedding of that patch?

    python benchmarks/cache_fidelity.py PREPROCESSED_DATASET_DIR [--samples 16] [--cases 8] [--encoder litemedsam]

PREPROCESSED_DATASET_DIR is a dataset folder nnUNetv2_plan_and_preprocess wrote (2d configuration). A few cases are
encoded into a cache in a temporary folder; then nnU-Net's own data loader draws patches (foreground oversampling as
nnU-Net sets it) under one augmentation at a time, and for each patch the cached embedding (sampled through the same
augmentation) is compared with the encoder's embedding of the augmented patch, both at the fusion skip's resolution:
cosine similarity over the 256 channels, averaged over the cells. Rows:

* crop: nnU-Net's random crop only (the encoder sees the slice in the cache, the patch online);
* mirror: the crop, mirrored left-right;
* rotation: the crop, rotated by nnU-Net's rotation range for the plans;
* scaling: the crop, scaled by nnU-Net's range (0.7-1.4);
* nnU-Net pipeline: nnU-Net's full training augmentation, intensity transforms included (the cache never sees
  those; the online encoder does).

Control: each patch is drawn twice from the same seed, the second time with the cache read where the patch's pixels
were before the spatial augmentation (the crop only): what a cache that ignored rotation, scaling and mirroring would
deliver. Where the warp is worth its while, the warped cache is closer to the online embedding than this control.

``--mirrored-views`` caches every slice mirrored too (the ``_CachedMirrored`` trainers). Prints a markdown table
(median, quartiles, minimum per row; the control's median and how often the warped cache beats it). Runs on the CPU.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

PLANS = "nnUNetPlans"
CONFIGURATION = "2d"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preprocessed", type=Path, help="nnUNet_preprocessed/DatasetXXX_Name")
    parser.add_argument("--samples", type=int, default=16, help="patches per augmentation row")
    parser.add_argument("--cases", type=int, default=8, help="cases encoded into the cache")
    parser.add_argument("--encoder", default="litemedsam", choices=["litemedsam", "mobilesam"])
    parser.add_argument("--mirrored-views", action="store_true",
                        help="cache each slice mirrored too (4 views, as nnSAMTrainer_*_CachedMirrored)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    os.environ.setdefault("nnUNet_preprocessed", str(args.preprocessed.parent))
    os.environ.setdefault("nnUNet_raw", str(args.preprocessed.parent))
    os.environ.setdefault("nnUNet_results", tempfile.gettempdir())

    import numpy as np
    import torch
    import torch.nn.functional as F
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
    from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from tqdm import tqdm

    from nnsam.cache.data_loader import COORDINATES_KEY, CachedEmbeddingDataLoader
    from nnsam.cache.store import CacheKey, EmbeddingCache
    from nnsam.networks.build_encoder import load_pretrained_encoder_weights
    from nnsam.networks.build_nnsam import build_nnsam_network
    from nnsam.seeding import seed_everything

    class MirrorLeftRight(MirrorTransform):
        def get_parameters(self, **data_dict) -> dict:
            return {"axes": [1]}

    class CropOnlyCoordinates:
        """The transforms, then the sample's coordinates put back as they were before them (centred on the output,
        as nnU-Net's spatial transform crops when it does not rotate or scale): the cache read without the warp."""

        def __init__(self, transforms):
            self.transforms = transforms

        def __call__(self, **sample):
            before = sample[COORDINATES_KEY]
            sample = self.transforms(**sample)
            h, w = sample["image"].shape[-2:]
            y0, x0 = (before.shape[-2] - h) // 2, (before.shape[-1] - w) // 2
            sample[COORDINATES_KEY] = before[..., y0:y0 + h, x0:x0 + w]
            return sample

    def seeded_sample(loader, seed: int) -> dict:
        seed_everything(seed)
        return loader.generate_train_batch()

    plans_manager = PlansManager(load_json(args.preprocessed / f"{PLANS}.json"))
    dataset_json = load_json(args.preprocessed / "dataset.json")
    configuration = plans_manager.get_configuration(CONFIGURATION)
    label_manager = plans_manager.get_label_manager(dataset_json)
    patch = tuple(configuration.patch_size)
    network = build_nnsam_network(configuration, len(dataset_json["channel_names"]),
                                  label_manager.num_segmentation_heads, encoder_name=args.encoder)
    load_pretrained_encoder_weights(network.image_encoder)
    network.eval()

    folder = args.preprocessed / configuration.data_identifier
    dataset_class = infer_dataset_class(str(folder))
    identifiers = sorted(dataset_class(str(folder)).identifiers)
    rng = np.random.default_rng(args.seed)
    chosen = sorted(rng.choice(identifiers, size=min(args.cases, len(identifiers)), replace=False).tolist())
    dataset = dataset_class(str(folder), chosen)

    # nnU-Net's augmentation settings for these plans (rotation range, initial patch size), from its own trainer.
    trainer = nnUNetTrainer({**plans_manager.plans, "continue_training": False}, CONFIGURATION, 0, dataset_json,
                            device=torch.device("cpu"))
    rotation, _, initial_patch, mirror_axes = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()

    def spatial(**kwargs):
        return SpatialTransform(patch, 0, False, p_elastic_deform=0, bg_style_seg_sampling=False,
                                border_mode_seg="constant", padding_value_seg=-1, **kwargs)

    rows = {
        "crop": spatial(),
        "mirror (left-right)": ComposeTransforms([spatial(), MirrorLeftRight(allowed_axes=(1,))]),
        "rotation": spatial(p_rotation=1, rotation=rotation),
        "scaling (0.7-1.4)": spatial(p_scaling=1, scaling=(0.7, 1.4), p_synchronize_scaling_across_axes=1),
        "nnU-Net pipeline": trainer.get_training_transforms(
            patch, rotation, None, mirror_axes, False, use_mask_for_norm=configuration.use_mask_for_norm,
            foreground_labels=label_manager.foreground_labels),
    }

    with tempfile.TemporaryDirectory(prefix="nnsam_fidelity_") as tmp:
        cache = EmbeddingCache(tmp, CacheKey.for_encoder(network.image_encoder, patch, args.mirrored_views))
        cache.build(dataset, chosen, network.image_encoder, torch.device("cpu"))
        cells = network.fusion_cells(patch)
        results = {}
        for name, transforms in rows.items():
            loaders = [CachedEmbeddingDataLoader(dataset, 1, initial_patch, patch, label_manager,
                                                 oversample_foreground_percent=trainer.oversample_foreground_percent,
                                                 transforms=t, embedding_cache=cache, fusion_cells=cells)
                       for t in (transforms, CropOnlyCoordinates(transforms))]
            cosines, controls = [], []
            for i in tqdm(range(args.samples), desc=name):
                batch, control = (seeded_sample(loader, args.seed * 100_003 + i) for loader in loaders)
                assert torch.equal(batch["data"], control["data"]), "the control drew another sample"
                with torch.no_grad():
                    online = F.interpolate(network.image_encoder(batch["data"]), size=cells, mode="bilinear",
                                           align_corners=False)
                cosines.append(F.cosine_similarity(batch["embedding"], online, dim=1).mean().item())
                controls.append(F.cosine_similarity(control["embedding"], online, dim=1).mean().item())
            results[name] = (np.array(cosines), np.array(controls))

    views = "4 views (mirrored)" if args.mirrored_views else "1 view"
    print(f"\n## Cached vs online embedding, {args.preprocessed.name} ({args.encoder}, {views}, patch {patch}, "
          f"{len(chosen)} cases, {args.samples} patches per row, seed {args.seed})")
    print("| augmentation | median cosine | quartiles | min | control (no warp): median | warped closer on |")
    print("|---|---|---|---|---|---|")
    for name, (values, controls) in results.items():
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        moved = np.abs(values - controls) > 1e-4  # patches the warp changed (not those the crop alone describes)
        closer = f"{int((values[moved] > controls[moved]).sum())} of {int(moved.sum())}"
        print(f"| {name} | {median:.3f} | {q1:.3f}-{q3:.3f} | {values.min():.3f} | {np.median(controls):.3f} | "
              f"{closer} |")


if __name__ == "__main__":
    main()
