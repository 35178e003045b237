"""Serving on NVIDIA Triton Inference Server: model repository, server, client.

``repository`` writes the model repository, ``triton_models`` holds the
Python-backend models it refers to (they run the package's own stages),
``server`` starts and stops ``tritonserver``, ``client`` talks to it.
"""
