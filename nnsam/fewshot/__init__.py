"""Few-shot experiments: nnU-Net vs nnSAM trained on N labelled cases, scored on one fixed held-out test set.

Entry points: ``nnsam fewshot`` (see ``nnsam.fewshot.command``) and, per training run,
``python -m nnsam.fewshot.runner train``.
"""
