"""Training side of MVNet: data (starter corpus, Musart reader, feature cache) and the training stages.

Nothing here is imported by the app at run time; `mvnet` never imports `train`.
"""
