import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a test never touches the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import toy  # noqa: E402,F401  registers the toy-* plug-ins used by the core tests
