"""User features: what a user runs on their own data to make training pairs, built on the stages and
used by the tools and tasks.py (never by a stage).

  noise      seeded synthetic OCR noise per script, or sampled from a fitted model (`invoke noise`)
  ocr_pairs  real OCR pairs: render clean lines, degrade them, read them with Tesseract (`invoke ocr-pairs`)
  noise_fit  a noise model fitted to real OCR pairs, sampled and compared (`invoke noise-fit`)

Layer order (tests/test_architecture.py): core ← stages ← features ← tools ← tasks.py.
"""
