import os

os.environ.setdefault("INFERNO_QUIET", "1")
