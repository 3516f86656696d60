"""The 2d_temporal configuration: nnU-Net's 3D pipeline for clips, the planned 2D network per frame."""
import pytest
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from conftest import configuration
from nnsam.plans.temporal import TEMPORAL_CONFIGURATION, add_temporal_configuration, frame_configuration


def _plans() -> dict:
    two_d = configuration(5, (96, 80)).configuration
    three_d = {**configuration(5, (32, 96, 80), conv="Conv3d").configuration, "data_identifier": "nnUNetPlans_3d_fullres",
               "spacing": [1.0, 0.3, 0.3]}
    return {"dataset_name": "Dataset121_CAMUSSeq", "plans_name": "nnUNetPlans", "original_median_spacing_after_transp": [1, 1, 1],
            "original_median_shape_after_transp": [8, 96, 80], "image_reader_writer": "SimpleITKIO",
            "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2], "experiment_planner_used": "test",
            "label_manager": "LabelManager", "foreground_intensity_properties_per_channel": {},
            "configurations": {"2d": two_d, "3d_fullres": three_d}}


def test_temporal_configuration_reads_3d_clips_and_builds_the_2d_network():
    plans = add_temporal_configuration(_plans(), num_frames=4)
    temporal = PlansManager(plans).get_configuration(TEMPORAL_CONFIGURATION)
    assert temporal.patch_size == [4, 96, 80]
    assert temporal.data_identifier == "nnUNetPlans_3d_fullres"  # the 3d_fullres preprocessed data, time unresampled
    assert temporal.batch_size == 1  # the 2D plan's batch of 2 frames holds no whole clip of 4
    assert all(s[0] == 1 for s in temporal.pool_op_kernel_sizes)  # deep supervision: in-plane only
    assert temporal.network_arch_init_kwargs["conv_op"].endswith("Conv3d")
    frames = frame_configuration(temporal)
    two_d = PlansManager(plans).get_configuration("2d")
    assert frames.patch_size == two_d.patch_size
    assert frames.network_arch_init_kwargs == two_d.network_arch_init_kwargs
    assert "2d_temporal" not in _plans()["configurations"]  # the input plans are not modified


def test_unusable_plans_and_configurations_are_refused():
    plans = _plans()
    del plans["configurations"]["3d_fullres"]
    with pytest.raises(ValueError, match="no 3d_fullres.*-c 2d 3d_fullres"):
        add_temporal_configuration(plans)
    with pytest.raises(ValueError, match="Not a 2d_temporal configuration"):
        frame_configuration(PlansManager(_plans()).get_configuration("2d"))
