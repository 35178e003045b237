"""Which presets ship an embedded bank, and its file under ``moduseg/bank/data/``.

Low in the import graph (the configuration's preset names only, imported when a
hint is asked for), so the bank store and the run-time error messages can ask
without importing the bank package.
"""

EMBEDDED_BANKS = {"default": "camvid-default.npz", "fast": "camvid-fast.npz",
                  "paper": "camvid-paper.npz"}
# presets that ship no bank, and why: a run with one of them needs --bank
NO_EMBEDDED_BANK = {
    "accurate": "its CamVid bank (47,513 vectors of 256 dimensions) is beyond the package's "
                "bank budget"}


def rebuild_hint(bank_config: dict | None, preset: str) -> str:
    """How to get a bank for a run's configuration (``preset``, perhaps ``+custom``)
    when the bank at hand was built with other backbone settings: the command."""
    from .config import preset_names

    presets = preset_names()

    built = (bank_config or {}).get("preset") if isinstance(bank_config, dict) else None
    base = str(preset).split("+")[0]
    flag = f" --preset {base}" if base in presets else ""
    build = (f"build a bank for these settings with 'moduseg bank build --dataset LAYOUT "
             f"--root DATA{flag} --out BANK.npz' (the same --set backbone.* options)")
    if built and built != preset:
        lead = (f"this bank was built with preset {built!r} and the run uses {preset!r}: "
                f"drop --preset/--set backbone.* to run with the bank's own settings")
        if base in EMBEDDED_BANKS and "+" not in str(preset):
            lead += f", omit --bank to use the embedded {base} bank"
        return f"{lead}, or {build}"
    return build
