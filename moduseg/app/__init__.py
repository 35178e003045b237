"""The segment application: input sources (``sources``), the frame loop
(``loop``), the run writer with its staging and commit (``run``) and the
output sinks (``sinks``, ``report``) behind ``moduseg segment`` (``cli``).

It sits above the runtime: the runtime builds and runs the segmenter on one
image; nothing in it imports this package.
"""
