"""The nnSAM trainers: ``nnSAMTrainer`` (nnSAMTrainer.py; trains from the embedding cache, embedding_cache.py) and
its variants, one folder per concern (``variants/encoder``, ``input``, ``attention``, ``temporal``,
``embedding_cache``), one small file per idea."""
from nnsam.trainers.nnSAMTrainer import nnSAMTrainer
from nnsam.trainers.variants.attention.nnSAMTrainer_LIA import nnSAMTrainer_LIA, nnSAMTrainer_LiteMedSAM_LIA
from nnsam.trainers.variants.embedding_cache.nnSAMTrainer_Cached import nnSAMTrainer_Cached, nnSAMTrainer_LiteMedSAM_Cached
from nnsam.trainers.variants.embedding_cache.nnSAMTrainer_CachedMirrored import (
    nnSAMTrainer_CachedMirrored,
    nnSAMTrainer_LiteMedSAM_CachedMirrored,
)
from nnsam.trainers.variants.embedding_cache.nnSAMTrainer_Online import nnSAMTrainer_LiteMedSAM_Online, nnSAMTrainer_Online
from nnsam.trainers.variants.encoder.nnSAMTrainer_LiteMedSAM import nnSAMTrainer_LiteMedSAM
from nnsam.trainers.variants.input.nnSAMTrainer_ZScoreInput import nnSAMTrainer_ZScoreInput
from nnsam.trainers.variants.temporal.nnSAMTrainer_TRA import (
    nnSAMTrainer_LiteMedSAM_TRA,
    nnSAMTrainer_LiteMedSAM_TRA_LIA,
    nnSAMTrainer_TRA,
    nnSAMTrainer_TRA_LIA,
)
from nnsam.trainers.variants.temporal.nnSAMTrainer_TRA_Online import (
    nnSAMTrainer_LiteMedSAM_TRA_LIA_Online,
    nnSAMTrainer_LiteMedSAM_TRA_Online,
    nnSAMTrainer_TRA_LIA_Online,
    nnSAMTrainer_TRA_Online,
)

__all__ = ["nnSAMTrainer", "nnSAMTrainer_Cached", "nnSAMTrainer_CachedMirrored", "nnSAMTrainer_LIA",
           "nnSAMTrainer_LiteMedSAM", "nnSAMTrainer_LiteMedSAM_Cached", "nnSAMTrainer_LiteMedSAM_CachedMirrored",
           "nnSAMTrainer_LiteMedSAM_LIA", "nnSAMTrainer_LiteMedSAM_Online", "nnSAMTrainer_LiteMedSAM_TRA",
           "nnSAMTrainer_LiteMedSAM_TRA_LIA", "nnSAMTrainer_LiteMedSAM_TRA_LIA_Online",
           "nnSAMTrainer_LiteMedSAM_TRA_Online", "nnSAMTrainer_Online", "nnSAMTrainer_TRA", "nnSAMTrainer_TRA_LIA",
           "nnSAMTrainer_TRA_LIA_Online", "nnSAMTrainer_TRA_Online", "nnSAMTrainer_ZScoreInput"]
