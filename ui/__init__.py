"""Cinescribe's Gradio page. Never imports torch: everything on the device goes through the GPU worker."""
