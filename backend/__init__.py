"""Visual-RFT Studio back end, in four packages whose imports run one way, jobs → engine → data → scoring, with
storage/ beneath them all and ui/ above (tests/test_architecture.py keeps it so)."""
