"""The embedding cache: each training slice is encoded once, and every augmented patch takes its embedding from it.

``frames``: the frame the encoder sees (the slice, padded to at least the patch size as nnU-Net's predictor pads it)
and how an augmented patch finds its embedding in its slice's (``sample_at_cells``); ``store``: the cache on disk (keys, validation, build); ``data_loader``: nnU-Net's data loader, delivering that
embedding with every sample.
"""
