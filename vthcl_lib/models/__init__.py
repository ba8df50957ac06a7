"""The slow and fast 3D-ResNet encoders and their projection heads (notebook ``02_slow_fast_encoders``).

``build_encoder(depth, pathway, **overrides)`` returns a :class:`ResNet3D` whose ``forward`` gives
the res2..res5 feature maps; ``build_heads`` makes one projection head per contrasted level;
``stage_costs`` tabulates shapes, parameters and FLOPs per stage.
"""
from vthcl_lib.models.heads import LEVELS, ProjectionHead, build_heads, heads_from_config, levels_for
from vthcl_lib.models.profile import stage_costs
from vthcl_lib.models.resnet3d import ResNet3D, build_encoder, encoder_from_config

__all__ = [
    "LEVELS",
    "ProjectionHead",
    "ResNet3D",
    "build_encoder",
    "build_heads",
    "encoder_from_config",
    "heads_from_config",
    "levels_for",
    "stage_costs",
]
