"""SMFA and bank search as CUDA kernels, compiled at run time, launched with cuda-python.

* ``smfa.cu`` / ``topk.cu``: the kernels (SMFA weights + pooling + L2 norm;
  exact inner-product top-K for machines without faiss-gpu).
* ``nvrtc``: compiles them with whichever installed NVRTC supports the GPU
  (NVRTC 13 dropped sm_72, so Xavier gets NVRTC 12) into a disk cache keyed
  by arch, NVRTC version and source hash.
* ``device``: driver, context, stream, buffers, launches, CUDA-event timing.
* ``smfa_gpu``: ``make_smfa_pooler(prefer)`` -> GPU pooler or the CPU path.
* ``emulate``: the same ``.cu`` built by g++ and run on the CPU (tests).
* ``cli``: ``python -m moduseg.runtime.cuda info|compile|bench|emulate-check``.

Nothing here imports the driver until a device is opened, so the package
imports on machines without a GPU.
"""
