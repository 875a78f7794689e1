"""Cinescribe's model side: requests, the model catalogue, resident models and the GPU worker.

Nothing here imports gradio; importing any module has no side effects and never touches CUDA.
"""
