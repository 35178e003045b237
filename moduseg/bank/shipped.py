"""Which presets ship an embedded bank, and its file under ``moduseg/bank/data/``.

Data only (no imports), so the bank store and the run-time error messages can ask
without importing the bank builder.
"""

EMBEDDED_BANKS = {"default": "camvid-default.npz", "fast": "camvid-fast.npz",
                  "paper": "camvid-paper.npz"}
