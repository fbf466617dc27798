"""InfiniteYou model code for ComfyUI: InfuseNet network, loaders, identity projection and patch.

Kept free of heavy imports so that the pack (and its node layer) can import submodules lazily.
"""
