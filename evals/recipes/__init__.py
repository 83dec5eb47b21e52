"""Controlled re-tests: recipes that fine-tune or query their own models under a fixed design.

``spec`` (the recipe TOML), ``finetune`` (LoRA SFT/DPO), ``contamination`` (planted repeats),
``selfverify`` (the generation-verification gap), ``common`` (serving, items, training), the
``analyses`` per recipe, and ``run`` (one recipe end to end). The evaluation core (``evals``)
never imports this package; :mod:`evals.dispatch` sits above both.
"""
