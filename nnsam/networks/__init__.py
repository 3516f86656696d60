from nnsam.networks.build_encoder import ENCODER_REGISTRY, EncoderSpec, build_image_encoder, get_encoder_spec
from nnsam.networks.build_nnsam import build_nnsam_network
from nnsam.networks.fusion import SAMFusedUNet
from nnsam.networks.image_encoder import FrozenImageEncoder

__all__ = ["ENCODER_REGISTRY", "EncoderSpec", "FrozenImageEncoder", "SAMFusedUNet", "build_image_encoder",
           "build_nnsam_network", "get_encoder_spec"]
